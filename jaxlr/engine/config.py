"""Training configuration: static `TrainConfig` and dynamic, vmappable `HParams`.

What changes shapes or control flow is static (`TrainConfig`, hashable, changing it recompiles).
The continuous knobs (learning rate, L2 lambda, momentum, seed) are arrays in `HParams`, so a
whole grid of them trains in one compiled call (see `jaxlr.engine.sweep`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxlr.core.inputs import InputError, format_number

MODELS = ("logistic", "softmax", "mlp")
GRADS = ("analytic", "autodiff")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "anneal", "cosine", "exponential")
LOG_LOSSES = ("cross_entropy", "objective")
# The names `jaxlr.core` implements (`models.ACTIVATIONS`, `models.INITS` plus "auto",
# `models.BIAS_CONVENTIONS`, `losses.L2_CONVENTIONS`; tests/test_config.py checks that they
# agree), spelled out so that a config is checked without importing JAX.
ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
INITS = ("auto", "zeros", "normal", "glorot", "he")
BIAS_CONVENTIONS = ("trick", "explicit")
L2_CONVENTIONS = ("sum", "half")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static settings of one training run (hashable; a change recompiles).

    Attributes:
      model: "logistic" (binary, one output), "softmax" or "mlp".
      num_classes: classes of the multi-class models (ignored for "logistic").
      hidden: hidden-layer widths of the "mlp".
      activation: hidden activation of the "mlp": sigmoid, tanh, relu or linear.
      bias: "trick" (inputs carry a constant-1 feature) or "explicit" (a bias vector).
      init: "auto" (zeros for the linear models, the course default; Glorot for the MLP),
        "zeros", "normal" (std `init_std`), "glorot" or "he".
      init_std: standard deviation of the "normal" initialisation.
      l2_convention: "sum" (R(w) = sum w^2, gradient 2 lambda w) or "half" (R = 1/2 sum w^2).
      l2_bias: whether the bias is regularised too.
      grad: "analytic" (hand-derived gradients) or "autodiff" (`jax.grad`).
      optimizer: "sgd", "momentum" (SGD with momentum `HParams.momentum`) or "adam".
      schedule: "constant", "anneal" (alpha_0 / (1 + t / anneal_steps), t the global step),
        "cosine" (optax cosine decay to 0 over the run) or "exponential" (optax exponential
        decay by `decay_rate` every `anneal_steps` steps).
      anneal_steps: T of the "anneal" schedule, transition steps of "exponential".
      decay_rate: decay factor of the "exponential" schedule.
      batch_size: examples per step.
      num_epochs: passes over the training set (the most; early stopping may end sooner).
      shuffle: draw a fresh permutation of the training set every epoch.
      drop_last: drop the last partial batch (course default) or keep it (masked).
      eval_every: steps between validation checks; 0 means max(1, B // 5) with B batches per
        epoch (the course cadence). Checks follow the update of steps 0, E, 2E, ...
      train_eval_size: training examples used for the training accuracy at checks (0: all).
      early_stopping: stop when the validation loss has not reached a new minimum for
        `patience` consecutive checks, and return the weights of the best check.
      patience: see `early_stopping`.
      log_loss: loss logged and used for early stopping: "cross_entropy" or "objective"
        (cross-entropy plus the L2 term).
      epochs_per_call: epochs per compiled call; the host logs, checkpoints and checks for
        stopping between calls.
      diverge_factor: a run has diverged when its objective (a step's batch, or the
        validation set's at a check) is non-finite or exceeds this factor times its initial
        objective (the first step's, at the initial parameters). Must be > 1; inf turns
        the factor rule off (non-finite objectives still diverge). The default 1e3 is far
        above what sound runs reach (they start at ln 2 or ln 10 for the zero-initialised
        linear models and only go down) and far below the 1e5-1e7 of runs with a learning
        rate that blows up.
    """

    model: str = "logistic"
    num_classes: int = 10
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    bias: str = "trick"
    init: str = "auto"
    init_std: float = 0.01
    l2_convention: str = "sum"
    l2_bias: bool = True
    grad: str = "analytic"
    optimizer: str = "sgd"
    schedule: str = "constant"
    anneal_steps: float = 1000.0
    decay_rate: float = 0.5
    batch_size: int = 128
    num_epochs: int = 50
    shuffle: bool = False
    drop_last: bool = True
    eval_every: int = 0
    train_eval_size: int = 0
    early_stopping: bool = False
    patience: int = 10
    log_loss: str = "cross_entropy"
    epochs_per_call: int = 1
    diverge_factor: float = 1e3

    def __post_init__(self):
        check_choice("model", self.model, MODELS)
        check_count("num_classes", self.num_classes)
        if isinstance(self.hidden, (list, tuple)):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        check_widths("hidden", self.hidden)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.model == "mlp" and not self.hidden:
            raise ConfigError("hidden", self.hidden, "the mlp needs at least one hidden width")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("bias", self.bias, BIAS_CONVENTIONS)
        check_choice("init", self.init, INITS)
        check_positive("init_std", self.init_std)
        check_choice("l2_convention", self.l2_convention, L2_CONVENTIONS)
        check_choice("grad", self.grad, GRADS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_positive("anneal_steps", self.anneal_steps)
        allowed = "must be a number in (0, 1]"
        if not 0 < _finite("decay_rate", self.decay_rate, allowed) <= 1:
            raise ConfigError("decay_rate", self.decay_rate, allowed)
        for name in ("batch_size", "num_epochs", "patience", "epochs_per_call"):
            check_count(name, getattr(self, name))
        for name in ("eval_every", "train_eval_size"):
            check_nonneg_int(name, getattr(self, name))
        for name in ("l2_bias", "shuffle", "drop_last", "early_stopping"):
            check_bool(name, getattr(self, name))
        check_choice("log_loss", self.log_loss, LOG_LOSSES)
        allowed = "must be a number > 1 (inf: no factor rule)"
        f = self.diverge_factor
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not float(f) > 1.0:
            raise ConfigError("diverge_factor", f, allowed)  # `not > 1` also refuses NaN

    def unread(self) -> dict[str, tuple[str, tuple]]:
        """Fields these settings leave unread: name -> (the field that decides, the values of
        that field with which it is read)."""
        out: dict[str, tuple[str, tuple]] = {}
        if self.model != "mlp":
            out["hidden"] = out["activation"] = ("model", ("mlp",))
        if self.model == "logistic":
            out["num_classes"] = ("model", ("softmax", "mlp"))
        if self.init != "normal":
            out["init_std"] = ("init", ("normal",))
        if self.schedule not in ("anneal", "exponential"):
            out["anneal_steps"] = ("schedule", ("anneal", "exponential"))
        if self.schedule != "exponential":
            out["decay_rate"] = ("schedule", ("exponential",))
        if not self.early_stopping:
            out["patience"] = ("early_stopping", (True,))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error naming the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {sorted(valid)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


class HParams(NamedTuple):
    """Dynamic hyper-parameters of one run (scalars) or of S sweep points (arrays [S]).

    Attributes:
      learning_rate: initial learning rate alpha_0.
      l2: L2 strength lambda.
      momentum: momentum of the "momentum" optimizer (ignored by the others).
      seed: integer seed; keys for initialisation and data order are derived from it.
    """

    learning_rate: Any
    l2: Any
    momentum: Any
    seed: Any


def make_hparams(learning_rate, l2=0.0, momentum=0.0, seed=0, dtype=None) -> HParams:
    """Builds `HParams` of arrays (scalars, or stacked [S] when given sequences).

    Args:
      learning_rate, l2, momentum: floats or sequences of floats of one length S.
      seed: int or a sequence of ints.
      dtype: float dtype of the continuous knobs (default: JAX's default float).
    Returns:
      HParams of jnp arrays.
    Raises:
      jaxlr.core.inputs.InputError (a ValueError): one line naming the knob and the value
        as given: a learning rate that is not finite and > 0, an L2 strength that is not
        finite and >= 0, a momentum outside [0, 1) (also after the cast to `dtype`: 1e300
        is inf in float32).
    """
    import jax.numpy as jnp  # here, not at the top: configs are checked without JAX

    check_hparam_values(learning_rate, l2, momentum, where="make_hparams")
    dtype = dtype or jnp.zeros(()).dtype
    knobs = (learning_rate, l2, momentum)
    # A value fine in float64 may not be in the run's dtype (1e300 -> inf, 1e-50 -> 0):
    # cast quietly (no RuntimeWarning line), then refuse it naming the value as given.
    with np.errstate(all="ignore"):
        cast = [np.asarray(np.asarray(v), np.dtype(dtype)) if _on_host(v) else v for v in knobs]
    check_hparam_values(*cast, where="make_hparams", given=knobs)
    return HParams(
        learning_rate=jnp.asarray(cast[0], dtype),
        l2=jnp.asarray(cast[1], dtype),
        momentum=jnp.asarray(cast[2], dtype),
        seed=jnp.asarray(seed, jnp.int32),
    )


def _on_host(value) -> bool:
    try:
        np.asarray(value)
    except Exception:  # noqa: BLE001 - a tracer
        return False
    return True


_HPARAM_RULES = (
    ("learning_rate", "finite and > 0", lambda v: np.isfinite(v) & (v > 0)),
    ("l2", "finite and >= 0", lambda v: np.isfinite(v) & (v >= 0)),
    ("momentum", "in [0, 1)", lambda v: (v >= 0) & (v < 1)),
)


def check_hparam_values(learning_rate, l2, momentum, *, where: str, given=None) -> None:
    """Refuses knob values no run can train with (host values; tracers are not checked).

    Args:
      learning_rate, l2, momentum: scalars or arrays [S].
      where: the entry point, for the message.
      given: the values as the caller gave them, when the three are their cast to the run's
        dtype: a value that only the cast made bad is named as given, with what it became.
    Raises:
      jaxlr.core.inputs.InputError (a ValueError): one line naming `where`, the knob, the
        first bad value as it was given (0.01, not the 0.009999999776482582 of a float32)
        and what is allowed.
    """
    given = given or (None, None, None)
    values = (learning_rate, l2, momentum)
    for (name, allowed, ok), value, orig in zip(_HPARAM_RULES, values, given, strict=True):
        try:
            a = np.asarray(value)
        except Exception:  # noqa: BLE001 - a tracer under jit / vmap
            continue
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{where}: {name} must be a number, got {value!r}")
        if orig is not None:  # the values as given first, then what the cast made of them
            check_hparam_values(
                *(orig if n == name else 0.5 for n, _, _ in _HPARAM_RULES), where=where
            )
        bad = np.flatnonzero(~ok(a.astype(np.float64)).reshape(-1))
        if len(bad):
            i = int(bad[0])
            shown = format_number(a.reshape(-1)[i])
            which = f" (point {i})" if a.ndim else ""
            if orig is not None:
                was = format_number(np.asarray(orig).reshape(-1)[i])
                raise InputError(
                    f"{where}: {name} {was}{which} becomes {shown} in {a.dtype}; it must be "
                    f"{allowed} (use float64 data, or another value)"
                )
            raise InputError(f"{where}: {name} must be {allowed}, got {shown}{which}")


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"TrainConfig.{name}={value!r} is not one of {list(valid)}")


_INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """An invalid config value: `field`, `value` and what is allowed, as one line.

    The message names the field as the config does ("lr=-1: must be ..."); the launcher
    adds the `--` of the flag.
    """

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={format_value(value)}: {allowed}")


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


def check_choice(field: str, value: Any, valid: Sequence) -> None:
    if value not in valid:
        raise ConfigError(field, value, f"must be one of {', '.join(map(str, valid))}")


def check_count(field: str, value: Any, *, upper: int | None = None, what: str = "") -> None:
    """A whole number >= 1 (and <= `upper`, described by `what`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(field, value, "must be a whole number >= 1")
    if value < 1:
        raise ConfigError(field, value, "must be a whole number >= 1")
    if upper is not None and value > upper:
        raise ConfigError(
            field, value, f"must be at most {upper}{' (' + what + ')' if what else ''}"
        )


def check_nonneg_int(field: str, value: Any, upper: int = _INT32_MAX) -> None:
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not 0 <= value <= upper:
        raise ConfigError(field, value, f"must be a whole number in [0, {upper}]")


def check_bool(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, "must be true or false")


def check_widths(field: str, widths: Any) -> None:
    """Layer widths: a tuple of whole numbers >= 1 (may be empty)."""
    if not isinstance(widths, tuple):
        raise ConfigError(field, widths, "must be comma-separated widths")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise ConfigError(field, widths, f"width {w} is not a whole number >= 1")


def _finite(field: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
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

    def unread(self) -> dict[str, tuple[str, tuple]]:
        """Every field is read (the momentum only by the momentum optimizer: see
        `ExperimentConfig.unread`, which sees both sections)."""
        return {}


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

    def unread(self) -> dict[str, tuple[str, tuple]]:
        """Every field is read (see `RunHParams.unread`)."""
        return {}

    @property
    def seed_values(self) -> tuple[int, ...]:
        return tuple(self.seed + i for i in range(self.seeds))
