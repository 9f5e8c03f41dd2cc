"""README's library example runs as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert np.all(np.isfinite(scope["est"].noise_mean))
    assert np.isfinite(scope["loss"])


def test_ci_runs_readme_test_command():
    """.ci/run installs and tests exactly as README's second set-up command says."""
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci_script = (README.parent / ".ci" / "run").read_text()
    install, _, run_tests = test_command.rpartition(" && ")
    assert install in ci_script and run_tests in ci_script
