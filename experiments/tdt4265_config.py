"""Configs and registrations of the TDT4265 Assignment 1 experiments (run by `experiments.tdt4265`,
`experiments.tdt4265_task4` and `experiments.tdt4265_annealing`).

Light on purpose (no JAX, no matplotlib): `--list` and `--help` import this module only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from experiments.config import ExperimentConfig, register
from jaxlr.data.config import DataConfig
from jaxlr.engine.config import ConfigError, RunHParams, TrainConfig, check_values

# Run-level headline numbers printed at the end of a run.
HEADLINE = (
    "val_accuracy",
    "val_loss",
    "train_accuracy",
    "steps",
    "early_stopping.best_step",
    "early_stopping.step",
    "wall_seconds",
)
# Smoke runs (--smoke): 256 binary / 512 ten-class examples make M = 2 / 4 batches of 128,
# so every step is followed by a check. On 256 examples a rate of 0.025 makes the validation
# loss oscillate, so patience 3 stops the early-stopping runs within a few steps.
_SMOKE_EARLY = dict(num_epochs=40, max_examples=256, patience=3, lr=0.025)
_SMOKE_SOFTMAX = dict(num_epochs=2, max_examples=512)
_LOGISTIC_FIXED = ("model", "num_classes", "hidden", "activation")
_SOFTMAX_FIXED = ("model", "hidden", "activation")


@dataclasses.dataclass(frozen=True)
class Binary(ExperimentConfig):
    """Logistic regression of two digits, task 2 protocol.

    Attributes:
      checkpoint: folder (relative to the current folder) for resumable checkpoints, one per run;
        empty for none. The same command resumes an interrupted run.
    """

    data: DataConfig = DataConfig(digits=(2, 3))
    train: TrainConfig = TrainConfig(model="logistic", num_epochs=50, shuffle=False)
    hparams: RunHParams = RunHParams(lr=0.05)
    checkpoint: str = ""
    FIXED: ClassVar = _LOGISTIC_FIXED


# Early-stopped runs (course task 2d): patience 10 checks, up to 500 epochs.
_EARLY = TrainConfig(
    model="logistic", num_epochs=500, shuffle=False, early_stopping=True, patience=10
)


@dataclasses.dataclass(frozen=True)
class BinaryEarly(Binary):
    train: TrainConfig = _EARLY


@dataclasses.dataclass(frozen=True)
class Shuffling(Binary):
    train: TrainConfig = _EARLY
    FIXED: ClassVar = (*_LOGISTIC_FIXED, "shuffle")


@dataclasses.dataclass(frozen=True)
class Annealing(Binary):
    train: TrainConfig = TrainConfig(model="logistic", num_epochs=50, anneal_steps=1000.0)
    FIXED: ClassVar = (*_LOGISTIC_FIXED, "schedule", "decay_rate")

    def unread(self) -> dict[str, tuple[str, tuple]]:
        # The annealed run reads anneal_steps, whatever the (fixed) schedule field says.
        out = super().unread()
        out.pop("anneal_steps", None)
        return out


@dataclasses.dataclass(frozen=True)
class Softmax(ExperimentConfig):
    """Softmax regression of the ten digits, task 3 protocol.

    Attributes:
      checkpoint: folder (relative to the current folder) for resumable checkpoints, one per run;
        empty for none. The same command resumes an interrupted run.
    """

    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig(model="softmax", num_epochs=50, shuffle=True)
    hparams: RunHParams = RunHParams(lr=0.01)
    checkpoint: str = ""
    FIXED: ClassVar = _SOFTMAX_FIXED


@dataclasses.dataclass(frozen=True)
class L2Path(Softmax):
    """Softmax regression trained once per L2 strength (lambda 0 always included).

    Attributes:
      l2s: the L2 strengths lambda > 0 compared with lambda 0 (comma-separated).
      block_size: grid points per compiled block of the sweep ('all': from a memory estimate).
      checkpoint: folder (relative to the current folder) for resumable checkpoints, one per
        lambda; with it the lambdas train one after another instead of as one sweep.
      optimum: solve each lambda to its exact optimum (float64 Newton-CG) and report the gap
        of every run and its learning rate over the gradient-descent limit.
    """

    train: TrainConfig = TrainConfig(
        model="softmax", num_epochs=50, shuffle=True, l2_convention="sum", l2_bias=True
    )
    l2s: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
    block_size: int | None = None
    optimum: bool = True
    FIXED: ClassVar = (*_SOFTMAX_FIXED, "l2")

    def __post_init__(self):
        super().__post_init__()
        check_values("l2s", self.l2s, _check_lambda)
        if self.block_size is not None and self.block_size < 1:
            raise ConfigError("block_size", self.block_size, "must be a whole number >= 1 or 'all'")


def _check_lambda(field: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(field, value, "must be finite and > 0 (lambda 0 is always run)")


register(
    "tdt4265_task2",
    Binary,
    "experiments.tdt4265:task2",
    headline=HEADLINE,
    smoke=dict(num_epochs=2, max_examples=256),
)
register(
    "tdt4265_task2d",
    BinaryEarly,
    "experiments.tdt4265:task2d",
    headline=HEADLINE,
    smoke=_SMOKE_EARLY,
)
register(
    "tdt4265_task2e", Shuffling, "experiments.tdt4265:task2e", headline=HEADLINE, smoke=_SMOKE_EARLY
)
register(
    "tdt4265_task3",
    Softmax,
    "experiments.tdt4265:task3",
    headline=(*HEADLINE, "accuracy_gap"),
    smoke=_SMOKE_SOFTMAX,
)
register(
    "tdt4265_task4",
    L2Path,
    "experiments.tdt4265_task4:task4",
    headline=("l2", "val_accuracy", "val_loss", "weight_norm", "gap", "lr_over_limit", "steps"),
    smoke=dict(_SMOKE_SOFTMAX, l2s=(1.0, 0.1)),
)
register(
    "lr_annealing",
    Annealing,
    "experiments.tdt4265_annealing:lr_annealing",
    headline=(*HEADLINE, "final_learning_rate", "late_val_loss_jitter"),
    smoke=dict(num_epochs=2, max_examples=256, anneal_steps=2.0),
)
register(
    "mean_images",
    Softmax,
    "experiments.tdt4265:mean_images",
    headline=("val_accuracy", "val_loss", "steps", "wall_seconds"),
    smoke=_SMOKE_SOFTMAX,
)
