"""Every figure function of the reports in one namespace (host side only).

The functions live in four modules, one role each, and are gathered here so that callers keep
one import (`from jaxlr.report import plots`):

- `jaxlr.report.figures`: the canvas (`new_figure`, `save_figure`, `DPI`), curves, a row of
  curve panels, bars and robust y limits;
- `jaxlr.report.image_plots`: weights as images, image grids, heatmaps, the confusion matrix;
- `jaxlr.report.history_plots`: the loss and accuracy panels of a training history;
- `jaxlr.report.sweep_plots`: the figures of a sweep (heatmaps, curves, random-search scatter).

A figure that only one experiment draws lives in that experiment's module
(`experiments/*.py`), built from these. Every `plot_*` function takes numpy-convertible arrays
and draws one figure: given a path it writes a PNG atomically and returns the path, given
`path=None` it returns the `matplotlib.figure.Figure`. matplotlib is imported on the first
figure, not with this module.
"""

from __future__ import annotations

from jaxlr.report.figures import (
    DPI,
    new_figure,
    plot_bar,
    plot_curves,
    plot_side_by_side,
    robust_ylim,
    save_figure,
)
from jaxlr.report.history_plots import (
    accuracy_series,
    accuracy_ylim,
    early_stopping_vlines,
    loss_series,
    loss_styles,
    loss_ylim,
    plot_history,
)
from jaxlr.report.image_plots import (
    plot_confusion,
    plot_heatmap,
    plot_image_grid,
    plot_weight_images,
)
from jaxlr.report.sweep_plots import (
    plot_search_scatter,
    plot_sweep_curves,
    plot_sweep_heatmaps,
    sweep_point_label,
)

__all__ = [
    "DPI",
    "accuracy_series",
    "accuracy_ylim",
    "early_stopping_vlines",
    "loss_series",
    "loss_styles",
    "loss_ylim",
    "new_figure",
    "plot_bar",
    "plot_confusion",
    "plot_curves",
    "plot_heatmap",
    "plot_history",
    "plot_image_grid",
    "plot_search_scatter",
    "plot_side_by_side",
    "plot_sweep_curves",
    "plot_sweep_heatmaps",
    "plot_weight_images",
    "robust_ylim",
    "save_figure",
    "sweep_point_label",
]
