"""Agents: pure init / act / update functions."""

from rfm_jax.agents.rfm import RFMAgent, RFMHyper, RFMState, make_rfm

__all__ = ["RFMAgent", "RFMHyper", "RFMState", "make_rfm"]
