"""README's library example runs as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert np.all(np.isfinite(scope["est"].noise_mean))
    assert np.isfinite(scope["loss"])


def test_readme_agent_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README has no agent example"
    scope: dict = {}
    exec(compile(blocks[1], "README.md", "exec"), scope)
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
