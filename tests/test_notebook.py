"""The example notebook: committed without outputs, and it runs end to end in a real kernel.

`examples/tdt4265_logistic_regression.ipynb` is executed with nbclient (kernel "python3",
working directory the repository root): by default with no MNIST anywhere (empty data and
cache folders, mirrors that cannot answer), where it must fall back to the fake data set with
a note and never try a download; with `-m slow` also on the real MNIST files
(`JAXLR_DATA_DIR`, skipped when they are not found).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from realdata import needs_data

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tdt4265_logistic_regression.ipynb"
CELL_TIMEOUT_S = 300  # per cell; the slowest (compiling the optimum's solver) takes ~20 s
FAKE_NOTE = "runs on a small FAKE data set"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 6
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {i} has an execution count"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _execute(env: dict[str, str]) -> list:
    """Runs the notebook in a fresh kernel with environment `env`; returns its code cells."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the kernel's working directory
    )
    client.execute(env=env)
    return [c for c in nb.cells if c.cell_type == "code"]


def _kernel_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXLR_")}
    env.pop("MPLBACKEND", None)  # the notebook draws inline; Agg (set by conftest) would not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _text(cells) -> str:
    parts = []
    for cell in cells:
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                parts.append(out.data.get("text/markdown", out.data.get("text/plain", "")))
    return "\n".join(parts)


def _check_outputs(cells) -> str:
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    images = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, "the loss and accuracy curves are drawn inline, once"
    tables = [
        o.data["text/markdown"]
        for c in cells
        for o in c.outputs
        if "text/markdown" in o.get("data", {})
    ]
    assert len(tables) == 2  # the sweep's table, then with the optimum's columns
    assert all(t.count("\n| ") >= 1 + 9 for t in tables), "one row per grid point"
    assert "| optimum | gap | lr_limit | lr_over_limit |" in tables[1]
    text = _text(cells)
    assert "max |analytic - jax.grad|" in text
    assert "gradient-descent limit" in text
    return text


@pytest.mark.slow  # ~40 s of CPU; the fake-data run below covers the same cells by default
@needs_data
def test_notebook_runs_on_the_real_mnist():
    cells = _execute(_kernel_env(JAXLR_DATA_DIR=os.environ["JAXLR_DATA_DIR"]))
    text = _check_outputs(cells)
    assert FAKE_NOTE not in text
    assert "mnist: 4005 training and 2042 validation examples" in text


def test_notebook_falls_back_to_fake_data_without_downloading(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _kernel_env(
        JAXLR_DATA_DIR=str(empty),
        JAXLR_CACHE_DIR=str(tmp_path / "cache"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        # A download attempt would fail at once and say so on stderr (kept in the outputs).
        JAXLR_MIRRORS="http://127.0.0.1:9/{name}/",
        JAXLR_DOWNLOAD_TIMEOUT="2",
    )
    cells = _execute(env)
    text = _check_outputs(cells)
    assert FAKE_NOTE in text
    assert "fake: " in text
    assert "jaxlr: download" not in text  # what a download attempt prints, failed or not
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.gz"))
