"""The import graph of src/, read with ``ast`` (nothing is imported): no module may reach itself through
imports, deferred ones inside functions included, and no arrow may run up the layers."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# package → the kick packages it may import (besides itself); kick_study, on top, may use all
LAYERS = {
    "kick_common": set(),
    "kick_tasks": {"kick_common"},
    "kick_models": {"kick_common"},
    "kick_study": {"kick_common", "kick_tasks", "kick_models"},
    "_kick_lm_eval_hook": {"kick_models"},  # the start-up hook registers kick-hf with lm-eval
}


def _module_files(src: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``name`` imports anywhere in its file: ``from pkg import sub``
    counts as importing the submodule ``pkg.sub``, ``from pkg import obj`` as importing ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _graph(src: Path) -> dict[str, set[str]]:
    files = _module_files(src)
    return {name: _imports(name, path, set(files)) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph(SRC)


def test_no_import_cycle_in_src(graph):
    assert _cycles(graph) == []


def test_no_import_runs_up_the_layers(graph):
    upward = sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                    if (top := target.split(".")[0]) != name.split(".")[0] and top not in LAYERS[name.split(".")[0]])
    assert upward == []


def test_the_method_contract_imports_nothing_of_kick(graph):
    assert graph["kick_models.compression.method"] == set()


@pytest.mark.parametrize(("files", "expected"), [
    ({"a/__init__.py": "", "a/x.py": "from .y import f", "a/y.py": "def f():\n    from .x import g"}, [["a.x", "a.y"]]),
    ({"a/__init__.py": "", "a/x.py": "from a import y", "a/y.py": "import a.z", "a/z.py": "from . import x"},
     [["a.x", "a.y", "a.z"]]),
    ({"a/__init__.py": "", "a/x.py": "from .y import f", "a/y.py": "import torch"}, []),
])
def test_the_cycle_finder_sees_deferred_and_relative_imports(tmp_path, files, expected):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert _cycles(_graph(tmp_path)) == expected
