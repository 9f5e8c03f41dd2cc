"""RFM agent configs.  ``--config=experiments/configs/rfm.py:ARG`` where ARG is

    TASK            the reference defaults (docs/method.md section 7) on a DMC task, e.g. cheetah-run
    cpu[,TASK]      a small preset that learns cartpole-swingup on a 2-core CPU
    smoke[,TASK]    a tiny preset for tests (a few hundred steps)

Any field can be overridden, e.g. ``--config.num_seeds=5 --config.agent.policy=diffusion``, and
hyper fields swept in one program, e.g. ``--config.sweep.temperature=0.01,0.02,0.05``.
"""

from configs import common
from ml_collections import config_dict


def reference(task: str = "cheetah-run") -> config_dict.ConfigDict:
    c = common.protocol(task)
    c.algo = "rfm"  # agent in rfm_jax.agents.REGISTRY
    c.agent = config_dict.ConfigDict()
    c.agent.policy = "flow"  # flow (linear path, velocity, Euler) or diffusion (VP path, epsilon, DDIM)
    c.agent.diffusion_schedule = "cosine"  # diffusion path: cosine (VP), vp (linear beta 0.1-20), ve (sigma 1 to 1e-5)
    c.agent.proposal = "on_policy"  # endpoints: on_policy (Boltzmann-resampled samples) or replay (buffer actions)
    c.agent.control_variate = "optimal"  # optimal | optimal_isotropic | none (eta=0, QNE) | fixed (eta=hyper.eta)
    c.agent.coef_space = "data"  # where the optimal coefficient is fitted and clipped: data (reference) or noise
    c.agent.num_posterior_particles = 100  # particles of the posterior-mean estimator
    c.agent.num_train_particles = 32  # policy samples per state in the update (on-policy proposal and a')
    c.agent.num_data_particles = 32  # policy samples per state when acting during training (Boltzmann-resampled)
    c.agent.num_eval_particles = 32  # policy samples per state when evaluating (argmax-Q)
    c.agent.num_ode_steps = 10  # sampler steps from t_min to 1 - t_min
    c.agent.t_min = 0.01  # t is kept in [t_min, 1 - t_min]
    c.agent.actor_width = 256  # width of the velocity / noise network
    c.agent.actor_blocks = 2  # residual blocks in that network
    c.agent.actor_block = "reference"  # reference: h + GELU(Dense h); prenorm: h + Dense GELU Dense LayerNorm h
    c.agent.actor_embed_dim = 128  # sinusoidal embedding size of t and of lambda (each)
    c.agent.critic_hidden = (256, 256)  # hidden sizes of each critic MLP
    c.agent.num_critics = 2  # critics in the ensemble (the TD target and log p1 use their min)
    c.agent.actor_lr = 3e-4  # Adam learning rate of the policy network
    c.agent.critic_lr = 1e-3  # Adam learning rate of the critics
    c.agent.grad_clip = config_dict.FieldReference(10.0, field_type=object)  # global-norm clip of the actor's and
    # of each critic's gradient, each on its own; none (or inf): no clip.  The authors' run.sh clips at 10.
    c.agent.x1_bound = config_dict.placeholder(float)  # diffusion: clip of the DDIM's clean latent; None: none
    c.agent.particle_batch = config_dict.placeholder(int)  # posterior particles per lax.map chunk; 0: vmap; None: auto
    c.agent.sample_chunk = config_dict.placeholder(int)  # sampler states per lax.map chunk; 0: vmap; None: auto

    c.hyper = config_dict.ConfigDict()
    c.hyper.temperature = 0.02  # lambda of the Boltzmann target exp(Q / lambda) at the first update
    c.hyper.temperature_final = config_dict.placeholder(float)  # lambda after temperature_steps updates; None: constant
    c.hyper.temperature_steps = 250_000  # updates over which lambda moves from temperature to temperature_final
    c.hyper.gamma = 0.99  # discount
    c.hyper.tau = 0.005  # Polyak rate of the target critics
    c.hyper.ridge = 1e-4  # ridge of the optimal coefficient
    c.hyper.clip = 2.0  # bound on |coefficient| of the optimal modes (inf: none)
    c.hyper.eta = 0.0  # coefficient of control_variate=fixed (0: QNE, 1: DQS)
    return common.add_sweep(c)


# Overrides of the reference config (flattened field names).  cpu: learns cartpole-swingup on a
# 2-core CPU (about 7 ms per seed-step at one seed).  smoke: tiny networks and a few hundred steps, for tests.
CPU = {
    "num_seeds": 3, "total_steps": 40_000, "warmup_steps": 5_000, "batch_size": 128, "replay_capacity": 50_000,
    "eval_every": 5_000, "eval_episodes": 5, "checkpoint_every": 5_000,
    "agent.num_posterior_particles": 16, "agent.num_train_particles": 8,
    "agent.num_data_particles": 8, "agent.num_eval_particles": 8, "agent.num_ode_steps": 5,
    "agent.actor_width": 128, "agent.critic_hidden": (64, 64),
}
SMOKE = {
    **CPU, "num_seeds": 2, "total_steps": 300, "warmup_steps": 100, "batch_size": 16, "replay_capacity": 1_000,
    "eval_every": 150, "eval_episodes": 1, "log_every": 50, "checkpoint_every": 100,
    "agent.num_posterior_particles": 4, "agent.num_train_particles": 4,
    "agent.num_data_particles": 3, "agent.num_eval_particles": 4, "agent.num_ode_steps": 2,
    "agent.actor_width": 16, "agent.actor_blocks": 1, "agent.actor_embed_dim": 8, "agent.critic_hidden": (16, 16),
}


cpu = common.preset(reference, CPU)
smoke = common.preset(reference, SMOKE)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return common.choose(arg, {"reference": reference, "cpu": cpu, "smoke": smoke})


def agent_kwargs(config) -> dict:
    """``make_rfm`` keyword arguments of ``config.agent`` (a chunk of 0 means None, unset "auto")."""
    kwargs = dict(config.agent)
    kwargs["critic_hidden"] = tuple(kwargs["critic_hidden"])
    return kwargs
