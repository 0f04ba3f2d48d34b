"""Tiny random MNIST-like data sets for tests that must run without the real files.

Dimension legend: N examples, H image height, W image width, K classes.

`write_fake_dataset(folder, ...)` writes the four gzip IDX files under MNIST's file names.
Each class k has a fixed random pattern of bright pixels (a quarter of the pixels at 200, the
rest at 30); an image of class k is that pattern plus Gaussian noise (std 60), clipped to
0..255, except that one image in ten (`MISLABELED`) shows the pattern of a random class. So
a linear model learns it quickly but cannot pass about 91% accuracy (10 classes; about 95%
for two), and training curves do not saturate at 100%. Load it with
`jaxlr.data.registry.load_dataset("fake", folder)` (the registered data set "fake": any
sizes, no checksum, never downloaded), or under a real name with `verify=False`.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np

from jaxlr.data import idx

MISLABELED = 0.1  # fraction of images drawn from a random class's pattern

FILENAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _count(name: str, value, low: int, high: int | None = None) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or isinstance(value, bool) or n < low or (high is not None and n > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"write_fake_dataset: {name} must be an integer {allowed}, got {value!r}")
    return n


def fake_arrays(
    num_train: int,
    num_test: int,
    seed: int,
    image_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> dict[str, np.ndarray]:
    """The arrays `write_fake_dataset` writes, by role (no files).

    Returns:
      {"train_images": uint8 [N_train, H, W], "train_labels": uint8 [N_train],
       "test_images": uint8 [N_test, H, W], "test_labels": uint8 [N_test]}. Labels cycle
      through the classes in a random order, so every class appears once N >= K.
    """
    num_train = _count("num_train", num_train, 1)
    num_test = _count("num_test", num_test, 1)
    seed = _count("seed", seed, 0)
    num_classes = _count("num_classes", num_classes, 2, 10)
    shape = tuple(image_shape) if isinstance(image_shape, tuple | list) else ()
    if len(shape) != 2:
        raise ValueError(
            f"write_fake_dataset: image_shape must be (height, width), got {image_shape!r}"
        )
    h, w = (_count("image_shape", s, 1) for s in shape)
    rng = np.random.default_rng(seed)
    # About a quarter of the pixels are "on" in each class's pattern.
    pattern_KHW = np.where(rng.random((num_classes, h, w)) < 0.25, 200.0, 30.0)

    def split(n):
        y_N = rng.permutation(np.arange(n) % num_classes).astype(np.uint8)
        # One image in ten shows a random class's pattern: no model gets much above 90%.
        shown_N = np.where(rng.random(n) < MISLABELED, rng.integers(0, num_classes, n), y_N)
        x_NHW = pattern_KHW[shown_N] + rng.normal(0.0, 60.0, (n, h, w))
        return np.clip(np.rint(x_NHW), 0, 255).astype(np.uint8), y_N

    x_train, y_train = split(num_train)
    x_test, y_test = split(num_test)
    return {
        "train_images": x_train,
        "train_labels": y_train,
        "test_images": x_test,
        "test_labels": y_test,
    }


def write_fake_dataset(
    folder: str | os.PathLike,
    num_train: int,
    num_test: int,
    seed: int,
    image_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> Path:
    """Writes a tiny random MNIST-like data set: four gzip IDX files under MNIST's names.

    Deterministic in its arguments (same arguments, same bytes).

    Args:
      folder: where the files go (created if needed).
      num_train: N_train >= 1 training images.
      num_test: N_test >= 1 test images.
      seed: >= 0.
      image_shape: (H, W).
      num_classes: K in 2..10 (labels 0..K-1; the registry's "fake" set allows up to 10).

    Returns:
      `folder` as a Path; load it with `load_dataset("fake", folder)`.

    Raises:
      ValueError: an argument out of range (the message names it).
    """
    arrays = fake_arrays(num_train, num_test, seed, image_shape, num_classes)
    folder = Path(folder)
    for role, name in FILENAMES.items():
        idx.write_idx(folder / name, arrays[role])
    return folder
