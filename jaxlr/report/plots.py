"""Figure primitives and generic panels for reports (host side only).

Primitives: curves, a row of curve panels, bars, heatmaps, image grids, weights as images, a
confusion matrix. Generic panels built from them: the loss and accuracy of a training history
(`plot_history` and the series / limits it uses) and the figures of a sweep (heatmaps, curves,
random-search scatter). A figure that only one experiment draws lives in that experiment's
module (`experiments/*.py`), built from these.

Every `plot_*` function takes numpy-convertible arrays and draws one figure. Given a path, it
writes the figure as a PNG atomically (rendered into memory, then
`jaxlr.host.io.atomic_write_bytes`), so a reader never sees a half-written image, releases it
and returns the path; given `path=None` it returns the `matplotlib.figure.Figure` (a notebook
shows it inline). Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never
through `pyplot`: no global figure registry to leak into, no interactive backend is touched.
matplotlib is imported on the first figure, not with this module.

Dimension legend:
  N  images
  H, W  image height and width (28 x 28 for MNIST)
  K  classes (one weight image per class)
  P  pixels, H * W
  R, C  rows and columns of a heatmap
  T  steps of a training history
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlr.host.io import atomic_write_bytes
from jaxlr.report.metrics import running_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    path: str | os.PathLike | None,
    rows: Mapping[str, Any],
    *,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    image_shape: tuple[int, int] | None = None,
    cmap: str = "gray",
    scale: str = "each",
    dpi: int = DPI,
) -> Path | Figure:
    """Draws rows of per-class weight images (e.g. ten 28x28 images per row), labelled.

    Args:
      path: destination PNG, or None to get the figure back.
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
      The destination as a Path, or the Figure when `path` is None.
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
    path: str | os.PathLike | None,
    images_NHW: Any,
    titles: Sequence[str] | None,
    nrows: int,
    ncols: int,
    suptitle: str | None = None,
    *,
    cmap: str = "gray",
    image_shape: tuple[int, int] | None = None,
    dpi: int = DPI,
) -> Path | Figure:
    """Draws images on an nrows x ncols grid (row by row), each with its own title.

    Args:
      path: destination PNG, or None to get the figure back.
      images_NHW: N <= nrows * ncols images, [N, H, W] or flattened [N, H*W].
      titles: N titles (or None for none).
      nrows, ncols: grid size; cells beyond N stay empty.
      suptitle: figure title.
      cmap: colour map (each image is stretched to its own min..max).
      image_shape: (H, W) when the images are flattened and not square.
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
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
    path: str | os.PathLike | None,
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
) -> Path | Figure:
    """Draws a matrix as a coloured grid with every cell's value written in it.

    Args:
      path: destination PNG, or None to get the figure back.
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
      The destination as a Path, or the Figure when `path` is None.
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


# ---------------------------------------------------------------------------------------------
# Training histories (the experiments' loss and accuracy figures).


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
      es: a run's `early_stopping` metrics (`jaxlr.engine.train.early_stopping_summary`), or None.
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


def plot_confusion(
    path: str | os.PathLike | None,
    cm_KK: Any,
    title: str,
    *,
    class_names: Sequence[str] | None = None,
    noun: str = "class",
    dpi: int = DPI,
) -> Path | Figure:
    """Confusion matrix with every non-zero count written in its cell.

    Colours follow log(1 + count): on a linear scale the diagonal (about 1000 per class)
    would leave the handful of errors per cell invisible.

    Args:
      path: destination PNG, or None to get the figure back.
      cm_KK: counts, row = true class, column = predicted class (e.g.
        `jaxlr.report.metrics.confusion_matrix`).
      title: the figure's title.
      class_names: K tick labels (default "0", "1", ...), e.g. the data set's
        (`jaxlr.data.registry.DatasetSpec.class_names`).
      noun: what a class is, for the axis labels ("predicted digit", "true class").
      dpi: resolution.

    Returns:
      The destination as a Path, or the Figure when `path` is None.
    """
    cm_KK = np.asarray(cm_KK)
    if cm_KK.ndim != 2 or cm_KK.shape[0] != cm_KK.shape[1] or cm_KK.size == 0:
        raise ValueError(f"cm_KK must be a non-empty square [K, K] matrix, got {cm_KK.shape}")
    if np.any(cm_KK < 0) or not np.all(np.isfinite(cm_KK)):
        raise ValueError("cm_KK must hold counts >= 0, got negative or non-finite entries")
    k = cm_KK.shape[0]
    labels = [str(i) for i in range(k)] if class_names is None else list(class_names)
    if len(labels) != k:
        raise ValueError(f"{len(labels)} class names for a {k} x {k} confusion matrix")
    shade_KK = np.log1p(cm_KK.astype(np.float64))
    # Names longer than a few characters ("Ankle boot") would overlap on the x axis.
    slanted = max(len(t) for t in labels) > 3

    def build():
        fig = new_figure((0.75 * k + 2.0, 0.65 * k + 1.2))
        ax = fig.subplots()
        im = ax.imshow(shade_KK, cmap="Blues", vmin=0.0)
        cbar = fig.colorbar(im, ax=ax)
        ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if t <= max(1, cm_KK.max())]
        cbar.set_ticks(np.log1p(ticks), labels=[str(t) for t in ticks])
        cbar.set_label("images (log scale)")
        if slanted:
            ax.set_xticks(range(k), labels=labels, rotation=35, ha="right")
        else:
            ax.set_xticks(range(k), labels=labels)
        ax.set_yticks(range(k), labels=labels)
        ax.set_xlabel(f"predicted {noun}")
        ax.set_ylabel(f"true {noun}")
        ax.set_title(title)
        top = shade_KK.max() or 1.0
        for i in range(k):
            for j in range(k):
                if cm_KK[i, j]:
                    color = "white" if shade_KK[i, j] > 0.6 * top else "black"
                    ax.text(
                        j, i, str(cm_KK[i, j]), ha="center", va="center", color=color, fontsize=8
                    )
        return fig

    return _draw(build, path, dpi)


# ---------------------------------------------------------------------------------------------
# Sweeps.

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
    from jaxlr.engine.sweep import mean_over

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
