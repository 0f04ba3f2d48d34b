"""Report text for experiment outputs (host side only): Markdown tables, reports, histories.

One Markdown table writer (`markdown_table`) serves every table of the project; `runs_table`
is the final-numbers table of one or several training runs. `summary_table` is the aligned
plain-text table the launcher prints at the end of a run. Files go through `jaxlr.host.io`, so
they are written atomically.

Dimension legend: none of the functions here takes arrays of rank >= 2.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxlr.engine.sweep_result import SweepResult, py_scalar
from jaxlr.host.io import atomic_write_text

__all__ = [
    "OPTIMUM_FIELDS",
    "image_link",
    "jsonable",
    "markdown_table",
    "merge_optimum",
    "runs_table",
    "slug",
    "summary_table",
    "write_history",
    "write_report",
]

_ALIGN_RULE = {"l": "---", "r": "---:", "c": ":---:"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _looks_numeric(cell: Any) -> bool:
    """A number, or text that reads as one ("0.9164", "1,550", "90.9%", "-", "**3**")."""
    if _is_number(cell):
        return True
    if not isinstance(cell, str):
        return False
    text = cell.strip().strip("*").replace(",", "").rstrip("%").strip()
    try:
        float(text)
    except ValueError:
        return False
    return True


def _md_cell(value: Any, float_format: str) -> str:
    if value is None:
        return "-"
    if _is_number(value) and isinstance(value, (float, np.floating)):
        return float_format.format(float(value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    align: Sequence[str] | str | None = None,
    bold: Sequence[int] = (),
    *,
    float_format: str = "{:.4f}",
) -> str:
    """A Markdown (GitHub) table: header, alignment rule, one line per row.

    Cells are written as given when they are strings (format numbers yourself for full
    control); floats go through `float_format`, None becomes "-", anything else `str()`.
    A "|" inside a cell is escaped.

    Args:
      headers: column titles.
      rows: one sequence of cells per row, each as long as `headers`.
      align: one of "l", "r", "c" per column (a string such as "lrr" works too); default:
        right for a column whose every cell is a number or reads as one ("0.9164", "1,550",
        "90.9%"), left otherwise.
      bold: indices of rows whose (non-empty) cells are wrapped in ** **.
      float_format: format of float cells.

    Returns:
      The table, lines joined by "\\n", without a trailing newline.
    """
    headers = [str(h) for h in headers]
    ncol = len(headers)
    if ncol == 0:
        raise ValueError("headers must name at least one column, got none")
    rows = [list(r) for r in rows]
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise ValueError(f"rows[{i}] has {len(r)} cells, the table has {ncol} columns")
    if align is None:
        align = [
            "r" if rows and all(_looks_numeric(r[j]) for r in rows) else "l" for j in range(ncol)
        ]
    align = list(align)
    if len(align) != ncol or any(a not in _ALIGN_RULE for a in align):
        raise ValueError(
            f"align must give one of 'l', 'r', 'c' for each of the {ncol} columns, got {align!r}"
        )
    bold = {int(b) for b in bold}
    bad = sorted(b for b in bold if not 0 <= b < len(rows))
    if bad:
        raise ValueError(f"bold row indices {bad} are out of range for {len(rows)} rows")
    lines = [
        "| " + " | ".join(_md_cell(h, float_format) for h in headers) + " |",
        "| " + " | ".join(_ALIGN_RULE[a] for a in align) + " |",
    ]
    for i, r in enumerate(rows):
        cells = [_md_cell(c, float_format) for c in r]
        if i in bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of the final numbers of one or several training runs.

    Args:
      runs: run name -> metrics with "train_loss", "val_loss", "train_accuracy",
        "val_accuracy", "steps" and "wall_seconds" (what `jaxlr.engine.train.fit` plus the
        experiments' `run_metrics` give).

    Returns:
      Columns run, train loss, val loss, train acc, val acc (4 decimals), steps, wall (s)
      (1 decimal).
    """
    need = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "steps", "wall_seconds")
    rows = []
    for key, m in runs.items():
        missing = [k for k in need if k not in m]
        if missing:
            raise ValueError(f"runs[{key!r}] lacks {missing}; runs_table needs {list(need)}")
        rows.append(
            [
                str(key),
                f"{m['train_loss']:.4f}",
                f"{m['val_loss']:.4f}",
                f"{m['train_accuracy']:.4f}",
                f"{m['val_accuracy']:.4f}",
                f"{m['steps']}",
                f"{m['wall_seconds']:.1f}",
            ]
        )
    return markdown_table(
        ["run", "train loss", "val loss", "train acc", "val acc", "steps", "wall (s)"],
        rows,
        align="lrrrrrr",
    )


_JSON_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_numbers(values) -> list[str]:
    """Each value as `json.dumps` writes a float: its repr, NaN / Infinity / -Infinity."""
    out = [repr(v) for v in np.asarray(values, np.float64).tolist()]
    return [_JSON_NONFINITE.get(v, v) for v in out]


def history_lines(history: dict) -> list[str]:
    """The JSON lines of a history, one per step with its check merged in: the text of
    `json.dumps` of each `jaxlr.engine.results.history_records` record, built from the
    arrays at once (a 256-point sweep writes 400,000 of them)."""
    steps = [int(v) for v in np.asarray(history["step"]).tolist()]
    epochs = [int(v) for v in np.asarray(history["epoch"]).tolist()]
    losses = _json_numbers(history["train_loss"])
    checks = {int(s): j for j, s in enumerate(np.asarray(history.get("check_step", [])).tolist())}
    if checks:
        cols = [_json_numbers(history[k]) for k in ("val_loss", "val_accuracy", "train_accuracy")]
    lines = []
    for s, e, v in zip(steps, epochs, losses, strict=True):
        line = f'{{"step": {s}, "epoch": {e}, "train_loss": {v}'
        j = checks.get(s)
        if j is not None:
            line += (
                f', "val_loss": {cols[0][j]}, "val_accuracy": {cols[1][j]}, '
                f'"train_accuracy": {cols[2][j]}'
            )
        lines.append(line + "}")
    return lines


def write_history(path: str | os.PathLike, history: dict) -> None:
    """Writes a history as JSON lines (atomically): one record per step, checks merged in.

    Args:
      path: destination file.
      history: a `jaxlr.engine.train` history (step, epoch, train_loss, check_step, ...).
    """
    lines = history_lines(history)
    atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def write_report(path: str | os.PathLike, title: str, sections: Sequence[str]) -> None:
    """Writes a Markdown report (atomically): "# title", then the sections, stripped.

    Args:
      path: destination file (usually `report.md`).
      title: the report's title.
      sections: Markdown blocks, separated by a blank line in the file.
    """
    text = f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n"
    atomic_write_text(Path(path), text)


def image_link(name: str, caption: str) -> str:
    """Markdown for an image next to the report: `![caption](name)`."""
    return f"![{caption}]({name})"


def slug(text: str) -> str:
    """A file-name part of a run key: "lambda=0.1" -> "lambda_0.1"; "run" if nothing is left.

    Every run of characters other than letters, digits, ".", "+" and "-" becomes one "_";
    leading and trailing "_" are dropped.
    """
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_") or "run"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts (the first one's keys are the columns) as CSV text, one line per row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def jsonable(obj: Any) -> Any:
    """`obj` with NumPy (and JAX) arrays and scalars turned into lists and Python numbers.

    Dict keys become strings, tuples become lists; anything else is returned as it is.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if type(obj).__module__.startswith("jax") and hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    return obj


# ---------------------------------------------------------------------------------------------
# The launcher's plain-text summary.

_MAX_ROWS = 12
_MAX_COLUMNS = 6
_MAX_TEXT = 48
# Default selection: these keys first, in this order; then keys naming one of the words;
# then the rest (each group in the order of the metrics).
_HEADLINE_KEYS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
    "steps",
    "wall_seconds",
)
_HEADLINE_WORDS = ("accuracy", "loss", "objective", "correct", "error")


def _scalar(value: Any) -> tuple[bool, Any]:
    """(is it a scalar, the Python value): numbers, bools, strings, None, 0-d/size-1 arrays."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, np.generic):
        return True, value.item()
    if hasattr(value, "shape") and hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.size == 1 and arr.ndim <= 1:
            return True, arr.reshape(()).item()
    return False, None


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested dict under dotted keys; lists and arrays are left out."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
            continue
        ok, value = _scalar(v)
        if ok:
            out[key] = value
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 4 decimals in [0, 1], except a value so small that they would show 0.0000.
        if math.isfinite(value) and (value == 0.0 or 1e-4 <= value <= 1.0):
            return f"{value:.4f}"
        return f"{value:.4g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _right(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _default_keys(keys: Sequence[str], limit: int) -> list[str]:
    def rank(key: str) -> int:
        if key in _HEADLINE_KEYS:
            return _HEADLINE_KEYS.index(key)
        last = key.rsplit(".", 1)[-1]
        return len(_HEADLINE_KEYS) + (0 if any(w in last for w in _HEADLINE_WORDS) else 1)

    return sorted(keys, key=rank)[:limit]


def _text_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Aligned plain-text lines: numbers right-aligned, everything else left-aligned."""
    cells = [[_fmt(v) for v in r] for r in rows]
    right = [
        all(_right(r[j]) for r in rows if r[j] is not None) and any(r[j] is not None for r in rows)
        for j in range(len(headers))
    ]
    widths = [max([len(h)] + [len(c[j]) for c in cells]) for j, h in enumerate(headers)]

    def line(parts):
        out = [p.rjust(w) if r else p.ljust(w) for p, w, r in zip(parts, widths, right)]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(c) for c in cells]


def _split_runs(metrics: Mapping) -> tuple[dict[str, dict], dict[str, Any]]:
    """(runs, top-level scalars): runs are dict values that share a key with another one."""
    nested = {
        str(k): _flatten(v) for k, v in metrics.items() if isinstance(v, Mapping) and _flatten(v)
    }
    runs = {
        k: flat
        for k, flat in nested.items()
        if any(set(flat) & set(other) for j, other in nested.items() if j != k)
    }
    if len(runs) < 2:
        runs = {}
    rest = {k: v for k, v in metrics.items() if str(k) not in runs}
    return runs, _flatten(rest)


def summary_table(metrics: Mapping[str, Any], headline: Sequence[str] | None = None) -> str:
    """A short aligned plain-text table of an experiment's metrics, for the terminal.

    Nested dicts of scalars are flattened under dotted keys ("early_stopping.best_step");
    lists and arrays are skipped. When several values of `metrics` are dicts that share keys
    (runs such as {"lambda=0": {...}, "lambda=1": {...}}), they become one row each with one
    column per key; the remaining scalars follow as key / value lines. Floats in [0, 1] are
    printed with 4 decimals, other floats with `:.4g`, integers as they are, booleans as
    yes/no (a float below 1e-4 other than 0 with `:.4g` too, so it does not read 0.0000).

    Args:
      metrics: what an experiment returns.
      headline: the keys to show, in order (dotted keys reach into nested dicts; with runs
        they name columns of the runs or top-level scalars); keys not found are skipped.
        Default: every scalar (at most 12 lines and 6 run columns): first val / test /
        train accuracy and loss, steps and wall_seconds, then other accuracies, losses,
        objectives, then the rest.

    Returns:
      The table as text (no trailing newline); "(no scalar metrics)" when nothing is left.
    """
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    if isinstance(headline, str):
        raise ValueError(f"headline must be a sequence of keys, not the string {headline!r}")
    runs, scalars = _split_runs(metrics)
    if headline is not None and runs and any(k.split(".")[0] in runs for k in headline):
        # The headline reaches into the nested dicts by name: they are results, not runs.
        runs, scalars = {}, _flatten(metrics)
    lines: list[str] = []
    if runs:
        seen: dict[str, None] = {}
        for flat in runs.values():
            seen.update(dict.fromkeys(flat))
        if headline is None:
            shared = [k for k in seen if all(k in f for f in runs.values())]
            columns = _default_keys(shared or list(seen), _MAX_COLUMNS)
        else:
            columns = [k for k in headline if k in seen]
        names = list(runs)[:_MAX_ROWS]
        rows = [[name] + [runs[name].get(c) for c in columns] for name in names]
        lines += _text_table(["run", *columns], rows)
        if len(runs) > len(names):
            lines.append(f"(+{len(runs) - len(names)} more runs)")
    if headline is None:
        keys = _default_keys(list(scalars), _MAX_ROWS)
    else:
        keys = [k for k in headline if k in scalars]
    if keys:
        if lines:
            lines.append("")
        lines += _text_table(["metric", "value"], [[k, scalars[k]] for k in keys])
        if headline is None and len(scalars) > len(keys):
            lines.append(f"(+{len(scalars) - len(keys)} more not shown)")
    return "\n".join(lines) if lines else "(no scalar metrics)"


# ---------------------------------------------------------------------------------------------
# The table of a sweep (`jaxlr.engine.sweep_result.SweepResult`).

SWEEP_COLUMNS = (
    "train_loss",
    "val_loss",
    "train_accuracy",
    "val_accuracy",
    "steps",
)


def sweep_rows(result: SweepResult, columns: Sequence[str] = SWEEP_COLUMNS) -> list[dict]:
    """Rows of the result table: hyper-parameters, metrics, stopping step, divergence."""
    rows = []
    es = result.early_stopping
    for i in range(result.grid.size):
        row = {"index": i, **result.grid.point(i)}
        for c in columns:
            row[c] = py_scalar(result.metrics[c][i])
        row["stop_step"] = int(es["step"][i]) if es and bool(es["stopped"][i]) else ""
        row["best_step"] = int(es["best_step"][i]) if es else ""
        if result.pruned_rung is not None:
            rung = int(result.pruned_rung[i])
            row["pruned_rung"] = rung if rung >= 0 else ""
        row["diverged"] = bool(result.diverged[i])
        rows.append(row)
    return rows


def sweep_csv(
    result: SweepResult, columns: Sequence[str] = SWEEP_COLUMNS, rows: list[dict] | None = None
) -> str:
    """The result table as CSV text (one row per point; `rows`: `sweep_rows`, maybe extended)."""
    return csv_text(sweep_rows(result, columns) if rows is None else rows)


def dataframe(rows: Sequence[Mapping[str, Any]]):
    """Rows (e.g. `sweep_rows(result)`, the rows of table.csv) as a pandas DataFrame.

    Raises:
      ImportError: pandas is not installed (`pip install pandas`); the rows themselves are
        plain dicts and need nothing.
    """
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("tables.dataframe needs pandas: pip install pandas") from e
    return pd.DataFrame([dict(r) for r in rows])


def _sweep_cell(key: str, value) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float) and key in ("learning_rate", "l2", "momentum", "lr_limit"):
        return f"{value:.4g}"
    if isinstance(value, float) and key == "gap":
        return f"{value:.3g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def sweep_markdown(
    result: SweepResult,
    columns: Sequence[str] = SWEEP_COLUMNS,
    best_by: str = "val_loss",
    rows: list[dict] | None = None,
) -> str:
    """The result table as Markdown, the best point (by `best_by`) in bold.

    Args:
      result: the sweep.
      columns: metric columns of `sweep_rows` (when `rows` is not given).
      best_by: the metric that picks the bold row.
      rows: `sweep_rows(result)`, possibly with columns added (e.g. the optimum's).
    """
    rows = sweep_rows(result, columns) if rows is None else rows
    bold = () if np.all(result.diverged) else (result.best_index(best_by),)
    cells = [[_sweep_cell(k, v) for k, v in r.items()] for r in rows]
    return markdown_table(list(rows[0]), cells, bold=bold) + "\n"


# ---------------------------------------------------------------------------------------------
# The exact optimum beside trained points.

# What every result row gains from its point's optimum row (`jaxlr.core.optimum.optimum_report`
# rows with "unstable", as `experiments.common.optimum_for` gives them).
OPTIMUM_FIELDS = ("optimum_objective", "gap", "lr_limit", "lr_over_limit", "unstable")


def merge_optimum(
    rows: Sequence[dict],
    optimum_rows: Sequence[Mapping[str, Any]],
    *,
    extra: Mapping[str, str] | None = None,
    diverged: Sequence[bool] | None = None,
    converged_only: bool = False,
) -> Sequence[dict]:
    """Adds each point's exact-optimum numbers (`OPTIMUM_FIELDS`) to its result row, in place.

    Args:
      rows: one result row (dict) per trained point.
      optimum_rows: the optimum's row of each point, same order.
      extra: result key -> optimum-row key of further fields to copy (e.g.
        {"optimum_converged": "converged", "no_finite_optimum": "no_finite_optimum"}).
      diverged: per point, whether its run diverged: its gap is then None (the objective of a
        diverged run is no distance to anything).
      converged_only: "optimum_objective" is None when the solve did not converge (otherwise
        it is the solver's last objective, which is then no optimum).

    Returns:
      `rows`. The gap is None where the solve did not converge (the solver's rule).
    """
    if len(rows) != len(optimum_rows):
        raise ValueError(f"{len(rows)} result rows for {len(optimum_rows)} optimum rows")
    if diverged is not None and len(diverged) != len(rows):
        raise ValueError(f"{len(diverged)} diverged flags for {len(rows)} result rows")
    for i, (row, opt) in enumerate(zip(rows, optimum_rows)):
        row.update({k: opt[k] for k in OPTIMUM_FIELDS})
        if converged_only and not opt["converged"]:
            row["optimum_objective"] = None
        if diverged is not None and diverged[i]:
            row["gap"] = None
        row.update({k: opt[src] for k, src in (extra or {}).items()})
    return rows
