"""Generic figures of a sweep (host side only): per-seed heatmaps of the final metrics over the
(learning rate, L2) grid, the validation curves of every point, and a random search's scatter.
Built from the primitives of `jaxlr.report.figures` and `jaxlr.report.image_plots`.

Dimension legend:
  S  sweep points
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlr.report.figures import new_figure, plot_curves, save_figure
from jaxlr.report.image_plots import plot_heatmap

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Beyond this many points the curves figure has no legend (colour = learning rate).
_MAX_LEGEND = 16


def sweep_point_label(point: Mapping[str, Any], grid: Any) -> str:
    """Short name of a grid point: "lr=0.1, l2=0.001" (momentum and seed when they vary)."""
    parts = [f"lr={point['learning_rate']:g}", f"l2={point['l2']:g}"]
    if "momentum" in grid.axes:
        parts.append(f"mom={point['momentum']:g}")
    if len(grid.values.get("seed", ())) > 1:
        parts.append(f"seed={point['seed']}")
    return ", ".join(parts)


def plot_sweep_heatmaps(result: Any, folder: str | os.PathLike | None = None) -> list:
    """Validation accuracy over lambda (rows) x learning rate (columns), mean over seeds.

    One heatmap per momentum value when the grid has several. Returns the file names written
    into `folder`, or the Figures when `folder` is None.
    """
    from jaxlr.engine.sweep_result import mean_over

    grid = result.grid
    mean = mean_over(result, result.metrics["val_accuracy"], ("seed",))  # l2, lr[, mom]
    rows = [f"{v:g}" for v in grid.values["l2"]]
    cols = [f"{v:g}" for v in grid.values["learning_rate"]]
    nseeds = len(grid.values["seed"])
    avg = f", mean of {nseeds} seeds" if nseeds > 1 else ""
    names = []
    for j, mom in enumerate(grid.values.get("momentum", (None,))):
        values = mean[..., j] if mom is not None else mean
        name = "heatmap_val_accuracy.png" if mom is None else f"heatmap_val_accuracy_mom{mom:g}.png"
        drawn = plot_heatmap(
            None if folder is None else Path(folder) / name,
            values,
            rows,
            cols,
            xlabel="learning rate",
            ylabel="L2 lambda",
            title="Validation accuracy" + avg + (f", momentum {mom:g}" if mom is not None else ""),
            fmt="{:.4f}",
            colorbar_label="validation accuracy",
        )
        names.append(name if folder is not None else drawn)
    return names


def plot_sweep_curves(result: Any, folder: str | os.PathLike | None = None) -> str | Figure:
    """Validation accuracy against the step for every point.

    Returns the file name written into `folder`, or the Figure when `folder` is None.
    """
    import matplotlib

    grid = result.grid
    name = "curves_val_accuracy.png"
    title = f"Validation accuracy of all {grid.size} grid points"
    if grid.size <= _MAX_LEGEND:
        series = {
            sweep_point_label(grid.point(i), grid): (h["check_step"], h["val_accuracy"])
            for i, h in enumerate(result.histories)
        }
        drawn = plot_curves(
            None if folder is None else Path(folder) / name,
            series,
            xlabel="training step",
            ylabel="validation accuracy",
            title=title,
        )
        return name if folder is not None else drawn
    # Many points: one colour per learning rate (log scale), no per-point legend.
    fig = new_figure((7.5, 4.8))
    ax = fig.subplots()
    lrs = np.asarray(grid.hparams.learning_rate, np.float64)
    lo, hi = np.log10(lrs.min()), np.log10(lrs.max())
    cmap = matplotlib.colormaps["viridis"]
    for i, h in enumerate(result.histories):
        c = cmap(0.5 if hi == lo else (np.log10(lrs[i]) - lo) / (hi - lo))
        ax.plot(h["check_step"], h["val_accuracy"], color=c, linewidth=0.7, alpha=0.6)
    sm = matplotlib.cm.ScalarMappable(
        cmap=cmap, norm=matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    )
    fig.colorbar(sm, ax=ax, label="log10 learning rate")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if folder is None:
        return fig
    save_figure(fig, Path(folder) / name)
    return name


def plot_search_scatter(
    result: Any, folder: str | os.PathLike | None = None, by: str = "val_loss"
) -> str | Figure:
    """Random search: `by` of every point against its learning rate, colour = log10 lambda.

    Points stopped by successive halving are hollow, diverged ones left out. Returns the
    file name written into `folder`, or the Figure when `folder` is None.
    """
    import matplotlib

    name = f"search_{by}.png"
    hp = result.grid.hparams
    lr = np.asarray(hp.learning_rate, np.float64)
    l2 = np.asarray(hp.l2, np.float64)
    y = np.asarray(result.metrics[by], np.float64)
    ok = ~np.asarray(result.diverged) & np.isfinite(y)
    pruned = np.zeros(lr.shape, bool)
    if getattr(result, "pruned_rung", None) is not None:
        pruned = np.asarray(result.pruned_rung) >= 0
    c = np.log10(np.where(l2 > 0, l2, np.nan))
    fig = new_figure((7.5, 4.8))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    finite_c = c[np.isfinite(c)]
    lo, hi = (finite_c.min(), finite_c.max()) if finite_c.size else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    colors = [cmap(norm(v)) if np.isfinite(v) else "black" for v in c]
    for sel, face, label in ((ok & ~pruned, None, "trained to the end"),
                             (ok & pruned, "none", "stopped by halving")):  # fmt: skip
        idx = np.flatnonzero(sel)
        if idx.size:
            ax.scatter(
                lr[idx],
                y[idx],
                facecolors=[colors[i] for i in idx] if face is None else face,
                edgecolors=[colors[i] for i in idx],
                label=label,
                s=28,
            )
    ax.set_xscale("log")
    if np.all(y[ok] > 0):
        ax.set_yscale("log")
    fig.colorbar(matplotlib.cm.ScalarMappable(cmap=cmap, norm=norm), ax=ax, label="log10 lambda")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(by.replace("_", " "))
    ax.set_title(f"{by.replace('_', ' ')} of {int(ok.sum())} points (diverged left out)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if folder is None:
        return fig
    save_figure(fig, Path(folder) / name)
    return name
