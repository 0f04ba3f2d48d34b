"""The layering of `jaxlr/`: imports point one way, core -> host -> engine -> data -> report.

Every import of every module counts, at module level or inside a function (also under
`TYPE_CHECKING`): a module may import modules of its own layer or of a lower one, never of a
higher one, the module graph has no cycle, and nothing in `jaxlr/` imports `experiments`.
See WORKSPACE.md, "Layout", for what each layer holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jaxlr"
# Lowest first. `jaxlr/__init__.py` (the version) belongs to no layer and imports nothing.
LAYERS = ("core", "host", "engine", "data", "report")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module `path` imports (absolute names; `from a import b` counts a.b if b is a
    module, else a)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                full = f"{mod}.{a.name}"
                out.add(full if full in MODULES else mod)
    return out


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "jaxlr" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


GRAPH = {
    name: {m for m in _imports(path, name) if m.startswith("jaxlr") or m.startswith("experiments")}
    for name, path in MODULES.items()
}


def test_every_module_is_in_a_layer():
    loose = sorted(m for m in MODULES if m != "jaxlr" and _layer(m) is None)
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    own = _layer(name)
    bad = []
    for dep in sorted(GRAPH[name]):
        if dep.split(".")[0] == "experiments":
            bad.append(f"{dep} (jaxlr never imports experiments)")
            continue
        if dep == "jaxlr" or dep not in MODULES:
            if dep != "jaxlr" and dep.startswith("jaxlr"):
                bad.append(f"{dep} (no such module)")
            continue
        layer = _layer(dep)
        if own is None or layer > own:
            mine = LAYERS[own] if own is not None else "none"
            bad.append(f"{dep} (layer {LAYERS[layer]} above {mine})")
    assert not bad, f"{name} imports upward: {bad}"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in MODULES or dep == node:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: the same functions on a made-up graph."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "jaxlr.core.models": {"jaxlr.report.tables"}}
        with pytest.raises(AssertionError, match="imports upward"):
            test_no_upward_import("jaxlr.core.models")
        GRAPH = {**saved, "jaxlr.core.losses": {"jaxlr.core.models"},
                 "jaxlr.core.models": {"jaxlr.core.losses"}}  # fmt: skip
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycle()
    finally:
        GRAPH = saved
