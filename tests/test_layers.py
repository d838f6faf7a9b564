"""The import graph keeps its layers: a package imports only from itself and the layers below it (lazy
imports inside functions included), so the graph has no cycles between packages and nothing imports upwards.
The entry points (`python -m mtl_robust.<job>` modules) are the only importers of `jobs/`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtl_robust"

# Lowest first. Top-level helper modules (files, config_*) sit below everything that uses them.
LAYERS = [
    {"values", "files", "config_location", "config_resolvers"},
    {"attacks", "models", "tasks", "data"},
    {"evaluation"},
    {"lightning", "report"},
    {"jobs"},
    {"planning"},
    {"train", "attack", "pipeline", "plan", "report.__main__"},
]


def layer_of(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS in {__file__}")


def unit_of(module: str) -> str:
    """mtl_robust.attacks.pgd -> attacks; mtl_robust.report.__main__ -> report.__main__ (an entry point)."""
    parts = module.split(".")[1:]
    if parts[-1:] == ["__main__"]:
        return ".".join(parts)
    return parts[0] if parts else ""


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("mtl_robust.")}


def test_every_import_goes_to_the_same_or_a_lower_layer() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("mtl_robust", *path.relative_to(PACKAGE).with_suffix("").parts))
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        if module == "mtl_robust":
            continue
        source = unit_of(module)
        for target in imports(path):
            if unit_of(target) != source and layer_of(unit_of(target)) >= layer_of(source):
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that go sideways or upwards:\n" + "\n".join(upward)


def test_lazy_imports_inside_functions_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from mtl_robust.jobs.attack import main\n    import mtl_robust.report.figures\n"
    )
    assert imports(module) == {"mtl_robust.jobs.attack", "mtl_robust.report.figures"}
    assert layer_of(unit_of("mtl_robust.jobs.attack")) > layer_of(unit_of("mtl_robust.evaluation.store"))
