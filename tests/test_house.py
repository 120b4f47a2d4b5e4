"""The house reads one way: every import (module-level or inside a function) points down the layers, never up,
and no modules import each other in a circle. Also: the spec's torch-free catalogue matches the registries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import samscale

PACKAGE = Path(samscale.__file__).parent

#: Layers from the ground floor up; a module may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("samscale", "samscale.errors", "samscale.version", "samscale.workdir", "samscale.process", "samscale.fileio",
     "samscale.names", "samscale.spec"),
    ("samscale.data",),
    ("samscale.models", "samscale.sparsity"),
    ("samscale.optim",),
    ("samscale.integrations",),
    ("samscale.hessian", "samscale.theory"),
    ("samscale.train",),
    ("samscale.store",),
    ("samscale.sweep",),
    ("samscale.selection",),
    ("samscale.report",),
    ("samscale.experiments",),
    ("samscale.recipes",),
    ("samscale.cli",),
)


def _module_name(path: Path) -> str:
    parts = ["samscale", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best, depth = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "samscale" and module.startswith(prefix + "."))
            if matches and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of tests/test_house.py; add its package to LAYERS")
    return best


def _imports(path: Path, module: str) -> set[str]:
    """Every samscale module imported anywhere in the file (also inside functions), resolved to module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("samscale"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("samscale"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {target for target in _imports(path, name) if target in modules and target != name}
    return graph


def test_every_import_points_down_the_layers():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if _layer(target) > _layer(module):
                upward.append(f"{module} imports {target} (layer {_layer(target)} > {_layer(module)})")
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            # a package importing its own submodules (re-exports in __init__) is not a cycle of concepts
            real = [m for m in component if not any(other.startswith(m + ".") for other in component)]
            if len(real) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_spec_imports_without_torch():
    code = "import sys, samscale.spec.run, samscale.spec.study, samscale.workdir, samscale.version; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_catalog_matches_the_registries():
    from samscale.data import DATASETS
    from samscale.hessian import ANALYSES
    from samscale.models.registry import FAMILIES
    from samscale.spec.catalog import ANALYSIS_NAMES, DATASET_NAMES, FAMILY_NAMES

    assert sorted(DATASET_NAMES) == sorted(DATASETS)
    assert sorted(FAMILY_NAMES) == sorted(FAMILIES)
    assert tuple(ANALYSIS_NAMES) == tuple(ANALYSES)
