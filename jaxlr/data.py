"""MNIST-style data for training: preprocessing, splits and mini-batch indices.

Dimension legend: N examples, H image height, W image width, D features (H*W, plus one
with the bias trick: 784 -> 785), K classes, M batches per epoch, B batch size.

Preprocessing functions (`flatten`, `scale_images`, `add_bias_feature`, `one_hot`,
`preprocess`) take numpy or jax arrays and return the same kind; they are jit-compatible on
jax arrays. `binary_subset` and the splits have data-dependent sizes: host side only.
`epoch_batches` is jax and runs inside `jit`/`vmap`.

The files themselves live in `jaxlr.datasets`: `idx` (IDX format, `DataError`), `mnist`
(registry, lookup, verified download, `load_dataset`), `fake` (`write_fake_dataset` for
tests). Their names are still reachable here (`data.load_dataset`, `data.write_idx`,
`data.DATASETS`, ...) for older code, but only on first use: importing this module (as the
training engine does) does not import the downloader.
"""

from __future__ import annotations

import importlib
import operator
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxlr.datasets.mnist import Dataset

# Names re-exported from jaxlr.datasets, imported when first used (module __getattr__).
_LAZY = {
    "jaxlr.datasets.idx": (
        "DataError",
        "ChecksumError",
        "IDX_DTYPES",
        "parse_idx",
        "encode_idx",
        "write_idx",
        "read_idx",
        "load_idx_pair",
    ),
    "jaxlr.datasets.mnist": (
        "ROLES",
        "FileSpec",
        "DatasetSpec",
        "DATASETS",
        "get_spec",
        "cache_dir",
        "check_data_dir",
        "candidate_dirs",
        "mirrors_for",
        "download_file",
        "download_dataset",
        "find_dataset_files",
        "Dataset",
        "load_dataset",
        "clear_cache",
    ),
    "jaxlr.datasets.fake": ("write_fake_dataset", "fake_arrays"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))


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


class Split(NamedTuple):
    """Training and validation examples."""

    x_train: np.ndarray  # [N_train, ...]
    y_train: np.ndarray  # [N_train]
    x_val: np.ndarray  # [N_val, ...]
    y_val: np.ndarray  # [N_val]


def _check_xy(x, y) -> int:
    if len(x) != len(y):
        raise ValueError(f"{len(x)} examples but {len(y)} labels")
    return len(x)


def _check_count(what: str, n, low: int, high: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not low <= n <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {n!r}")
    return int(n)


def tdt4265_split(
    ds: Dataset, digits: tuple[int, int] | None = None, num_train: int = 20000
) -> Split:
    """The TDT4265 Assignment 1 protocol: the first `num_train` training images for training,
    the whole test set for validation; for a binary task the two digits are kept after slicing.

    Images are returned as they are (uint8 [N, H, W]): apply `preprocess` yourself.

    Args:
      ds: the data set.
      digits: (positive, negative), e.g. (2, 3): digit 2 -> label 1, digit 3 -> label 0;
        None keeps all classes.
      num_train: how many of the first training images to take.

    Returns:
      Split (for MNIST with digits=(2, 3): 4,005 training and 2,042 validation examples).
    """
    n = _check_xy(ds.x_train, ds.y_train)
    num_train = _check_count("num_train", num_train, 1, n)
    x_tr, y_tr = ds.x_train[:num_train], ds.y_train[:num_train]
    x_val, y_val = ds.x_test, ds.y_test
    if digits is not None:
        positive, negative = digits
        x_tr, y_tr = binary_subset(x_tr, y_tr, positive, negative)
        x_val, y_val = binary_subset(x_val, y_val, positive, negative)
    return Split(x_tr, y_tr, x_val, y_val)


def first_last_split(x, y, num_first: int, num_last: int) -> Split:
    """The first `num_first` examples for training, the last `num_last` for validation.

    Raises:
      ValueError: a size <= 0, or num_first + num_last > N (the parts would overlap).
    """
    n = _check_xy(x, y)
    num_first = _check_count("num_first", num_first, 1, n)
    num_last = _check_count("num_last", num_last, 1, n - num_first)
    return Split(x[:num_first], y[:num_first], x[n - num_last :], y[n - num_last :])


def random_split(x, y, num_val: int, seed: int) -> Split:
    """A seeded random split: `num_val` examples for validation, the rest for training.

    Both parts keep the original order of their examples (only membership is random).

    Raises:
      ValueError: num_val not in 1..N-1.
    """
    n = _check_xy(x, y)
    num_val = _check_count("num_val", num_val, 1, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:num_val]), np.sort(perm[num_val:])
    return Split(x[train], y[train], x[val], y[val])


# ---------------------------------------------------------------------------------------------
# Mini-batches (jax; inside jit the sizes must be static Python ints).


def num_batches(num_examples: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches in one epoch.

    Args:
      num_examples: N > 0.
      batch_size: B > 0.
      drop_last: drop the last partial batch (as the course code does); else count it.

    Returns:
      M = N // B, or ceil(N / B) when drop_last is False; always >= 1.

    Raises:
      ValueError: non-positive sizes, or no full batch with drop_last.
    """
    n = operator.index(num_examples)
    b = operator.index(batch_size)
    if n <= 0 or b <= 0:
        raise ValueError(f"num_examples and batch_size must be > 0, got {n} and {b}")
    m = n // b if drop_last else -(-n // b)
    if m == 0:
        raise ValueError(
            f"batch_size={b} > num_examples={n} with drop_last=True: an epoch "
            "would have no batch (use a smaller batch or drop_last=False)"
        )
    return m


def epoch_batches(
    key, num_examples: int, batch_size: int, *, shuffle: bool, drop_last: bool = True
):
    """Example indices of one epoch's mini-batches, for gathering inside `jit`.

    Without shuffling the order is 0..N-1 (the course code's order). Works under `jit`
    (sizes static) and `vmap` over keys.

    Args:
      key: jax PRNG key (ignored, may be None, when shuffle is False).
      num_examples: N, a static Python int.
      batch_size: B, a static Python int.
      shuffle: a fresh permutation from `key`.
      drop_last: drop the last partial batch; if False it is padded with index 0.

    Returns:
      (idx_MB int32 [M, B], mask_MB bool [M, B]); mask_MB is False exactly on padding.
    """
    m = num_batches(num_examples, batch_size, drop_last)
    total = m * batch_size
    if shuffle:
        if key is None:
            raise ValueError("epoch_batches: shuffle=True needs a PRNG key")
        order = jax.random.permutation(key, num_examples).astype(jnp.int32)
    else:
        order = jnp.arange(num_examples, dtype=jnp.int32)
    if total <= num_examples:
        idx = order[:total]
        mask = jnp.ones(total, dtype=bool)
    else:
        idx = jnp.concatenate([order, jnp.zeros(total - num_examples, dtype=jnp.int32)])
        mask = jnp.arange(total) < num_examples
    return idx.reshape(m, batch_size), mask.reshape(m, batch_size)
