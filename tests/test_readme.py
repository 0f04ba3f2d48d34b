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
