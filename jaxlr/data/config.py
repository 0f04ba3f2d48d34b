"""The data section of a config: which images, which split, how they are preprocessed.

`DataConfig` checks its fields when it is built and raises `jaxlr.engine.config.ConfigError`
naming the field, the value and what is allowed. Checks that need the data (how many images
of two digits there are) happen in `jaxlr.data.splits.load_splits`, still before any training.
"""

from __future__ import annotations

import dataclasses

from jaxlr.data import registry
from jaxlr.engine.config import ConfigError, check_bool, check_choice, check_count, check_digits

SPLITS = ("tdt4265", "holdout", "full")
SCALES = ("unit", "symmetric")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, which split and how they are preprocessed.

    Attributes:
      dataset: registered data set: mnist or fashion_mnist.
      data_dir: folder holding the IDX files (searched first; empty: $JAXLR_DATA_DIR, the user
        cache, then a download).
      digits: two distinct digits positive,negative for the binary model (label 1, label 0);
        empty for all ten classes.
      split: tdt4265 (train = the first num_train training images, validation = the test set),
        holdout (train = the first num_train training images, validation = the last num_val
        training images, test = the test set) or full (all training images; validation = the
        test set).
      num_train: training images taken from the start of the training set, before digits are
        selected ('all': every image the split allows).
      num_val: training images held out at the end for validation (split holdout).
      num_test: test images used ('all': every test image; with digits, the first num_test test
        images of those digits).
      scale: pixel scaling: unit ([0, 1]) or symmetric ([-1, 1]).
      bias_feature: append a constant-1 feature (the bias trick).
      dtype: float32 or float64 (float64 switches on JAX's 64-bit mode).
      max_examples: at most this many training (and validation) examples after the digits are
        selected, for quick runs ('all': no limit); more than the training examples is an error.
    """

    dataset: str = "mnist"
    data_dir: str = ""
    digits: tuple[int, ...] = ()
    split: str = "tdt4265"
    num_train: int | None = 20000
    num_val: int = 10000
    num_test: int | None = None
    scale: str = "symmetric"
    bias_feature: bool = True
    dtype: str = "float32"
    max_examples: int | None = None

    def __post_init__(self):
        if self.dataset not in registry.DATASETS:
            check_choice("dataset", self.dataset, user_datasets())
        if not isinstance(self.data_dir, str):
            raise ConfigError("data_dir", self.data_dir, "must be a folder path")
        check_digits("digits", self.digits)
        check_choice("split", self.split, SPLITS)
        check_choice("scale", self.scale, SCALES)
        check_choice("dtype", self.dtype, DTYPES)
        n_train, n_test = dataset_sizes(self.dataset)
        if self.num_train is not None:
            if self.split == "full":
                raise ConfigError(
                    "num_train", self.num_train, "split full trains on every image: leave it 'all'"
                )
            check_count("num_train", self.num_train, upper=n_train, what=f"{self.dataset} train")
        check_count("num_val", self.num_val, upper=n_train, what=f"{self.dataset} train")
        if self.split == "holdout" and n_train is not None:
            used = (self.num_train or 0) + self.num_val
            if self.num_train is not None and used > n_train:
                raise ConfigError(
                    "num_val",
                    self.num_val,
                    f"num_train + num_val = {used} exceeds the {n_train} training images",
                )
            if self.num_val >= n_train:
                raise ConfigError(
                    "num_val", self.num_val, f"must leave training images of the {n_train}"
                )
        if self.num_test is not None:
            check_count("num_test", self.num_test, upper=n_test, what=f"{self.dataset} test")
        check_bool("bias_feature", self.bias_feature)
        if self.max_examples is not None:
            check_count("max_examples", self.max_examples)

    @property
    def binary(self) -> bool:
        return len(self.digits) == 2

    def unread(self) -> dict[str, tuple[str, tuple]]:
        """Fields these settings leave unread: name -> (the field that decides, the values of
        that field with which it is read). An experiment that evaluates the first num_test
        test images whatever the split says so in its own `unread`."""
        if self.split == "holdout":
            return {}
        return {"num_val": ("split", ("holdout",)), "num_test": ("split", ("holdout",))}


def user_datasets() -> tuple[str, ...]:
    """The registered data sets offered to users: those with checksums (not "fake", the
    tests' tiny random files, which is accepted but not listed)."""
    return tuple(
        name for name, spec in registry.DATASETS.items() if all(f.sha256 for f in spec.files)
    )


def dataset_sizes(name: str) -> tuple[int | None, int | None]:
    """(training, test) images of registered data set `name` (None: not fixed, as for
    "fake"); checked again against the files on load."""
    shapes = {f.role: f.shape for f in registry.DATASETS[name].files}
    train, test = shapes.get("train_images"), shapes.get("test_images")
    return (train[0] if train else None, test[0] if test else None)
