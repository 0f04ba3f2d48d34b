"""Config sections that experiments compose, each validated when it is built.

An experiment's config is a frozen dataclass made of sections: `DataConfig` (which images,
which split, how preprocessed), `jaxlr.config.TrainConfig` (the static training settings),
and `RunHParams` (one run) or `GridHParams` (a grid of runs), plus fields of its own. Every
section checks its fields in `__post_init__` and raises `ConfigError`, whose message is one
line naming the field (as the launcher's flag `--name`), the value and what is allowed:

    --lr=-1: must be a finite number > 0

Checks that need the data (how many images of two digits there are) happen in
`jaxlr.splits.load_splits`, still before any training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

SPLITS = ("tdt4265", "holdout", "full")
SCALES = ("unit", "symmetric")
DTYPES = ("float32", "float64")
# Images in the registered data sets (train, test); checked again against the files on load.
DATASET_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000)}
_INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """An invalid config value: `field`, `value` and what is allowed, as one line."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"--{field}={format_value(value)}: {allowed}")


def format_value(value: Any) -> str:
    """A config value as it would be written on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "all"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Field checks (each raises ConfigError naming the field).


def check_choice(field: str, value: Any, valid: Sequence) -> None:
    if value not in valid:
        raise ConfigError(field, value, f"must be one of {', '.join(map(str, valid))}")


def check_count(field: str, value: Any, *, upper: int | None = None, what: str = "") -> None:
    """A whole number >= 1 (and <= `upper`, described by `what`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, value, "must be a whole number >= 1")
    if value < 1:
        raise ConfigError(field, value, "must be a whole number >= 1")
    if upper is not None and value > upper:
        raise ConfigError(
            field, value, f"must be at most {upper}{' (' + what + ')' if what else ''}"
        )


def check_nonneg_int(field: str, value: Any, upper: int = _INT32_MAX) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise ConfigError(field, value, f"must be a whole number in [0, {upper}]")


def _finite(field: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, allowed)
    if not math.isfinite(float(value)):
        raise ConfigError(field, value, allowed)
    return float(value)


def check_positive(field: str, value: Any) -> None:
    """Finite and > 0 (after parsing: 1e-400 is 0 and refused)."""
    if _finite(field, value, "must be a finite number > 0") <= 0:
        raise ConfigError(field, value, "must be a finite number > 0")


def check_nonneg(field: str, value: Any) -> None:
    if _finite(field, value, "must be a finite number >= 0") < 0:
        raise ConfigError(field, value, "must be a finite number >= 0")


def check_momentum(field: str, value: Any) -> None:
    allowed = "must be a number in [0, 1)"
    if not 0.0 <= _finite(field, value, allowed) < 1.0:
        raise ConfigError(field, value, allowed)


def check_values(field: str, values: Any, check) -> None:
    """A non-empty tuple whose every entry passes `check`, without repeats."""
    if not isinstance(values, tuple) or not values:
        raise ConfigError(field, values, "needs at least one value")
    for v in values:
        try:
            check(field, v)
        except ConfigError as err:
            raise ConfigError(field, values, f"{format_value(v)} {err.allowed}") from None
    if len(set(values)) != len(values):
        raise ConfigError(field, values, "has a repeated value")


def check_digits(field: str, digits: Any, *, count: int | None = None) -> None:
    """Distinct digits 0-9; exactly `count` of them when given (0: all ten classes)."""
    if not isinstance(digits, tuple):
        raise ConfigError(field, digits, "must be a comma-separated list of digits 0-9")
    for d in digits:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 9:
            raise ConfigError(field, digits, f"{d} is not a digit 0-9")
    if len(set(digits)) != len(digits):
        raise ConfigError(field, digits, "digits must be distinct")
    if count == 2 and len(digits) != 2:
        raise ConfigError(
            field, digits, "the binary model needs exactly two digits: positive,negative"
        )
    if count == 0 and digits:
        raise ConfigError(field, digits, "the ten-class models use all ten digits: leave it empty")


# ---------------------------------------------------------------------------------------------
# Sections.


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
        check_choice("dataset", self.dataset, tuple(DATASET_SIZES) + _extra_datasets())
        if not isinstance(self.data_dir, str):
            raise ConfigError("data_dir", self.data_dir, "must be a folder path")
        check_digits("digits", self.digits)
        check_choice("split", self.split, SPLITS)
        check_choice("scale", self.scale, SCALES)
        check_choice("dtype", self.dtype, DTYPES)
        n_train, n_test = DATASET_SIZES.get(self.dataset, (None, None))
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
        if not isinstance(self.bias_feature, bool):
            raise ConfigError("bias_feature", self.bias_feature, "must be true or false")
        if self.max_examples is not None:
            check_count("max_examples", self.max_examples)

    @property
    def binary(self) -> bool:
        return len(self.digits) == 2


def _extra_datasets() -> tuple[str, ...]:
    # Data sets registered at run time (tests register tiny fake ones).
    try:
        from jaxlr import data as jdata

        return tuple(n for n in getattr(jdata, "DATASETS", {}) if n not in DATASET_SIZES)
    except ImportError:  # pragma: no cover
        return ()


@dataclasses.dataclass(frozen=True)
class RunHParams:
    """The continuous knobs of one run.

    Attributes:
      lr: learning rate alpha_0 (finite, > 0).
      l2: L2 strength lambda (finite, >= 0).
      momentum: momentum of the momentum optimizer, in [0, 1).
      seed: seed of the initialisation and the data order.
    """

    lr: float = 0.05
    l2: float = 0.0
    momentum: float = 0.0
    seed: int = 0

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_nonneg("l2", self.l2)
        check_momentum("momentum", self.momentum)
        check_nonneg_int("seed", self.seed)


@dataclasses.dataclass(frozen=True)
class GridHParams:
    """A grid of the continuous knobs: every combination of the values trains as one point.

    Attributes:
      lr: learning rates (each finite, > 0; comma-separated).
      l2: L2 strengths lambda (each finite, >= 0; comma-separated).
      momentum: momenta (each in [0, 1); comma-separated).
      seed: first seed.
      seeds: number of seeds, seed .. seed + seeds - 1, per combination.
    """

    lr: tuple[float, ...] = (0.05,)
    l2: tuple[float, ...] = (0.0,)
    momentum: tuple[float, ...] = (0.0,)
    seed: int = 0
    seeds: int = 1

    def __post_init__(self):
        check_values("lr", self.lr, check_positive)
        check_values("l2", self.l2, check_nonneg)
        check_values("momentum", self.momentum, check_momentum)
        check_nonneg_int("seed", self.seed)
        check_count("seeds", self.seeds, upper=100000)

    @property
    def seed_values(self) -> tuple[int, ...]:
        return tuple(self.seed + i for i in range(self.seeds))


# ---------------------------------------------------------------------------------------------
# TrainConfig fields, checked with the flag names before `TrainConfig` is built.

_TRAIN_CHOICES = {
    "model": "MODELS",
    "grad": "GRADS",
    "optimizer": "OPTIMIZERS",
    "schedule": "SCHEDULES",
    "log_loss": "LOG_LOSSES",
}
_TRAIN_FIXED_CHOICES = {
    "bias": ("trick", "explicit"),
    "l2_convention": ("sum", "half"),
    "init": ("auto", "zeros", "normal", "glorot", "he"),
    "activation": ("sigmoid", "tanh", "relu", "linear"),
}


def check_train_values(values: dict) -> None:
    """Checks `TrainConfig` field values (a dict of field -> value), naming the flag."""
    from jaxlr import config as jconfig

    for name, const in _TRAIN_CHOICES.items():
        if name in values:
            check_choice(name, values[name], getattr(jconfig, const))
    for name, valid in _TRAIN_FIXED_CHOICES.items():
        if name in values:
            check_choice(name, values[name], valid)
    for name in ("batch_size", "num_epochs", "patience", "epochs_per_call", "num_classes"):
        if name in values:
            check_count(name, values[name])
    for name in ("eval_every", "train_eval_size"):
        if name in values:
            check_nonneg_int(name, values[name])
    for name in ("anneal_steps", "init_std"):
        if name in values:
            check_positive(name, values[name])
    if "decay_rate" in values:
        v = values["decay_rate"]
        if not 0 < _finite("decay_rate", v, "must be a number in (0, 1]") <= 1:
            raise ConfigError("decay_rate", v, "must be a number in (0, 1]")
    if "diverge_factor" in values:
        v = values["diverge_factor"]
        if _finite("diverge_factor", v, "must be a finite number > 1") <= 1:
            raise ConfigError("diverge_factor", v, "must be a finite number > 1")
    if "hidden" in values:
        h = values["hidden"]
        if not isinstance(h, tuple):
            raise ConfigError("hidden", h, "must be comma-separated widths")
        for w in h:
            try:
                check_count("hidden", w)
            except ConfigError:
                raise ConfigError("hidden", h, f"width {w} is not a whole number >= 1") from None
        if values.get("model") == "mlp" and not h:
            raise ConfigError("hidden", h, "the mlp needs at least one hidden width")
    for name in ("shuffle", "drop_last", "early_stopping", "l2_bias"):
        if name in values and not isinstance(values[name], bool):
            raise ConfigError(name, values[name], "must be true or false")
