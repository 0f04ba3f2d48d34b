"""Every benchmark module imports (no heavy work at import) and has a `main`, and every name
it imports from this project, at module level or inside a function, exists: a benchmark
cannot silently rot when the library's API changes."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "benchmarks"
BENCHMARKS = sorted(p.stem for p in FOLDER.glob("*.py"))
# Benchmarks that compare against another library need it installed.
NEEDS = {"torch_mlp": "torch", "sklearn_path": "sklearn"}
OURS = ("jaxlr", "experiments", "benchmarks")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None)), f"benchmarks/{name}.py has no main()"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_project_names_exist(name):
    """`from jaxlr... import x` anywhere in the file (also inside functions) names a real x."""
    tree = ast.parse((FOLDER / f"{name}.py").read_text())
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names if a.name.split(".")[0] in OURS]
            for mod in mods:
                importlib.import_module(mod)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OURS:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"line {node.lineno}: {node.module}.{alias.name}")
    assert not missing, f"benchmarks/{name}.py imports names that do not exist: {missing}"


def test_benchmarks_found():
    assert "bench_sweep" in BENCHMARKS and "bench_tdt4265" in BENCHMARKS
