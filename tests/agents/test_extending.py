"""Extending rfm_jax: a new agent is one agent file plus one preset file.  The test copies the
package, the experiments and the agent tests into a temporary tree, adds exactly
``rfm_jax/agents/toy.py`` and ``experiments/configs/toy.py`` (``tests/toy/``), and there the
registry finds the agent, the agent and probe tests train it, and experiments/run.py runs it, with
no other file changed.  Also: the configs and the factories agree on every default."""

import os
import shutil
import subprocess
import sys
import warnings

import presets
import pytest

from rfm_jax.agents import SPECS, config_kwargs, make_agent

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IGNORE = shutil.ignore_patterns("__pycache__", "results", "*.pyc")


def _copy_tree(dest) -> None:
    shutil.copytree(os.path.join(ROOT, "rfm_jax"), dest / "rfm_jax", ignore=IGNORE)
    shutil.copytree(os.path.join(ROOT, "experiments"), dest / "experiments", ignore=IGNORE)
    (dest / "tests" / "agents").mkdir(parents=True)
    for name in ("conftest.py", "presets.py", "agents/test_agents.py", "agents/test_probe.py"):
        shutil.copy(os.path.join(ROOT, "tests", name), dest / "tests" / name)
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), dest / "pyproject.toml")


def test_a_new_agent_is_one_agent_file_and_one_preset_file(tmp_path):
    tree = tmp_path / "tree"
    _copy_tree(tree)
    before = {p.relative_to(tree) for p in tree.rglob("*") if p.is_file()}
    shutil.copy(os.path.join(ROOT, "tests", "toy", "toy.py"), tree / "rfm_jax" / "agents" / "toy.py")
    shutil.copy(os.path.join(ROOT, "tests", "toy", "toy_preset.py"), tree / "experiments" / "configs" / "toy.py")
    added = {p.relative_to(tree) for p in tree.rglob("*") if p.is_file()} - before
    assert {str(p) for p in added} == {"rfm_jax/agents/toy.py", "experiments/configs/toy.py"}

    env = {**os.environ, "PYTHONPATH": str(tree), "MUJOCO_GL": "disable"}
    env.pop("RFM_JAX_TESTS_OWN_CACHE", None)
    found = subprocess.run([sys.executable, "-c", "import rfm_jax.agents as a; print(a.__file__, sorted(a.SPECS))"],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.startswith(str(tree)) and "'toy'" in found.stdout, found.stdout

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/agents/test_agents.py", "tests/agents/test_probe.py", "-k", "toy or preset_file"],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "4 passed" in tests.stdout, tests.stdout[-1000:]  # agents, preset files, probe, probe on plain JAX

    run = subprocess.run([sys.executable, "experiments/run.py", "--config=experiments/configs/toy.py:smoke",
                          "--config.total_steps=200", f"--workdir={tmp_path / 'run'}", "--noprogress"],
                         cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "metrics" / "eval_seed0.jsonl").exists()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_reference_config_holds_the_factory_defaults(name):
    """The reference config (generated from the agent's dataclasses) builds the agent the factory
    builds with no settings at all, with the same hyper defaults, except the preset file's
    ``PAPER`` fields (RFM: the authors' fixed lambda and estimator); the cpu preset keeps those
    defaults."""
    module = presets.preset_file(name)
    paper = getattr(module, "PAPER", {})
    config = module.get_config("cheetah-run")
    mismatches = _disagreements(name, config)
    assert sorted(m.split(":")[0] for m in mismatches) == sorted(paper), mismatches
    assert all(config[k.split(".")[0]][k.split(".")[1]] == v for k, v in paper.items())
    cpu = module.get_config("cpu")
    assert all(getattr(cpu.agent, k.split(".")[1]) != v for k, v in paper.items())


def test_a_config_default_that_disagrees_with_the_factory_is_caught():
    config = presets.preset_file("rfm").get_config("cheetah-run")
    config.agent.actor_width = 255
    config.hyper.tau = 0.01
    found = _disagreements("rfm", config)
    assert "agent.actor_width: 255 != 256" in found and "hyper.tau: 0.01 != 0.005" in found and len(found) == 4


def _disagreements(name: str, config) -> list[str]:
    from_config = make_agent(name, obs_dim=3, action_dim=2, **config_kwargs(config.agent))
    default = make_agent(name, obs_dim=3, action_dim=2)
    out = [f"agent.{k}: {getattr(from_config.settings, k)} != {v}" for k, v in vars(default.settings).items()
           if getattr(from_config.settings, k) != v]
    return out + [f"hyper.{k}: {v} != {getattr(default.hyper, k)}" for k, v in config.hyper.items()
                  if v != getattr(default.hyper, k)]


def test_a_renamed_setting_still_works_for_one_release_with_a_warning():
    config = presets.preset_file("rfm").get_config("smoke")
    config.agent.num_data_particles = 5  # the 0.1 name of num_act_particles (--config.agent.num_data_particles=5)
    with pytest.warns(DeprecationWarning, match="config.agent.num_data_particles is renamed"):
        kwargs = config_kwargs(config.agent)
    assert kwargs["num_act_particles"] == 5 and "num_data_particles" not in kwargs
    with pytest.warns(DeprecationWarning, match="`num_data_particles` is renamed `num_act_particles`"):
        agent = make_agent("rfm", obs_dim=3, action_dim=2, num_data_particles=4)
    assert agent.settings.num_act_particles == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smoke = presets.preset_file("rfm").get_config("smoke")
        make_agent("rfm", obs_dim=3, action_dim=2, **config_kwargs(smoke.agent))
    with pytest.raises(ValueError, match="^make_rfm: unknown setting `actor_wdth`; settings: num_eval_particles, "):
        make_agent("rfm", obs_dim=3, action_dim=2, actor_wdth=8)
