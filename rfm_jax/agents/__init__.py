"""Agents: pure init / act / update functions."""

from rfm_jax.agents.rfm import RFMAgent, RFMHyper, RFMState, current_temperature, make_rfm

__all__ = ["RFMAgent", "RFMHyper", "RFMState", "current_temperature", "make_rfm"]
