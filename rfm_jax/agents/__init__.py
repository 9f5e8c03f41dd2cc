"""Agents: one file per agent (``rfm_jax/agents/<name>.py``), each defining its settings and hyper
dataclasses, a factory ``make_<name>(*, obs_dim, action_dim, **settings) -> Agent`` and
``SPECS``, the ``base.AgentSpec`` of each name it registers.  The registry finds every such file:
a new agent needs no edit here, and the loop, the scripts, the configs and the tests name agents
by string only.

    agent = make_agent("sac", obs_dim=5, action_dim=1, critic_hidden=(64, 64))
    state = agent.init(key, agent.hyper.replace(gamma=0.98))
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from rfm_jax.agents import base, particles
from rfm_jax.agents.base import Agent, AgentSpec


def _discover() -> dict[str, AgentSpec]:
    specs = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in ("base", "particles"):
            continue
        for spec in getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPECS", ()):
            if spec.name in specs:
                raise ValueError(f"rfm_jax.agents: two agents are called {spec.name!r}.")
            specs[spec.name] = spec
    return specs


SPECS: dict[str, AgentSpec] = _discover()
REGISTRY = SPECS  # name -> AgentSpec (the old name of this table)


def make_agent(name: str, *, obs_dim: int, action_dim: int, **settings) -> Agent:
    """The registered agent ``name`` built with ``settings`` over its defaults (checked there)."""
    if name not in SPECS:
        raise ValueError(f"make_agent: unknown agent {name!r}; registered: {', '.join(sorted(SPECS))}.")
    return base.make(SPECS[name], obs_dim=obs_dim, action_dim=action_dim, **settings)


def config_kwargs(agent_config) -> dict:
    """The factory's settings from a config's ``agent`` section (a mapping of settings fields):
    sequences become tuples; a renamed field (``base.RENAMED``) set by its old name replaces the new
    one, with a DeprecationWarning, and is dropped when unset."""
    kwargs = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in dict(agent_config).items()}
    for old, new in base.RENAMED.items():
        value = kwargs.pop(old, None)
        if value is not None:
            warnings.warn(f"config.agent.{old} is renamed config.agent.{new} (0.2.0); the old name goes in the next "
                          "release.", DeprecationWarning, stacklevel=2)
            kwargs[new] = value
    return kwargs


from rfm_jax.agents.dqs import make_dqs  # noqa: E402
from rfm_jax.agents.qne import make_qne  # noqa: E402
from rfm_jax.agents.qsm import QSMHyper, QSMSettings, make_qsm  # noqa: E402
from rfm_jax.agents.qvpo import QVPOHyper, QVPOSettings, make_qvpo  # noqa: E402
from rfm_jax.agents.rfm import RFMHyper, RFMSettings, current_temperature, make_rfm  # noqa: E402
from rfm_jax.agents.sac import SACHyper, SACSettings, SACState, make_sac  # noqa: E402

ParticleState = particles.ParticleState
RFMState = ParticleState  # the old name (0.2.0), removed in the next release

__all__ = ["REGISTRY", "SPECS", "Agent", "AgentSpec", "ParticleState", "QSMHyper", "QSMSettings", "QVPOHyper",
           "QVPOSettings", "RFMHyper", "RFMSettings", "RFMState", "SACHyper", "SACSettings", "SACState", "base",
           "config_kwargs", "current_temperature", "make_agent", "make_dqs", "make_qne", "make_qsm", "make_qvpo",
           "make_rfm", "make_sac", "particles"]
