"""Training configuration: static `TrainConfig` and dynamic, vmappable `HParams`.

What changes shapes or control flow is static (`TrainConfig`, hashable, changing it recompiles).
The continuous knobs (learning rate, L2 lambda, momentum, seed) are arrays in `HParams`, so a
whole grid of them trains in one compiled call (see `jaxlr.sweep`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp

MODELS = ("logistic", "softmax", "mlp")
GRADS = ("analytic", "autodiff")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "anneal", "cosine", "exponential")
LOG_LOSSES = ("cross_entropy", "objective")


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
        _check_choice("model", self.model, MODELS)
        _check_choice("grad", self.grad, GRADS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("log_loss", self.log_loss, LOG_LOSSES)
        _check_choice("bias", self.bias, ("trick", "explicit"))
        _check_choice("l2_convention", self.l2_convention, ("sum", "half"))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("batch_size", "num_epochs", "patience", "epochs_per_call"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("eval_every", "train_eval_size"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.model == "mlp" and not self.hidden:
            raise ValueError("TrainConfig.model='mlp' needs at least one hidden width (hidden=)")
        if self.anneal_steps <= 0:
            raise ValueError(f"TrainConfig.anneal_steps must be > 0, got {self.anneal_steps}")
        if not float(self.diverge_factor) > 1.0:  # also refuses NaN
            raise ValueError(
                f"TrainConfig.diverge_factor must be > 1 (inf: no factor rule), "
                f"got {self.diverge_factor!r}"
            )

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
    """
    dtype = dtype or jnp.zeros(()).dtype
    return HParams(
        learning_rate=jnp.asarray(learning_rate, dtype),
        l2=jnp.asarray(l2, dtype),
        momentum=jnp.asarray(momentum, dtype),
        seed=jnp.asarray(seed, jnp.int32),
    )


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"TrainConfig.{name}={value!r} is not one of {list(valid)}")
