"""The package's modules import each other in one direction only (imports under
``if TYPE_CHECKING:`` aside; a package's ``__init__`` may import its own submodules), so every
stage can be read, tested and replaced from the bottom up."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import gristmill

ROOT = Path(gristmill.__file__).resolve().parent
GENERATED = {"gristmill.caffe.caffe_pb2"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["gristmill", *path.relative_to(ROOT).with_suffix("").parts]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in GENERATED:
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            candidates = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                          for a in node.names]
        else:
            continue
        for target in candidates:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            own_child = path.name == "__init__.py" and target.startswith(name + ".")
            if target and target != name and not own_child:
                targets.add(target)
    return targets


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "gristmill.ledger" in graph.get("gristmill.outdir", ())  # the walk sees imports
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"modules import each other in a circle: {exc.args[1]}") from None
