"""Checks of what enters the library: labels a model can represent, finite data, numbers as given.

Every public entry point that takes training data (`jaxlr.engine.train.fit`,
`jaxlr.engine.sweep.run_sweep`, `jaxlr.engine.train.measure_step_rate`, the solver's `solve`,
`solve_path` and `optimum_report`) calls these once, on host values, before anything is
compiled: one pass of min / max per array (no copy, no mask), so the hot path is untouched.
A failure is an `InputError`: one line naming the entry point, the array, the offending value
and what is allowed.

Dimensions: N examples, D features.
"""

from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """Data a model cannot train on (a label outside its classes, a non-finite input): one line."""


def format_number(value) -> str:
    """A number as its own dtype writes it: 0.01 for float32 0.01 (not 0.009999999776482582)."""
    a = np.asarray(value)
    if a.ndim:
        return "[" + ", ".join(format_number(v) for v in a.reshape(-1)[:8]) + "]"
    if a.dtype == bool:
        return "true" if bool(a) else "false"
    if np.issubdtype(a.dtype, np.integer):
        return str(int(a))
    if np.issubdtype(a.dtype, np.floating):
        # numpy's str of a scalar is the shortest text that reads back as that value in its
        # own dtype; Python's float() would widen a float32 first.
        return str(a[()])
    return str(value)


def _host(a) -> np.ndarray | None:
    """`a` as a numpy array when it can be read on the host (None for a tracer)."""
    try:
        return np.asarray(a)
    except Exception:  # noqa: BLE001 - a jax tracer (under jit or vmap): nothing to check here
        return None


def classes_text(model: str, num_classes: int) -> str:
    """How many classes a model has, in words."""
    if model == "logistic":
        return "the logistic model is binary (labels must be 0 or 1)"
    return f"the {model} model has {num_classes} classes (labels must be in [0, {num_classes}))"


def check_labels(y_N, num_classes: int, *, name: str, where: str, model: str = "") -> None:
    """Refuses labels that are not integer class indices in [0, num_classes).

    Args:
      y_N: the labels (numpy or jax array; a tracer is not checked).
      num_classes: K (2 for the binary logistic model).
      name: the array's name in the message (e.g. "data.y_val").
      where: the entry point (e.g. "fit").
      model: the model's kind, for the message ("logistic", "softmax", "mlp").
    Raises:
      InputError: one line naming the array, the offending label and the allowed range.
    """
    y = _host(y_N)
    if y is None or y.size == 0:
        return
    kind = model or ("logistic" if num_classes == 2 else "multi-class")
    if not np.issubdtype(y.dtype, np.integer):
        bad = ""
        if np.issubdtype(y.dtype, np.number):
            flat = y.reshape(-1)
            odd = np.flatnonzero(flat != np.round(flat)) if y.dtype.kind == "f" else []
            bad = f" (e.g. {format_number(flat[odd[0]])})" if len(odd) else ""
        raise InputError(
            f"{where}: {name} must hold integer class labels, got dtype {y.dtype}{bad}; "
            f"{classes_text(kind, num_classes)}"
        )
    lo, hi = y.min(), y.max()
    if lo < 0 or hi >= num_classes:
        bad = int(lo) if lo < 0 else int(hi)
        raise InputError(f"{where}: {name} holds label {bad} but {classes_text(kind, num_classes)}")


def check_finite(x, *, name: str, where: str) -> None:
    """Refuses an input array holding NaN or an infinity.

    Two reductions (min and max propagate NaN and show an infinity), no mask in memory; the
    position of the first bad value is looked up only when there is one.

    Raises:
      InputError: one line naming the array, the value and where it is.
    """
    a = _host(x)
    if a is None or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
        return
    if np.isfinite(a.min()) and np.isfinite(a.max()):
        return
    pos = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
    at = f"row {pos[0]}" + (f", feature {pos[1]}" if len(pos) > 1 else "")
    raise InputError(
        f"{where}: {name} holds {format_number(a[pos])} at {at}; every input must be finite "
        "(fix or drop that example)"
    )


__all__ = ["InputError", "check_finite", "check_labels", "classes_text", "format_number"]
