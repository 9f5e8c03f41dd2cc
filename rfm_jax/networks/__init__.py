"""Networks (flax linen), each acting on one example: ``PolicyNet`` (the flow velocity, or the
diffusion epsilon / score network, of every particle agent), ``CriticEnsemble`` (K critics) and
SAC's ``TanhGaussianActor``.  ``VelocityNet`` is ``PolicyNet``'s old name, kept for one release."""

from rfm_jax.networks.critic import CriticEnsemble
from rfm_jax.networks.init import orthogonal, param_count, stacked
from rfm_jax.networks.policy import (
    BLOCKS,
    MLP,
    PolicyNet,
    TanhGaussianActor,
    sinusoidal_embedding,
    tanh_gaussian_sample,
)

VelocityNet = PolicyNet  # deprecated name (0.2.0), removed in the next release

__all__ = ["BLOCKS", "MLP", "CriticEnsemble", "PolicyNet", "TanhGaussianActor", "VelocityNet", "orthogonal",
           "param_count", "sinusoidal_embedding", "stacked", "tanh_gaussian_sample"]
