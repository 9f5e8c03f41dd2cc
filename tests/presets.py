"""Agent settings for the tests, read from each agent's preset file (``experiments/configs/<name>.py``):
the tests discover agents from ``rfm_jax.agents.SPECS`` and take their sizes from there, so a new
agent needs no table here."""

import importlib
import os
import sys

from rfm_jax.agents import config_kwargs

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
if EXPERIMENTS not in sys.path:
    sys.path.insert(0, EXPERIMENTS)


def preset_file(name: str):
    """The preset module ``configs.<name>`` of a registered agent."""
    return importlib.import_module(f"configs.{name}")


def settings(name: str, preset: str = "smoke") -> dict:
    """The factory settings of agent ``name``'s ``preset`` config."""
    return config_kwargs(preset_file(name).get_config(preset).agent)


def probe(name: str) -> tuple[dict, dict, float]:
    """(settings, hyper overrides, tolerance) of agent ``name`` on tests/agents/test_probe.py's bandit:
    its preset file's ``PROBE`` overrides (``agent.`` and ``hyper.`` fields) and ``PROBE_TOLERANCE``."""
    module = preset_file(name)
    static = {k.split(".", 1)[1]: v for k, v in module.PROBE.items() if k.startswith("agent.")}
    hyper = {k.split(".", 1)[1]: v for k, v in module.PROBE.items() if k.startswith("hyper.")}
    return static, hyper, module.PROBE_TOLERANCE
