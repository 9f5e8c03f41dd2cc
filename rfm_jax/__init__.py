"""rfm_jax: Reverse Flow Matching for online RL with flow and diffusion policies, in JAX."""

from rfm_jax import agents, cost, estimators, losses, min_critic, networks, replay, schedules, sweeps, train
from rfm_jax.estimators import (
    PosteriorEstimate,
    Source,
    boltzmann_log_prob,
    posterior_mean,
    standard_normal,
    tanh_boltzmann_log_prob,
)
from rfm_jax.schedules import Schedule

__version__ = "0.1.0"

__all__ = [
    "PosteriorEstimate",
    "agents",
    "cost",
    "min_critic",
    "networks",
    "replay",
    "train",
    "Schedule",
    "Source",
    "boltzmann_log_prob",
    "estimators",
    "losses",
    "posterior_mean",
    "schedules",
    "sweeps",
    "standard_normal",
    "tanh_boltzmann_log_prob",
]
