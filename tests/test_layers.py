"""The import graph keeps its layers: a package imports only from itself and the layers below it (lazy
imports inside functions included), so the graph has no cycles between packages and nothing imports upwards;
inside a package no two modules import each other, directly or round a longer circle. The entry points
(`python -m mtl_robust.{train,attack,pipeline}` modules) are the only importers of `jobs/`; the report
command (`report/__main__`) is part of the report package and imports no job."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtl_robust"

# Lowest first. Top-level helper modules (files, config_*) sit below everything that uses them.
LAYERS = [
    {"values", "files", "config_location", "config_resolvers", "cpu_kernels"},
    {"attacks", "models", "tasks", "data", "mtl"},
    {"evaluation"},
    {"lightning", "report"},
    {"jobs"},
    {"planning"},
    {"train", "attack", "pipeline", "plan"},
]


def layer_of(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS in {__file__}")


def unit_of(module: str) -> str:
    """mtl_robust.attacks.pgd -> attacks; mtl_robust.train -> train (an entry point)."""
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def module_name(path: Path) -> str:
    """The dotted name of a package file; a package is named by its __init__."""
    module = ".".join(("mtl_robust", *path.relative_to(PACKAGE).with_suffix("").parts))
    return module.removesuffix(".__init__")


def absolute_module(node: ast.ImportFrom, path: Path) -> str | None:
    """The module an ImportFrom names, with `from .x import y` resolved against the importing file."""
    if node.level == 0:
        return node.module
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (module := absolute_module(node, path)):
            found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("mtl_robust.")}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package named by its __init__)."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from a.b import c` counts as a.b.c when c is a module)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (base := absolute_module(node, path)):
                names = [f"{base}.{alias.name}" for alias in node.names]
                targets.update(n for n in names if n in files)
                if not all(n in files for n in names):
                    targets.add(base)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_circle() -> None:
    found = circles(import_graph())
    assert not found, "import circles (break one edge, e.g. pass a function in):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_circles_are_found(tmp_path: Path) -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_every_import_goes_to_the_same_or_a_lower_layer() -> None:
    upward = []
    for module, path in module_files().items():
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


def test_relative_imports_resolve_against_the_importing_file() -> None:
    tree = PACKAGE / "models" / "tree.py"
    init = PACKAGE / "models" / "__init__.py"
    assert "mtl_robust.models.backbones" in imports(tree)
    assert "mtl_robust.models.heads" in imports(init)
    assert "mtl_robust.models.backbones" in import_graph()["mtl_robust.models.tree"]
