"""Image-like figure primitives (host side only): weights as images, image grids, heatmaps and
the confusion matrix, all drawn with `imshow` on the canvas of `jaxlr.report.figures` (which
says how figures are written and returned).

Dimension legend:
  N  images
  H, W  image height and width (28 x 28 for MNIST)
  K  classes (one weight image per class)
  P  pixels, H * W
  R, C  rows and columns of a heatmap
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlr.report.figures import DPI, _draw, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
