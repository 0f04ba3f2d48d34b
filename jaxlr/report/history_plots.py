"""Generic panels of a training history (host side only): the loss and accuracy series, their
y limits, early-stopping markers and `plot_history`, which draws both figures with
`jaxlr.report.figures.plot_curves`.

Dimension legend:
  T  steps of a training history
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlr.report.figures import plot_curves, robust_ylim
from jaxlr.report.metrics import running_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _sep(label: str) -> str:
    return ", " if label else ""


def loss_series(history: Mapping[str, Any], label: str = "") -> dict:
    """Batch training loss, its running mean over one epoch, and the validation loss.

    Args:
      history: a `jaxlr.engine.train` history (step, epoch, train_loss, check_step, val_loss).
      label: appended to every legend entry (", label") to tell runs apart.

    Returns:
      legend -> (x, y) for `plot_curves`; the running mean averages the last M batches,
      M = the number of steps of the first epoch.
    """
    sep = _sep(label)
    epoch = np.asarray(history["epoch"])
    m = max(1, int(np.sum(epoch == epoch[0]))) if len(epoch) else 1
    return {
        f"training loss (batch){sep}{label}": (history["step"], history["train_loss"]),
        f"training loss (mean of last {m} batches){sep}{label}": (
            history["step"],
            running_mean(history["train_loss"], m),
        ),
        f"validation loss{sep}{label}": (history["check_step"], history["val_loss"]),
    }


def loss_styles(series: Mapping[str, Any]) -> dict:
    """Styles for `loss_series`: the noisy batch loss faint, the smoothed and validation bold."""
    return (
        {k: {"alpha": 0.3, "linewidth": 0.7, "color": "C0"} for k in series if "(batch)" in k}
        | {k: {"color": "C0", "linewidth": 1.8} for k in series if "(mean of" in k}
        | {k: {"color": "C1", "linewidth": 1.5} for k in series if k.startswith("validation")}
    )


def accuracy_series(history: Mapping[str, Any], label: str = "") -> dict:
    """Training and validation accuracy at the checks: legend -> (check_step, accuracy)."""
    sep = _sep(label)
    return {
        f"training accuracy{sep}{label}": (history["check_step"], history["train_accuracy"]),
        f"validation accuracy{sep}{label}": (history["check_step"], history["val_accuracy"]),
    }


def loss_ylim(*histories: Mapping[str, Any]) -> tuple[float, float] | None:
    """y limits of a loss figure: fitted to the smoothed training and the validation loss.

    The faint batch loss may leave the frame; the limits never go below 0.
    """
    arrays = []
    for h in histories:
        series = loss_series(h)
        arrays += [y for k, (_, y) in series.items() if "(batch)" not in k]
    return robust_ylim(arrays, lo_q=0.0, hi_q=99.5, pad=0.3, floor=0.0)


def accuracy_ylim(*histories: Mapping[str, Any]) -> tuple[float, float] | None:
    """y limits of an accuracy figure (training and validation accuracy), at most 1.001."""
    arrays = [a for h in histories for a in (h["train_accuracy"], h["val_accuracy"])]
    return robust_ylim(arrays, lo_q=2.0, hi_q=100.0, ceil=1.0 + 1e-3)


def early_stopping_vlines(es: Mapping[str, Any] | None, label: str = "") -> dict:
    """Vertical markers of early stopping: the best check and, if it fired, the stop.

    Args:
      es: a run's `early_stopping` metrics (`jaxlr.engine.results.early_stopping_summary`), or None.
      label: appended to the legend entries.

    Returns:
      legend -> step, for the `vlines` argument of `plot_curves` ({} without `es`).
    """
    if not es:
        return {}
    sep = _sep(label)
    out = {f"best check (step {es['best_step']}){sep}{label}": es["best_step"]}
    if es["stopped"]:
        out[f"early stop (step {es['step']}){sep}{label}"] = es["step"]
    return out


def plot_history(
    loss_path: str | os.PathLike | None,
    accuracy_path: str | os.PathLike | None,
    history: Mapping[str, Any],
    title: str,
    *,
    early_stopping: Mapping[str, Any] | None = None,
) -> tuple[Path | Figure, Path | Figure]:
    """The loss and the accuracy figure of one run against the training step.

    Loss: batch loss (faint), its running mean over an epoch, validation loss; accuracy:
    training and validation accuracy at the checks. Both zoomed on the later part of
    training and marked with the early-stopping checks when `early_stopping` is given.

    Args:
      loss_path, accuracy_path: destination PNGs (None: that figure is returned).
      history: a `jaxlr.engine.train` history.
      title: prefix of both titles (": loss", ": accuracy" follow).
      early_stopping: the run's `early_stopping` metrics, or None.

    Returns:
      (loss, accuracy): each the Path written, or the Figure when its path is None.
    """
    vl = early_stopping_vlines(early_stopping)
    series = loss_series(history)
    a = plot_curves(
        loss_path,
        series,
        styles=loss_styles(series),
        xlabel="training step",
        ylabel="cross-entropy loss",
        title=f"{title}: loss",
        ylim=loss_ylim(history),
        vlines=vl,
    )
    b = plot_curves(
        accuracy_path,
        accuracy_series(history),
        xlabel="training step",
        ylabel="accuracy",
        title=f"{title}: accuracy",
        ylim=accuracy_ylim(history),
        vlines=vl,
    )
    return a, b
