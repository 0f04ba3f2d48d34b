"""Preprocessing of MNIST-style images: flatten, scale, bias feature, one-hot, binary subsets.

Dimension legend: N examples, H image height, W image width, D features (H*W, plus one
with the bias trick: 784 -> 785), K classes.

Preprocessing functions (`flatten`, `scale_images`, `add_bias_feature`, `one_hot`,
`preprocess`) take numpy or jax arrays and return the same kind; they are jit-compatible on
jax arrays. `binary_subset` has data-dependent sizes: host side only. Splits are in
`jaxlr.data.splits`, mini-batch indices in `jaxlr.engine.batches`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------
# Preprocessing: pure, numpy in -> numpy out, jax in -> jax out (jit-compatible).


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def flatten(x_NHW):
    """Flattens every example to a vector.

    Args:
      x_NHW: images [N, H, W] (any rank >= 2; all but the first axis are flattened).

    Returns:
      x_ND [N, H*W].
    """
    if x_NHW.ndim < 2:
        raise ValueError(f"flatten: need rank >= 2, got shape {x_NHW.shape}")
    return x_NHW.reshape(x_NHW.shape[0], -1)


SCALE_MODES = ("unit", "symmetric")


def scale_images(x, mode: str = "symmetric", dtype=np.float32):
    """Scales integer pixel values 0..255 to floats.

    Args:
      x: integer array of any shape (uint8 images).
      mode: "unit" -> x/255 in [0, 1]; "symmetric" -> x/127.5 - 1 in [-1, 1] (TDT4265).
      dtype: float dtype of the result.

    Returns:
      Float array of the same shape.
    """
    if not np.issubdtype(x.dtype, np.integer):
        # Guards against scaling twice.
        raise ValueError(f"scale_images: expected integer pixels 0..255, got dtype {x.dtype}")
    xf = x.astype(dtype)
    if mode == "unit":
        return xf / 255.0
    if mode == "symmetric":
        # = x/127.5 - 1, but one rounding instead of two (exact subtraction first), so pixel
        # 127 gives the float nearest -1/255 rather than a cancellation error.
        return (xf - 127.5) / 127.5
    raise ValueError(f"scale_images: mode must be one of {SCALE_MODES}, got {mode!r}")


def add_bias_feature(x_ND):
    """Appends a constant-1 feature (the bias trick): [N, D] -> [N, D+1], e.g. 784 -> 785.

    Args:
      x_ND: features [N, D] (any leading axes; the feature axis is the last).

    Returns:
      x_ND with a column of ones appended, same dtype.
    """
    xp = _xp(x_ND)
    return xp.concatenate([x_ND, xp.ones_like(x_ND[..., :1])], axis=-1)


def one_hot(y_N, num_classes: int, dtype=np.float32):
    """One-hot encodes integer labels.

    Args:
      y_N: integer labels [N] in 0..num_classes-1 (checked for numpy input; under jax an
        out-of-range label gives a row of zeros).
      num_classes: K.
      dtype: dtype of the result.

    Returns:
      Y_NK with Y_NK[n, y_N[n]] = 1 and zeros elsewhere.
    """
    xp = _xp(y_N)
    if xp is np:
        y_N = np.asarray(y_N)
        if y_N.size and (y_N.min() < 0 or y_N.max() >= num_classes):
            raise ValueError(
                f"one_hot: labels must lie in 0..{num_classes - 1}, found {y_N.min()}..{y_N.max()}"
            )
    return (y_N[..., None] == xp.arange(num_classes)).astype(dtype)


def preprocess(x_NHW, scale: str = "symmetric", bias: bool = True, dtype=np.float32):
    """Flattens, scales and (optionally) appends the bias feature.

    Args:
      x_NHW: uint8 images [N, H, W].
      scale: "unit" or "symmetric" (see `scale_images`).
      bias: append the constant-1 feature.
      dtype: float dtype of the result.

    Returns:
      x_ND [N, H*W (+1)].
    """
    x_ND = scale_images(flatten(x_NHW), scale, dtype)
    return add_bias_feature(x_ND) if bias else x_ND


def binary_subset(x, y_N, positive: int = 2, negative: int = 3):
    """Keeps the examples of two classes and relabels them positive -> 1, negative -> 0.

    Host side (the result size depends on the data). Order is preserved.

    Args:
      x: examples [N, ...].
      y_N: integer labels [N].
      positive: class that becomes label 1.
      negative: class that becomes label 0.

    Returns:
      (x_sub, y01) with y01 of y_N's dtype.
    """
    if positive == negative:
        raise ValueError(f"binary_subset: positive and negative are both {positive}")
    y_np = np.asarray(y_N)
    if len(x) != len(y_np):
        raise ValueError(f"binary_subset: {len(x)} examples but {len(y_np)} labels")
    keep = np.flatnonzero((y_np == positive) | (y_np == negative))
    if keep.size == 0:
        raise ValueError(f"binary_subset: no example has label {positive} or {negative}")
    y01 = (y_np[keep] == positive).astype(y_np.dtype)
    return x[keep], (jnp.asarray(y01) if isinstance(y_N, jax.Array) else y01)


# ---------------------------------------------------------------------------------------------
# Splits (host side).


# ---------------------------------------------------------------------------------------------
# Mini-batches (jax; inside jit the sizes must be static Python ints).
