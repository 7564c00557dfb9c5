"""The import graph keeps the layering that docs/architecture.md draws: no module imports from a higher
layer, and no package takes part in an import cycle. Imports inside functions count too: a lazy import
is still a dependency, only a later one."""

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
    {"web/"},
    {"translate", "video", "engines", "export", "tiling", "compare", "testset", "cost", "report", "plots",
     "fid_inception"},
    {"runs", "official", "layouts/", "onnxfile", "data/", "device", "threads", "paths", "weights", "metrics",
     "losses", "runlock"},
    {"nets/", "metadata", "fsutil", "errors", "options", "__init__"},
)  # fmt: skip
PACKAGES = ("cli", "train", "data", "nets", "layouts", "web")


def unit(module: str) -> str:
    """``cgdistill.train.loop`` -> ``train/``; ``cgdistill.paths`` -> ``paths``; the package itself -> ``__init__``."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    return f"{parts[0]}/" if parts[0] in PACKAGES else parts[0]


def import_graph() -> dict[str, set[str]]:
    """Unit -> the other units it imports (anywhere in its files)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        source = unit(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cgdistill"):
                names = [node.module] if node.module != "cgdistill" else [f"cgdistill.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("cgdistill")]
            else:
                continue
            for name in names:
                target = unit(name)
                if target != source and target != "__version__":
                    graph[source].add(target)
    return graph


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
