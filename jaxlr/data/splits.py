"""The data an experiment trains on: `load_splits(DataConfig)` -> training, validation, test.

Host side: loads a registered data set (`jaxlr.data.registry.load_dataset`), takes the split that
`DataConfig.split` names, selects two digits for the binary model, and preprocesses. Counts
that only the loaded data can check (how many 2s and 3s the first 20,000 images hold) raise
`ConfigError` here, before any training; nothing is ever silently sliced or capped.

Dimension legend: N training examples, V validation examples, M test examples, D features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from jaxlr.data import images as jimages
from jaxlr.data import registry as jregistry
from jaxlr.data.config import DataConfig
from jaxlr.engine.config import ConfigError
from jaxlr.engine.step import Data

if TYPE_CHECKING:
    from jaxlr.data.registry import Dataset


class Splits(NamedTuple):
    """Preprocessed data of an experiment.

    Attributes:
      data: training and validation arrays (`jaxlr.engine.step.Data`).
      x_test, y_test: test features and labels; for splits tdt4265 and full, whose
        validation set is the test set, these are the validation arrays.
      images_val, images_test: the raw uint8 images [V, 28, 28] / [M, 28, 28] (for figures).
      test_index: index of every test example in the data set's test set [M].
      test_is_val: whether the test arrays are the validation arrays.
      num_train_images: images taken from the training set before digits were selected.
      images_train: the raw uint8 training images [N, 28, 28], the source of
        `optimum_features` (the float64 features every exact optimum is solved on).
    """

    data: Data
    x_test: Any
    y_test: Any
    images_val: Any
    images_test: Any
    test_index: Any
    test_is_val: bool
    num_train_images: int
    images_train: Any = None


def float_dtype(cfg: DataConfig) -> np.dtype:
    """The numpy dtype of `cfg.dtype`; float64 needs JAX's 64-bit mode switched on."""
    import jax

    if cfg.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError(
            "dtype",
            cfg.dtype,
            "needs JAX's 64-bit mode (jax.config.update('jax_enable_x64', True))",
        )
    return np.dtype(cfg.dtype)


def _digit_subset(x, y, cfg: DataConfig, index=None):
    pos, neg = cfg.digits
    y = np.asarray(y)
    keep = np.flatnonzero((y == pos) | (y == neg))
    idx = keep if index is None else np.asarray(index)[keep]
    return x[keep], (y[keep] == pos).astype(np.int32), idx


def _describe(cfg: DataConfig) -> str:
    return f"digits {cfg.digits[0]} and {cfg.digits[1]}" if cfg.binary else "all digits"


def num_train_images(cfg: DataConfig, total: int) -> int:
    """Training images the split takes from the start of the training set."""
    if cfg.split == "full":
        return total
    if cfg.split == "holdout":
        n = total - cfg.num_val if cfg.num_train is None else cfg.num_train
        if n < 1 or n + cfg.num_val > total:
            raise ConfigError(
                "num_val", cfg.num_val, f"num_train + num_val exceed the {total} training images"
            )
        return n
    n = total if cfg.num_train is None else cfg.num_train
    if n > total:
        raise ConfigError("num_train", n, f"must be at most {total} (the training images)")
    return n


def load_splits(cfg: DataConfig) -> Splits:
    """Loads, splits and preprocesses the data that `cfg` describes.

    Raises:
      ConfigError: a count beyond what the data holds (naming the field).
      jaxlr.data.idx.DataError: files missing or invalid.
    """
    dtype = float_dtype(cfg)
    ds = jregistry.load_dataset(cfg.dataset, cfg.data_dir or None)
    total = int(ds.x_train.shape[0])
    n = num_train_images(cfg, total)
    xtr, ytr = ds.x_train[:n], np.asarray(ds.y_train[:n])
    test_idx = np.arange(ds.x_test.shape[0])
    if cfg.split == "holdout":
        xva, yva = ds.x_train[total - cfg.num_val :], np.asarray(ds.y_train[total - cfg.num_val :])
        xte, yte = ds.x_test, np.asarray(ds.y_test)
    else:
        xva, yva = ds.x_test, np.asarray(ds.y_test)
        xte = yte = None
    if cfg.binary:
        xtr, ytr, _ = _digit_subset(xtr, ytr, cfg)
        if xte is not None:
            xva, yva, _ = _digit_subset(xva, yva, cfg)
            xte, yte, test_idx = _digit_subset(xte, yte, cfg, test_idx)
        else:  # the validation set is the test set
            xva, yva, test_idx = _digit_subset(xva, yva, cfg, test_idx)
        if len(ytr) == 0 or len(yva) == 0:
            raise ConfigError("digits", cfg.digits, "no image of these digits in the split")
    else:
        ytr, yva = ytr.astype(np.int32), yva.astype(np.int32)
        if yte is not None:
            yte = yte.astype(np.int32)
    if cfg.max_examples is not None:
        k = cfg.max_examples
        if k > len(ytr):
            raise ConfigError(
                "max_examples",
                k,
                f"must be at most {len(ytr)} (the training examples of {_describe(cfg)} in "
                f"the first {n} images)",
            )
        xtr, ytr, xva, yva = xtr[:k], ytr[:k], xva[:k], yva[:k]
        if xte is None:
            test_idx = test_idx[:k]
    if cfg.num_test is not None:
        held = len(yte) if yte is not None else len(yva)
        if cfg.num_test > held:
            raise ConfigError(
                "num_test",
                cfg.num_test,
                f"must be at most {held} (test images of {_describe(cfg)})",
            )
        if xte is not None:
            xte, yte, test_idx = xte[: cfg.num_test], yte[: cfg.num_test], test_idx[: cfg.num_test]

    def prep(x):
        return features(cfg, x, dtype)

    xtr = np.asarray(xtr)
    data = Data(prep(xtr), np.asarray(ytr, np.int32), prep(xva), np.asarray(yva, np.int32))
    if xte is not None:
        return Splits(data, prep(xte), np.asarray(yte, np.int32), xva, xte, test_idx, False, n, xtr)
    return Splits(data, data.x_val, data.y_val, xva, xva, test_idx, True, n, xtr)


def features(cfg: DataConfig, images, dtype) -> np.ndarray:
    """The features of uint8 `images` [N, 28, 28] under `cfg`'s preprocessing, in `dtype`.

    Scaling and the bias column as `cfg` says; computed in `dtype` from the integers (a
    float64 result is not a float32 one upcast). Returns x_ND [N, D].
    """
    return jimages.preprocess(
        np.asarray(images), scale=cfg.scale, bias=cfg.bias_feature, dtype=np.dtype(dtype)
    )


def optimum_features(cfg: DataConfig, splits: Splits) -> np.ndarray:
    """The float64 training features of `splits`: what every exact optimum is solved on.

    The same examples, in the same order, and the same preprocessing (scale, bias column) as
    `splits.data.x_train`, but rebuilt from the uint8 images in float64 whatever `cfg.dtype`
    is, so a float32 run's optimum is the optimum of the images, equal to a float64 run's.
    Needs no 64-bit JAX (numpy on the host). Returns x_ND [N, D] float64.
    """
    if splits.images_train is None:
        raise ValueError("optimum_features: these splits carry no training images")
    return features(cfg, splits.images_train, np.float64)


def test_subset(cfg: DataConfig):
    """The first `num_test` test images of `cfg`'s digits (all when num_test is 'all').

    Returns:
      (images [M, 28, 28] uint8, x_MD features, y_M labels int32, index_M in the test set).
    """
    dtype = float_dtype(cfg)
    ds = jregistry.load_dataset(cfg.dataset, cfg.data_dir or None)
    idx = np.arange(ds.x_test.shape[0])
    images, y = ds.x_test, np.asarray(ds.y_test).astype(np.int32)
    if cfg.binary:
        images, y, idx = _digit_subset(images, y, cfg, idx)
    if cfg.num_test is not None:
        if cfg.num_test > len(y):
            raise ConfigError(
                "num_test",
                cfg.num_test,
                f"must be at most {len(y)} (test images of {_describe(cfg)})",
            )
        images, y, idx = images[: cfg.num_test], y[: cfg.num_test], idx[: cfg.num_test]
    images = np.asarray(images)
    x = jimages.preprocess(images, scale=cfg.scale, bias=cfg.bias_feature, dtype=dtype)
    return images, x, np.asarray(y, np.int32), idx


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
        x_tr, y_tr = jimages.binary_subset(x_tr, y_tr, positive, negative)
        x_val, y_val = jimages.binary_subset(x_val, y_val, positive, negative)
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
