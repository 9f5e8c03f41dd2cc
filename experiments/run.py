"""Train the RFM agent on DeepMind Control, many seeds in one process.

    python experiments/run.py --config=experiments/configs/rfm.py:cheetah-run --config.num_seeds=5 --workdir=runs/demo
    python experiments/run.py --config=experiments/configs/rfm.py:cpu --workdir=runs/cpu      # 2-core CPU preset
    python experiments/run.py --config=... --workdir=runs/demo --resume                      # continue a killed run
    python experiments/run.py --config=experiments/configs/rfm.py:cheetah-run --dry_run        # check, build, count

Writes <workdir>/config.json, metrics/{train,eval}_seed{s}.jsonl, tb/seed_{s}/ (TensorBoard) and
checkpoints/ (orbax: params, optimiser states, replay buffers, PRNG keys, counters, env states).
Ctrl-C or SIGTERM saves a checkpoint and exits; --resume continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs/, also when this file is loaded by path
from configs.rfm import agent_kwargs  # noqa: E402

from rfm_jax.runtime import configure_xla_cpu  # noqa: E402

configure_xla_cpu()  # before jax starts its backend

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/configs/rfm.py:cheetah-run.")
flags.DEFINE_string("workdir", None, "Output directory (not needed with --dry_run).")
flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its last checkpoint.")
flags.DEFINE_integer("stop_after", None, "End this session (with a checkpoint) at this env step (absolute).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("dry_run", False, "Validate the config, build the agent, print parameter counts and the update's "
                  "GMAC, and exit before training.")
flags.mark_flags_as_required(["config"])

RESUMABLE_CHANGES = ("total_steps",)  # fields that may differ between a run and its resume


def _positive(errors, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(f"config.{name} must be an integer >= {minimum}, got {value!r}")


def validate(config) -> list[str]:
    """Every problem of ``config``, named by field; checked before anything is compiled."""
    from rfm_jax.agents.rfm import CONTROL_VARIATES, DIFFUSION_SCHEDULES, POLICIES, PROPOSALS
    from rfm_jax.envs import TASKS
    from rfm_jax.loop import EVAL_MODES
    from rfm_jax.networks import BLOCKS

    errors = []
    if config.task not in TASKS:
        errors.append(f"config.task {config.task!r} is not a DMC task. Valid names: {', '.join(TASKS)}")
    for name in ("num_seeds", "num_envs", "total_steps", "batch_size", "replay_capacity", "updates_per_step",
                 "eval_every", "eval_episodes", "log_every", "checkpoint_every"):
        _positive(errors, name, config[name])
    _positive(errors, "seed", config.seed, 0)
    _positive(errors, "warmup_steps", config.warmup_steps, 1)  # the first update needs a stored transition
    a, h = config.agent, config.hyper
    min_particles = 2 if str(a.control_variate).startswith("optimal") else 1
    _positive(errors, "agent.num_posterior_particles", a.num_posterior_particles, min_particles)
    for name in ("num_train_particles", "num_data_particles", "num_eval_particles", "num_ode_steps", "actor_width",
                 "actor_blocks", "actor_embed_dim", "num_critics"):
        _positive(errors, f"agent.{name}", a[name])
    if isinstance(a.actor_embed_dim, int) and (a.actor_embed_dim % 2 or a.actor_embed_dim < 4):
        errors.append(f"config.agent.actor_embed_dim must be even and >= 4, got {a.actor_embed_dim}")
    for name in ("particle_batch", "sample_chunk"):
        if a[name] is not None:
            _positive(errors, f"agent.{name}", a[name], 0)
    for name, value, allowed in (("policy", a.policy, POLICIES), ("proposal", a.proposal, PROPOSALS),
                                 ("actor_block", a.actor_block, BLOCKS), ("eval_mode", config.eval_mode, EVAL_MODES),
                                 ("diffusion_schedule", a.diffusion_schedule, DIFFUSION_SCHEDULES),
                                 ("control_variate", a.control_variate, CONTROL_VARIATES),
                                 ("coef_space", a.coef_space, ("data", "noise"))):
        if value not in allowed:
            field = name if name == "eval_mode" else f"agent.{name}"
            errors.append(f"config.{field} must be one of {allowed}, got {value!r}")
    if not all(isinstance(w, int) and w > 0 for w in a.critic_hidden):
        errors.append(f"config.agent.critic_hidden must be positive integers, got {a.critic_hidden!r}")
    if not 0 < a.t_min < 0.5:
        errors.append(f"config.agent.t_min must lie in (0, 0.5), got {a.t_min}")
    for name in ("actor_lr", "critic_lr", "grad_clip"):
        if not a[name] > 0:
            errors.append(f"config.agent.{name} must be > 0, got {a[name]}")
    if not h.temperature > 0:
        errors.append(f"config.hyper.temperature must be > 0, got {h.temperature}")
    if h.temperature_final is not None and not h.temperature_final > 0:
        errors.append(f"config.hyper.temperature_final must be > 0 (or None: constant), got {h.temperature_final}")
    if not h.temperature_steps > 0:
        errors.append(f"config.hyper.temperature_steps must be > 0, got {h.temperature_steps}")
    if not 0 <= h.gamma <= 1:
        errors.append(f"config.hyper.gamma must lie in [0, 1], got {h.gamma}")
    if not 0 < h.tau <= 1:
        errors.append(f"config.hyper.tau must lie in (0, 1], got {h.tau}")
    if not (h.ridge >= 0 and h.clip > 0):
        errors.append(f"config.hyper.ridge must be >= 0 and config.hyper.clip > 0, got {h.ridge}, {h.clip}")
    if isinstance(config.batch_size, int) and isinstance(config.replay_capacity, int):
        if config.batch_size > config.replay_capacity:
            errors.append(f"config.batch_size ({config.batch_size}) exceeds config.replay_capacity "
                          f"({config.replay_capacity})")
        if config.num_envs > config.replay_capacity:
            errors.append(f"config.num_envs ({config.num_envs}) exceeds config.replay_capacity")
    return errors


def _latest_checkpoint(workdir: str) -> int | None:
    """Step of the newest complete checkpoint in ``workdir`` (orbax writes each one atomically)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return None
    steps = [int(d) for d in os.listdir(directory)
             if d.isdigit() and os.path.exists(os.path.join(directory, d, "_CHECKPOINT_METADATA"))]
    return max(steps, default=None)


def _check_resume(workdir: str, config) -> None:
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    current = json.loads(config.to_json())
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)
               and k not in RESUMABLE_CHANGES]
    if changed:
        raise app.UsageError(f"--resume: config fields differ from {workdir}/config.json: {', '.join(changed)}")


class Progress:
    """tqdm bar: env steps per env, steps/s, the latest mean eval return over seeds."""

    def __init__(self, start: int, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        self.last = 0.0

    def __call__(self, step, total, info):
        self.bar.update(step - self.bar.n)
        if time.time() - self.last > 1.0 or step == total:
            evals = [e for e in info["eval"] if e is not None and not math.isnan(e)]
            self.bar.set_postfix(eval=f"{sum(evals) / len(evals):.1f}" if evals else "-",
                                 phase="warmup" if info["warmup"] else "train", refresh=False)
            self.last = time.time()

    def close(self):
        self.bar.close()


def dry_run(config) -> None:
    """Build the agent of ``config``, print its networks' parameter counts and the update's GMAC."""
    import jax

    from rfm_jax import envs
    from rfm_jax.agents.rfm import RFMHyper, make_rfm
    from rfm_jax.cost import update_macs
    from rfm_jax.networks import param_count

    spec = envs.spec(config.task)
    kwargs = agent_kwargs(config)
    agent = make_rfm(obs_dim=spec.obs_dim, action_dim=spec.action_dim, **kwargs)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(config.seed), RFMHyper(**dict(config.hyper)))
    counts = {"actor": param_count(state.actor_params), "critics": param_count(state.critic_params)}
    macs = update_macs(obs_dim=spec.obs_dim, action_dim=spec.action_dim, batch_size=config.batch_size, **kwargs)
    print(f"{config.task}: obs {spec.obs_dim}, action {spec.action_dim}, backend {jax.default_backend()}")
    print(f"parameters: actor {counts['actor']:,}, critics {counts['critics']:,} "
          f"({config.agent.num_critics} x {counts['critics'] // config.agent.num_critics:,})")
    print(f"update: {macs['total'] / 1e9:.2f} GMAC ("
          + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in macs.items() if k not in ("total", "act"))
          + f"); one training action: {macs['act'] / 1e9:.4f} GMAC")
    print(json.dumps({"task": config.task, "params": counts, "gmac": {k: v / 1e9 for k, v in macs.items()}}))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    config, workdir = FLAGS.config, FLAGS.workdir
    errors = validate(config)
    if errors:
        raise app.UsageError("Invalid config:\n  " + "\n  ".join(errors))
    if FLAGS.dry_run:
        dry_run(config)
        return
    if workdir is None:
        raise app.UsageError("--workdir is required (except with --dry_run)")
    has_run = _latest_checkpoint(workdir) is not None
    if FLAGS.resume and not has_run:
        raise app.UsageError(f"--resume: no checkpoints in {workdir}")
    if has_run and not FLAGS.resume:
        raise app.UsageError(f"{workdir} already holds a run: pass --resume to continue it, or another --workdir")
    if FLAGS.resume:
        _check_resume(workdir, config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))

    from rfm_jax.agents.rfm import RFMHyper
    from rfm_jax.loop import train

    seeds = [config.seed + i for i in range(config.num_seeds)]
    start = _latest_checkpoint(workdir) if FLAGS.resume else 0
    progress = Progress(start, config.total_steps) if FLAGS.progress else None
    print(f"Training {config.task} with seeds {seeds} into {workdir}", flush=True)
    summary = train(
        task=config.task, seeds=seeds, workdir=workdir, agent_kwargs=agent_kwargs(config),
        hyper=RFMHyper(**dict(config.hyper)),
        num_envs=config.num_envs, total_steps=config.total_steps, warmup_steps=config.warmup_steps,
        batch_size=config.batch_size, replay_capacity=config.replay_capacity, updates_per_step=config.updates_per_step,
        eval_every=config.eval_every, eval_episodes=config.eval_episodes, eval_mode=config.eval_mode,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, resume=FLAGS.resume, stop_after=FLAGS.stop_after, progress=progress,
    )
    if progress is not None:
        progress.close()
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(main)
