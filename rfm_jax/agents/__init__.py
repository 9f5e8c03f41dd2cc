"""Agents: one file per agent, each a factory ``make_<name>(*, obs_dim, action_dim, **static) ->
Agent`` (``base.Agent``: pure init / act / update and the default hyperparameters), and a
registry so that the training loop, the scripts and the configs name agents by string only.

    agent = make_agent("sac", obs_dim=5, action_dim=1, critic_hidden=(64, 64))
    state = agent.init(key, agent.hyper.replace(gamma=0.98))
"""

from rfm_jax.agents import base, dqs, qne, qsm, qvpo, rfm, sac
from rfm_jax.agents.base import Agent
from rfm_jax.agents.dqs import make_dqs
from rfm_jax.agents.qne import make_qne
from rfm_jax.agents.qsm import QSMHyper, make_qsm
from rfm_jax.agents.qvpo import QVPOHyper, make_qvpo
from rfm_jax.agents.rfm import RFMHyper, RFMState, current_temperature, make_rfm
from rfm_jax.agents.sac import SACHyper, SACState, make_sac

REGISTRY = {"dqs": make_dqs, "qne": make_qne, "qsm": make_qsm, "qvpo": make_qvpo, "rfm": make_rfm, "sac": sac.make_sac}


def make_agent(name: str, **kwargs) -> Agent:
    """The registered agent ``name`` built with ``kwargs`` (its factory checks them)."""
    if name not in REGISTRY:
        raise ValueError(f"make_agent: unknown agent {name!r}; registered: {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name](**kwargs)


def config_kwargs(agent_config) -> dict:
    """The factory's keyword arguments from a config's ``agent`` section (a mapping of the agent's
    settings fields): sequences become tuples, everything else is passed as it is."""
    return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in dict(agent_config).items()}


__all__ = ["REGISTRY", "Agent", "QSMHyper", "QVPOHyper", "RFMHyper", "RFMState", "SACHyper", "SACState", "base",
           "config_kwargs", "current_temperature", "dqs", "make_agent", "make_dqs", "make_qne", "make_qsm", "make_qvpo", "make_rfm",
           "make_sac", "qne", "qsm", "qvpo", "rfm", "sac"]
