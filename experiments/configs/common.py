"""What every agent's config shares: the run protocol (task, seeds, steps, evaluation, logging),
``sweep`` (hyperparameter values run as one program) and the preset mechanics.  Each
``configs/<algo>.py`` adds ``algo``, ``agent`` (static: shapes, counts, modes, learning rates) and
``hyper`` (sweepable leaves) and defines ``get_config`` and ``agent_kwargs``.
"""

from ml_collections import config_dict


def protocol(task: str) -> config_dict.ConfigDict:
    """The run fields of every agent at the reference protocol (docs/method.md sections 7 and 9)."""
    c = config_dict.ConfigDict()
    c.task = task  # DMC task, domain-task (e.g. cheetah-run, finger-turn_hard)
    c.seed = 0  # seeds are seed, seed + 1, ..., seed + num_seeds - 1
    c.num_seeds = 1  # seeds trained at once (vmapped in one XLA program, times the sweep's grid)
    c.num_envs = 1  # envs per run; each step adds num_envs transitions and runs updates_per_step updates
    c.total_steps = 250_000  # env steps per env (= frames, action repeat 1)
    c.warmup_steps = 10_000  # uniform random actions and no updates before this step
    c.batch_size = 256  # transitions per update
    c.replay_capacity = 250_000  # replay buffer slots per run
    c.updates_per_step = 1  # updates per call (per env step)
    c.eval_every = 10_000  # env steps between evaluations (the first is at step 0)
    c.eval_episodes = 25  # evaluation episodes per run (the agent's greedy action) at step 0 and after
    c.eval_mode = "fixed"  # fixed: the same initial states and policy noise at every evaluation; fresh: new ones
    c.log_every = 1_000  # env steps between training-metric rows
    c.video = False  # film each run's first evaluation episode to <workdir>/videos/<run>/step<N>.mp4 (headless)
    c.checkpoint_every = 10_000  # env steps between checkpoints (one is also saved at the end and on SIGINT/SIGTERM)
    return c


def add_sweep(c: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """``c.sweep.<field>``: comma-separated values of a hyper field, e.g. 0.01,0.02,0.05; every
    run of the grid (seeds x values) trains in one program.  Static (agent) fields have an entry
    too, so that a sweep of one is refused with the field's name."""
    c.sweep = config_dict.ConfigDict()
    for field in (*c.hyper.keys(), *c.agent.keys()):
        c.sweep[field] = config_dict.placeholder(str)  # comma-separated values; None: not swept
    return c


def sweep_values(config) -> dict:
    """{field: [float, ...]} of the fields given in ``config.sweep``; a static field or a value
    that is not a number raises a one-line ValueError naming it."""
    out = {}
    for field, text in config.sweep.items():
        if text is None:
            continue
        if field in config.agent and field not in config.hyper:
            raise ValueError(f"config.sweep.{field}: `{field}` is static (a shape, count or mode: changing it "
                             f"recompiles) and cannot be swept; sweepable: {', '.join(config.hyper.keys())}")
        try:
            out[field] = [float(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"config.sweep.{field}: expected comma-separated numbers, got {text!r}") from None
    return out


def preset(builder, overrides: dict):
    """A config builder with flattened-field ``overrides`` applied on top of ``builder``."""

    def build(task: str = "cartpole-swingup") -> config_dict.ConfigDict:
        c = builder(task)
        c.update_from_flattened_dict(overrides)
        return c

    return build


def choose(arg: str | None, builders: dict) -> config_dict.ConfigDict:
    """``ARG`` of ``--config=...:ARG``: ``PRESET[,TASK]`` or a bare task (the reference preset)."""
    name, _, task = (arg or "reference").partition(",")
    if name not in builders:  # a bare task name means the reference defaults on that task
        name, task = "reference", name
    return builders[name](task) if task else builders[name]()
