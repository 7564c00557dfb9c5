"""The import graph keeps the layering that docs/architecture.md draws: no module imports from a higher
layer, no package takes part in an import cycle, and no module does either. Imports inside functions
count too: a lazy import is still a dependency, only a later one."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import cgdistill

SRC = Path(cgdistill.__file__).parent

# Top to bottom; a unit may import its own layer and those below (docs/architecture.md, the diagram).
LAYERS = (
    {"cli/", "__main__"},
    {"demo"},
    {"train/"},
    {"translate", "compare_command", "web/"},
    {"compare", "report", "plots", "fid_inception"},
    {"imagefiles", "video", "worklist"},
    {"policy"},
    {"engines", "tiling/", "testset", "cost", "export", "videoio", "flicker"},
    {"forward", "compiled"},
    {"runs", "official", "layouts/", "onnxfile", "data/", "device", "threads", "paths", "weights", "metrics",
     "losses", "runlock", "processes"},
    {"nets/", "metadata", "fsutil", "errors", "options", "sizes", "__init__"},
)  # fmt: skip
PACKAGES = ("cli", "train", "data", "nets", "layouts", "tiling", "web")


def unit(module: str) -> str:
    """``cgdistill.train.loop`` -> ``train/``; ``cgdistill.paths`` -> ``paths``; the package itself -> ``__init__``."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    return f"{parts[0]}/" if parts[0] in PACKAGES else parts[0]


def module_graph() -> dict[str, set[str]]:
    """Module (``cgdistill.train.loop``; a package by its name) -> the modules it imports, anywhere in its file.

    ``from cgdistill.pkg import name`` imports the submodule ``cgdistill.pkg.name`` when there is one,
    else the package; ``from cgdistill import x`` likewise.
    """
    modules = {_module_name(path) for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        source = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cgdistill"):
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("cgdistill")]
            else:
                continue
            graph[source].update(name for name in names if name != source and name in modules)
    return graph


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Unit -> the other units it imports (anywhere in its files)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, targets in module_graph().items():
        graph[unit(source)].update(unit(target) for target in targets if unit(target) != unit(source))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan): each is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def rank(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_has_a_layer():
    units = {unit(".".join(p.relative_to(SRC.parent).with_suffix("").parts)) for p in SRC.glob("*.py")}
    units |= {f"{d.name}/" for d in SRC.iterdir() if (d / "__init__.py").exists()}
    placed = set().union(*LAYERS)
    assert units <= placed, f"add to LAYERS (and the diagram): {sorted(units - placed)}"


def test_no_module_imports_from_a_higher_layer():
    upward = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if rank(target) < rank(source)
    ]
    assert not upward


def test_no_package_is_in_an_import_cycle():
    graph = import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    cycles = [
        f"{package} <-> {other}"
        for package in (f"{p}/" for p in PACKAGES)
        for other in graph.get(package, ())
        if reaches(other, package)
    ]
    assert not cycles


def test_no_module_is_in_an_import_cycle():
    assert cycles(module_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
