"""Figures for experiment reports (host side only): curves, image grids, heatmaps, bars.

Every function takes numpy-convertible arrays, draws one figure and writes it as a PNG
atomically (rendered into memory, then `jaxlr.io.atomic_write_bytes`), so a reader never
sees a half-written image. Figures are built with `matplotlib.figure.Figure` on an Agg
canvas, never through `pyplot`: no global figure registry to leak into, no interactive
backend is touched, and the figure is released as soon as the function returns.

Dimension legend:
  N  images
  H, W  image height and width (28 x 28 for MNIST)
  K  classes (one weight image per class)
  P  pixels, H * W
  R, C  rows and columns of a heatmap
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxlr.io import atomic_write_bytes

__all__ = [
    "DPI",
    "new_figure",
    "plot_bar",
    "plot_curves",
    "plot_heatmap",
    "plot_image_grid",
    "plot_side_by_side",
    "plot_weight_images",
    "save_figure",
]

DPI = 120
_PANEL_SIZE = (6.4, 4.4)  # inches per curve panel: readable at DPI in a Markdown report


def new_figure(figsize: tuple[float, float]) -> Figure:
    """Makes an empty figure on an Agg canvas (no pyplot state).

    Args:
      figsize: (width, height) in inches.

    Returns:
      The figure; add axes with `fig.subplots(...)` and write it with `save_figure`.
    """
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
      The destination as a Path.
    """
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        # Drops the artists now rather than waiting for the garbage collector; long sweeps
        # draw hundreds of figures.
        fig.clear()
    return atomic_write_bytes(path, buf.getvalue())


def _draw(build: Callable[[], Figure], path: str | os.PathLike, dpi: int) -> Path:
    fig = build()
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
    path: str | os.PathLike,
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
) -> Path:
    """Draws several named curves on one axes and writes the PNG.

    Args:
      path: destination PNG.
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
      The destination as a Path.
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
    path: str | os.PathLike,
    panels: Sequence[Mapping[str, Any]],
    *,
    suptitle: str | None = None,
    sharey: bool = False,
    panel_size: tuple[float, float] = _PANEL_SIZE,
    dpi: int = DPI,
) -> Path:
    """Draws a row of curve panels (each like `plot_curves`) and writes the PNG.

    Args:
      path: destination PNG.
      panels: one dict per axes, left to right, with the keyword arguments of
        `plot_curves`: "series", "xlabel", "ylabel", "title" (required) and optionally
        "ylim", "logy", "logx", "marker", "styles", "vlines".
      suptitle: title above the whole row.
      sharey: share the y axis between panels (for direct comparison).
      panel_size: (width, height) in inches of one panel.
      dpi: resolution.

    Returns:
      The destination as a Path.
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


def _images_NHW(images: Any, image_shape: tuple[int, int] | None, what: str) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 3:
        return arr
    if arr.ndim == 2:
        if image_shape is None:
            side = math.isqrt(arr.shape[1])
            if side * side != arr.shape[1]:
                raise ValueError(
                    f"{what}: {arr.shape[1]} pixels per image is not a square; "
                    "pass image_shape (did you forget to drop the bias row?)"
                )
            image_shape = (side, side)
        if image_shape[0] * image_shape[1] != arr.shape[1]:
            raise ValueError(
                f"{what}: {arr.shape[1]} pixels per image do not fit image_shape {image_shape}"
            )
        return arr.reshape(arr.shape[0], *image_shape)
    raise ValueError(f"{what}: expected [N, H, W] or [N, H*W] images, got shape {arr.shape}")


def plot_weight_images(
    path: str | os.PathLike,
    rows: Mapping[str, Any],
    *,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    image_shape: tuple[int, int] | None = None,
    cmap: str = "gray",
    scale: str = "each",
    dpi: int = DPI,
) -> Path:
    """Draws rows of per-class weight images (e.g. ten 28x28 images per row), labelled.

    Args:
      path: destination PNG.
      rows: row label -> weights_KP (one flattened image per class; drop the bias row
        of a `w_DK` first, e.g. `w_DK[:-1].T`) or images_KHW. Every row has K images.
      col_labels: K column titles (default "0", "1", ...).
      title: figure title.
      image_shape: (H, W) when the images are flattened and not square.
      cmap: colour map.
      scale: grey-level scaling: "each" (every image stretched to its own min..max, as
        `imshow` does by default), "row" (shared within a row) or "all" (shared by all,
        so that magnitudes are comparable between rows, e.g. lambda 0 versus 1).
      dpi: resolution.

    Returns:
      The destination as a Path.
    """
    if not rows:
        raise ValueError("plot_weight_images: no rows")
    if scale not in ("each", "row", "all"):
        raise ValueError(f"scale must be 'each', 'row' or 'all', got {scale!r}")
    imgs = {name: _images_NHW(w, image_shape, f"row {name!r}") for name, w in rows.items()}
    counts = {a.shape[0] for a in imgs.values()}
    if len(counts) != 1:
        raise ValueError(f"every row needs the same number of images, got {sorted(counts)}")
    (k,) = counts
    if col_labels is None:
        col_labels = [str(i) for i in range(k)]
    if len(col_labels) != k:
        raise ValueError(f"{len(col_labels)} column labels for {k} images per row")
    finite = [a[np.isfinite(a)] for a in imgs.values()]
    all_lim = (
        (min(f.min() for f in finite if f.size), max(f.max() for f in finite if f.size))
        if any(f.size for f in finite)
        else None
    )

    def build():
        fig = new_figure((1.3 * k + 1.2, 1.45 * len(imgs) + (0.5 if title else 0.1)))
        axes = np.asarray(fig.subplots(len(imgs), k, squeeze=False))
        for r, (name, arr) in enumerate(imgs.items()):
            row_lim = (np.nanmin(arr), np.nanmax(arr)) if np.isfinite(arr).any() else None
            for c in range(k):
                ax = axes[r, c]
                lim = {"each": None, "row": row_lim, "all": all_lim}[scale]
                vmin, vmax = lim if lim is not None else (None, None)
                ax.imshow(arr[c], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(col_labels[c])
                if c == 0:
                    ax.set_ylabel(name, rotation=0, ha="right", va="center")
        if title:
            fig.suptitle(title)
        return fig

    return _draw(build, path, dpi)


def plot_image_grid(
    path: str | os.PathLike,
    images_NHW: Any,
    titles: Sequence[str] | None,
    nrows: int,
    ncols: int,
    suptitle: str | None = None,
    *,
    cmap: str = "gray",
    image_shape: tuple[int, int] | None = None,
    dpi: int = DPI,
) -> Path:
    """Draws images on an nrows x ncols grid (row by row), each with its own title.

    Args:
      path: destination PNG.
      images_NHW: N <= nrows * ncols images, [N, H, W] or flattened [N, H*W].
      titles: N titles (or None for none).
      nrows, ncols: grid size; cells beyond N stay empty.
      suptitle: figure title.
      cmap: colour map (each image is stretched to its own min..max).
      image_shape: (H, W) when the images are flattened and not square.
      dpi: resolution.

    Returns:
      The destination as a Path.
    """
    imgs = _images_NHW(images_NHW, image_shape, "images_NHW")
    n = imgs.shape[0]
    if nrows < 1 or ncols < 1 or n > nrows * ncols:
        raise ValueError(f"{n} images do not fit a {nrows} x {ncols} grid")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")

    def build():
        fig = new_figure((1.5 * ncols + 0.2, 1.6 * nrows + (0.5 if suptitle else 0.1)))
        axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for i, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= n:
                ax.set_axis_off()
                continue
            ax.imshow(imgs[i], cmap=cmap, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
        if suptitle:
            fig.suptitle(suptitle)
        return fig

    return _draw(build, path, dpi)


def plot_heatmap(
    path: str | os.PathLike,
    values_2d: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    fmt: str = "{:.3f}",
    cmap: str = "viridis",
    colorbar_label: str | None = None,
    dpi: int = DPI,
) -> Path:
    """Draws a matrix as a coloured grid with every cell's value written in it.

    Args:
      path: destination PNG.
      values_2d: values_RC; NaN / inf cells (e.g. diverged runs) are left blank and
        marked "nan" / "inf".
      row_labels: R labels, top to bottom (y axis).
      col_labels: C labels, left to right (x axis).
      xlabel, ylabel, title: axis labels and title.
      fmt: format of the cell annotations.
      cmap: colour map.
      colorbar_label: label of the colour bar.
      dpi: resolution.

    Returns:
      The destination as a Path.
    """
    values_RC = np.asarray(values_2d, dtype=np.float64)
    if values_RC.ndim != 2:
        raise ValueError(f"values_2d must be 2-D, got shape {values_RC.shape}")
    r, c = values_RC.shape
    if len(row_labels) != r or len(col_labels) != c:
        raise ValueError(
            f"{len(row_labels)} row / {len(col_labels)} column labels for a {r} x {c} matrix"
        )
    masked = np.ma.masked_invalid(values_RC)

    def build():
        fig = new_figure((max(4.0, 0.9 * c + 2.5), max(3.0, 0.55 * r + 1.8)))
        ax = fig.subplots()
        im = ax.imshow(masked, cmap=cmap, aspect="auto")
        cbar = fig.colorbar(im, ax=ax)
        if colorbar_label:
            cbar.set_label(colorbar_label)
        ax.set_xticks(range(c), labels=list(col_labels))
        ax.set_yticks(range(r), labels=list(row_labels))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        finite = values_RC[np.isfinite(values_RC)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(r):
            for j in range(c):
                v = values_RC[i, j]
                text = fmt.format(v) if np.isfinite(v) else ("nan" if np.isnan(v) else "inf")
                # Dark text on the bright end of viridis-like maps, light text elsewhere.
                color = "black" if np.isfinite(v) and v > mid else "white"
                if not np.isfinite(v):
                    color = "red"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
        return fig

    return _draw(build, path, dpi)


def plot_bar(
    path: str | os.PathLike,
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
) -> Path:
    """Draws one bar per label, optionally with error bars and value annotations.

    Args:
      path: destination PNG.
      labels: bar labels (x axis).
      values: one value per label.
      xlabel, ylabel, title: axis labels and title.
      errors: one symmetric error per bar (e.g. a standard deviation over seeds), or None.
      fmt: format of the value written above each bar, or None for no annotation.
      ylim: (low, high) limits of the y axis, or None for automatic.
      logy: logarithmic y axis.
      dpi: resolution.

    Returns:
      The destination as a Path.
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
