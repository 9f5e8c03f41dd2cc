"""rfm_jax: Reverse Flow Matching for online RL with flow and diffusion policies, in JAX.

Layers, each importing only the ones above it:

    method     schedules, estimators, losses, the Transition: the math of one example (``rfm_jax.losses`` etc.)
    networks   the policy and critic networks (Flax linen), min over the critics with its argmin gradient
    agents     one interface (init / act / update), a shared base and one file per agent
    training   the run config, replay, the jitted step programs, the host loop, evaluation, sweeps, run
    infra      checkpoints, metrics, multi-device layout, guards, XLA set-up, cost model
    envs       the DeepMind Control Suite and Gymnasium on the host, behind one interface

``rfm_jax._speed`` holds the CPU speed devices that the networks and agents use;
``RFM_JAX_PLAIN=1`` turns each into the plain JAX operation (``rfm_jax._speed.plain()``).
"""

from rfm_jax import agents, networks
from rfm_jax.method import estimators, losses, schedules
from rfm_jax.method.estimators import (
    PosteriorEstimate,
    Source,
    boltzmann_log_prob,
    posterior_mean,
    standard_normal,
    tanh_boltzmann_log_prob,
)
from rfm_jax.method.schedules import Schedule
from rfm_jax.training import program, replay, sweeps

__version__ = "0.5.0"

__all__ = [
    "PosteriorEstimate",
    "Schedule",
    "Source",
    "agents",
    "boltzmann_log_prob",
    "estimators",
    "losses",
    "networks",
    "posterior_mean",
    "program",
    "replay",
    "schedules",
    "standard_normal",
    "sweeps",
    "tanh_boltzmann_log_prob",
]
