"""The RL machinery: the device replay buffer (``replay``), the jitted per-env-step programs of
many seeds (``program``), the host loop (``loop``), its resumable state (``session``),
evaluation, sweeps, trained policies (``policy``) and a whole run from a config (``run``).

``loop``, ``policy`` and ``run`` import the environments; import them by name."""

from rfm_jax.training import program, replay, sweeps

__all__ = ["program", "replay", "sweeps"]
