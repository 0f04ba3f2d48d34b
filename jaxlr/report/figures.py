"""Figure primitives (host side only): the canvas, curves, a row of curve panels, bars, y limits.

Every `plot_*` function takes numpy-convertible arrays and draws one figure. Given a path, it
writes the figure as a PNG atomically (rendered into memory, then
`jaxlr.host.io.atomic_write_bytes`), so a reader never sees a half-written image, releases it
and returns the path; given `path=None` it returns the `matplotlib.figure.Figure` (a notebook
shows it inline). Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never
through `pyplot`: no global figure registry to leak into, no interactive backend is touched.
matplotlib is imported on the first figure, not with this module. The image-like primitives
are in `jaxlr.report.image_plots`, a history's panels in `jaxlr.report.history_plots`, a sweep's
figures in `jaxlr.report.sweep_plots`.

Dimension legend:
  T  points of a curve
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlr.host.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


DPI = 120
_PANEL_SIZE = (6.4, 4.4)  # inches per curve panel: readable at DPI in a Markdown report


def new_figure(figsize: tuple[float, float]) -> Figure:
    """Makes an empty figure on an Agg canvas (no pyplot state); imports matplotlib.

    Args:
      figsize: (width, height) in inches.

    Returns:
      The figure; add axes with `fig.subplots(...)` and write it with `save_figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Renders `fig` as PNG and writes it atomically to `path`, then releases the figure.

    Args:
      fig: a figure, e.g. from `new_figure`.
      path: destination file (parent folders are created).
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
    """
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        # Drops the artists now rather than waiting for the garbage collector; long sweeps
        # draw hundreds of figures.
        fig.clear()
    return atomic_write_bytes(path, buf.getvalue())


def _draw(build: Callable[[], Figure], path: str | os.PathLike | None, dpi: int) -> Path | Figure:
    fig = build()
    if path is None:
        return fig
    try:
        return save_figure(fig, path, dpi=dpi)
    finally:
        fig.clear()


def _as_1d(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    return arr


def _draw_curves(
    ax,
    series: Mapping[str, tuple[Any, Any]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
    logx: bool = False,
    marker: str | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    vlines: Mapping[str, Any] | None = None,
    legend_loc: str = "best",
) -> None:
    if not series:
        raise ValueError(f"plot {title!r}: no series to draw")
    for name, xy in series.items():
        if len(xy) != 2:
            raise ValueError(f"series {name!r}: expected an (x, y) pair, got {len(xy)} items")
        x = _as_1d(xy[0], f"series {name!r} x")
        y = _as_1d(xy[1], f"series {name!r} y")
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: x has shape {x.shape} but y has {y.shape}")
        kwargs = {"marker": marker} if marker else {}
        kwargs.update((styles or {}).get(name, {}))
        # A single point would be an invisible zero-length line without a marker.
        if x.size == 1 and "marker" not in kwargs:
            kwargs["marker"] = "o"
        ax.plot(x, y, label=name, **kwargs)
    for i, (name, spec) in enumerate((vlines or {}).items()):
        kwargs = {"color": f"C{len(series) + i}", "linestyle": "--", "linewidth": 1.0}
        if isinstance(spec, Mapping):
            kwargs.update({k: v for k, v in spec.items() if k != "x"})
            spec = spec["x"]
        ax.axvline(float(spec), label=name, **kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.3, which="both" if (logx or logy) else "major")
    ax.legend(loc=legend_loc, fontsize="small")


def plot_curves(
    path: str | os.PathLike | None,
    series: Mapping[str, tuple[Any, Any]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
    logx: bool = False,
    marker: str | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    vlines: Mapping[str, Any] | None = None,
    figsize: tuple[float, float] = _PANEL_SIZE,
    dpi: int = DPI,
) -> Path | Figure:
    """Draws several named curves on one axes and writes the PNG.

    Args:
      path: destination PNG, or None to get the figure back.
      series: legend label -> (x, y), two 1-D arrays of equal length each; NaN values
        leave gaps (e.g. a diverged run).
      xlabel, ylabel, title: axis labels and title.
      ylim: (low, high) limits of the y axis, or None for automatic.
      logy, logx: logarithmic y / x axis.
      marker: matplotlib marker for every curve (e.g. "o" for few points).
      styles: legend label -> extra `Axes.plot` keyword arguments (color, linestyle, ...).
      vlines: legend label -> x position of a dashed vertical marker (e.g. the step where
        early stopping fired), or a dict {"x": position, **`Axes.axvline` kwargs}.
      figsize: (width, height) in inches.
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
    """

    def build():
        fig = new_figure(figsize)
        _draw_curves(
            fig.subplots(),
            series,
            xlabel=xlabel,
            ylabel=ylabel,
            title=title,
            ylim=ylim,
            logy=logy,
            logx=logx,
            marker=marker,
            styles=styles,
            vlines=vlines,
        )
        return fig

    return _draw(build, path, dpi)


_PANEL_KEYS = {
    "series",
    "xlabel",
    "ylabel",
    "title",
    "ylim",
    "logy",
    "logx",
    "marker",
    "styles",
    "vlines",
}


def plot_side_by_side(
    path: str | os.PathLike | None,
    panels: Sequence[Mapping[str, Any]],
    *,
    suptitle: str | None = None,
    sharey: bool = False,
    panel_size: tuple[float, float] = _PANEL_SIZE,
    dpi: int = DPI,
) -> Path | Figure:
    """Draws a row of curve panels (each like `plot_curves`) and writes the PNG.

    Args:
      path: destination PNG, or None to get the figure back.
      panels: one dict per axes, left to right, with the keyword arguments of
        `plot_curves`: "series", "xlabel", "ylabel", "title" (required) and optionally
        "ylim", "logy", "logx", "marker", "styles", "vlines".
      suptitle: title above the whole row.
      sharey: share the y axis between panels (for direct comparison).
      panel_size: (width, height) in inches of one panel.
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
    """
    if not panels:
        raise ValueError("plot_side_by_side: no panels")
    for i, panel in enumerate(panels):
        unknown = set(panel) - _PANEL_KEYS
        missing = {"series", "xlabel", "ylabel", "title"} - set(panel)
        if unknown or missing:
            raise ValueError(
                f"panel {i}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                f"valid keys: {sorted(_PANEL_KEYS)}"
            )

    def build():
        fig = new_figure((panel_size[0] * len(panels), panel_size[1]))
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=sharey))
        for ax, panel in zip(axes, panels, strict=True):
            _draw_curves(ax, **panel)
        if suptitle:
            fig.suptitle(suptitle)
        return fig

    return _draw(build, path, dpi)


def plot_bar(
    path: str | os.PathLike | None,
    labels: Sequence[str],
    values: Any,
    *,
    xlabel: str | None = None,
    ylabel: str,
    title: str,
    errors: Any = None,
    fmt: str | None = "{:.3f}",
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
    dpi: int = DPI,
) -> Path | Figure:
    """Draws one bar per label, optionally with error bars and value annotations.

    Args:
      path: destination PNG, or None to get the figure back.
      labels: bar labels (x axis).
      values: one value per label.
      xlabel, ylabel, title: axis labels and title.
      errors: one symmetric error per bar (e.g. a standard deviation over seeds), or None.
      fmt: format of the value written above each bar, or None for no annotation.
      ylim: (low, high) limits of the y axis, or None for automatic.
      logy: logarithmic y axis.
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
    """
    vals = _as_1d(values, "values")
    if len(labels) != vals.size:
        raise ValueError(f"{len(labels)} labels for {vals.size} values")
    errs = None if errors is None else _as_1d(errors, "errors")
    if errs is not None and errs.size != vals.size:
        raise ValueError(f"{errs.size} errors for {vals.size} values")

    def build():
        fig = new_figure((max(4.5, 0.8 * vals.size + 2.0), 4.2))
        ax = fig.subplots()
        x = np.arange(vals.size)
        bars = ax.bar(
            x,
            np.nan_to_num(vals, nan=0.0),
            yerr=errs,
            capsize=4 if errs is not None else 0,
            color="tab:blue",
        )
        ax.set_xticks(
            x,
            labels=list(labels),
            rotation=30 if vals.size > 6 else 0,
            ha="right" if vals.size > 6 else "center",
        )
        if fmt is not None:
            ax.bar_label(
                bars,
                labels=[fmt.format(v) if np.isfinite(v) else "nan" for v in vals],
                padding=2,
                fontsize=8,
            )
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(True, axis="y", alpha=0.3)
        return fig

    return _draw(build, path, dpi)


def robust_ylim(
    arrays: Sequence[Any],
    *,
    skip: float = 0.05,
    lo_q: float = 1.0,
    hi_q: float = 99.0,
    pad: float = 0.15,
    floor: float | None = None,
    ceil: float | None = None,
) -> tuple[float, float] | None:
    """y limits that show the later part of curves in detail (the first steps are far off).

    Drops the first `skip` fraction of every curve and its non-finite values, takes the
    `lo_q` and `hi_q` percentiles of what is left, widens that span (at least 1e-3) by `pad`
    on each side and clips it to `floor` / `ceil`.

    Args:
      arrays: 1-D curves.
      skip: fraction of each curve's start left out.
      lo_q, hi_q: percentiles (0-100) for the low and high limit.
      pad: margin as a fraction of the span.
      floor, ceil: bounds the limits may not cross (None: unbounded).

    Returns:
      (low, high), or None when no finite value is left (matplotlib then chooses).
    """
    parts = []
    for a in arrays:
        a = np.asarray(a, np.float64)
        a = a[int(len(a) * skip) :]
        parts.append(a[np.isfinite(a)])
    vals = np.concatenate(parts) if parts else np.zeros(0)
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, lo_q), np.percentile(vals, hi_q)
    span = max(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    return (float(lo), float(hi))
