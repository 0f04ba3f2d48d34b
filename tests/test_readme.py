"""The README's test command is the one CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert f"\n{command}\n" in readme
    last = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last.strip() == command


def test_readme_python_imports_resolve():
    """Every import line of the README's Python examples names a module and names that exist."""
    import importlib
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    lines = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith(("from jaxlr", "import jaxlr", "from experiments"))
    ]
    assert lines
    for line in lines:
        if line.startswith("import "):
            importlib.import_module(line.split()[1])
            continue
        module, names = re.match(r"from (\S+) import (.+)", line).groups()
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            if not hasattr(mod, name):
                importlib.import_module(f"{module}.{name}")
