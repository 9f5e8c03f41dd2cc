"""The package's layers (README, docs/guide.md#modules): each module imports only the layers it may
(read from its source's import statements; imports under ``TYPE_CHECKING`` are annotations only).
No module imports the package itself (``import rfm_jax`` runs its ``__init__``, which imports every
layer).  The method layer imports no speed device."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rfm_jax"
# layer -> the layers its modules may import (besides their own)
ALLOWED = {
    "method": set(),
    "_speed": set(),
    "networks": {"method", "_speed"},
    "agents": {"method", "networks", "_speed"},
    "infra": {"_speed"},  # runtime registers the threefry lowering
    "envs": set(),
    "training": {"method", "networks", "agents", "infra", "envs", "_speed"},
}
ALIASES = {"losses": "method", "estimators": "method", "schedules": "method"}  # rfm_jax.losses etc.


def _layer(module: str) -> str | None:
    """The layer of an imported module; "rfm_jax" for the package itself (``import rfm_jax``)."""
    parts = module.split(".")
    if parts[0] != "rfm_jax":
        return None
    return "rfm_jax" if len(parts) < 2 else ALIASES.get(parts[1], parts[1])


def _imports(path: pathlib.Path) -> list[str]:
    """Modules imported by ``path`` at run time (``from rfm_jax import x`` counts as rfm_jax.x)."""
    tree = ast.parse(path.read_text())
    skip = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
            and getattr(stmt.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [f"{node.module}.{a.name}" if node.module == "rfm_jax" else node.module for a in node.names]
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_below_it(path):
    layer = path.relative_to(PACKAGE).parts[0]
    imported = {_layer(m) for m in _imports(path)} - {None, layer}
    assert imported <= ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {sorted(imported - ALLOWED[layer])}"


def test_the_method_layer_imports_no_speed_device():
    for path in sorted((PACKAGE / "method").glob("*.py")):
        assert not [m for m in _imports(path) if m.startswith("rfm_jax._speed")], path.name


def test_the_layer_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from rfm_jax._speed import normal_rows\nfrom rfm_jax import replay\n"
                   "def version():\n    import rfm_jax\n    return rfm_jax.__version__\n")
    assert {_layer(m) for m in _imports(bad)} == {"_speed", "replay", "rfm_jax"}
    assert not any({"rfm_jax"} <= allowed for allowed in ALLOWED.values())
