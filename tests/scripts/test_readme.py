"""README's examples run as written: the library example, the agent example, and the custom
Gymnasium env trained by its run.py command."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _python_block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"README has no single python block with {marker!r}"
    return blocks[0]


def test_readme_example_runs():
    scope: dict = {}
    exec(compile(_python_block("posterior_mean("), "README.md", "exec"), scope)
    assert np.all(np.isfinite(scope["est"].noise_mean))
    assert np.isfinite(scope["loss"])


def test_readme_agent_example_runs():
    scope: dict = {}
    exec(compile(_python_block("sweeps.expand("), "README.md", "exec"), scope)
    assert np.all(np.isfinite(scope["metrics"]["critic_loss"])) and scope["metrics"]["critic_loss"].shape == (3,)
    np.testing.assert_allclose(scope["states"].hyper.temperature, [0.01, 0.02, 0.05])
    assert np.all(np.abs(scope["action"]) <= 1)


def test_ci_runs_readme_test_command():
    """.ci/run installs and tests exactly as README's second set-up command says."""
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (README.parent / ".ci" / "run").read_text()
    install, _, run_tests = test_command.rpartition(" && ")
    assert install in ci_script and run_tests in ci_script


def test_readme_main_job_config_is_valid(run_script):
    """The main job's --config (and every documented run.py config) passes run.py's validation
    (``rfm_jax.training.run.validate``; ``run_script`` puts experiments/ on sys.path)."""
    import shlex

    from configs import rfm as configs

    from rfm_jax.training.run import validate
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    main = next(c for c in commands if "experiments/run.py" in c)
    args = [a for a in shlex.split(main.rpartition(" && ")[2]) if a.startswith("--config")]
    config = configs.get_config(args[0].partition(":")[2])
    assert validate(config) == []
    for arg in ("cheetah-run", "finger-turn_hard", "cpu", "smoke", "cpu,walker-walk"):
        assert validate(configs.get_config(arg)) == [], arg


def test_readme_custom_env_trains_with_its_command(tmp_path):
    """README's my_envs.py (at most 20 lines of code) saved as written, and its run.py command run
    from that directory with the smoke sizes in place of :cpu and 300 steps: it trains to the end."""
    source = _python_block("class Reach(gym.Env)")
    assert len([line for line in source.splitlines() if line.strip()]) <= 20
    (tmp_path / "my_envs.py").write_text(source)
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    (command,) = [c for c in commands if "gym:my_envs:Reach" in c]
    args = shlex.split(command.replace("\\\n", " "))
    assert args[0] == "PYTHONPATH=." and args[1:3] == ["python", "experiments/run.py"]
    root = str(README.parent)
    flags = [a.replace(":cpu,", ":smoke,").replace("experiments/configs", f"{root}/experiments/configs")
             for a in args[3:] if not a.startswith(("--workdir", "--config.total_steps"))]
    proc = subprocess.run([sys.executable, f"{root}/experiments/run.py", *flags, f"--workdir={tmp_path / 'run'}",
                           "--config.total_steps=300", "--progress=false"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": ".", "MUJOCO_GL": "disable"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"step": 300' in (tmp_path / "run" / "summary.json").read_text()
