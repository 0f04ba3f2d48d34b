"""Config and registration of the `regularization_path` experiment (run by `experiments.regpath`).

Light on purpose (no JAX, no matplotlib): `--list` and `--help` import this module only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from experiments.config import ExperimentConfig, register
from jaxlr.data.config import DataConfig
from jaxlr.engine.config import ConfigError, TrainConfig, check_count, check_nonneg, check_values

# Of TrainConfig, the solver reads only what defines the objective.
_READ = ("model", "num_classes", "bias", "l2_convention", "l2_bias")


@dataclasses.dataclass(frozen=True)
class RegPath(ExperimentConfig):
    """A regularization path solved to the optimum (defaults: the hw3_logreg_grid protocol).

    Attributes:
      l2: the lambdas of the path, comma-separated (each >= 0); empty: num_l2 values
        log-spaced over l2_range.
      num_l2: number of log-spaced lambdas when l2 is empty.
      l2_range: LO,HI (0 < LO < HI) of the log-spaced lambdas.
      tol: gradient-norm tolerance of the solver (float64).
      max_iter: Newton iterations at most per lambda.
    """

    data: DataConfig = DataConfig(
        digits=(9, 4), split="holdout", num_train=None, num_test=1000, scale="unit"
    )
    train: TrainConfig = TrainConfig(model="logistic", l2_convention="sum", l2_bias=False)
    l2: tuple[float, ...] = ()
    num_l2: int = 16
    l2_range: tuple[float, ...] = (1e-4, 1.0)
    tol: float = 1e-10
    max_iter: int = 100
    FIXED: ClassVar = tuple(
        f.name for f in dataclasses.fields(TrainConfig) if f.name not in _READ
    ) + ("max_examples",)

    def unread(self) -> dict[str, tuple[str, tuple]]:
        # The test accuracy of every optimum is on the first num_test test images, whatever
        # the split.
        out = super().unread()
        out.pop("num_test", None)
        return out

    def __post_init__(self):
        super().__post_init__()
        if self.train.model == "mlp":
            raise ConfigError("model", "mlp", "the path needs a convex model: logistic or softmax")
        if self.l2:
            check_values("l2", self.l2, check_nonneg)
        check_count("num_l2", self.num_l2, upper=1024)
        lo_hi = self.l2_range
        if (
            len(lo_hi) != 2
            or not all(math.isfinite(v) for v in lo_hi)
            or not 0 < lo_hi[0] < lo_hi[1]
        ):
            raise ConfigError("l2_range", lo_hi, "must be LO,HI with 0 < LO < HI")
        if not (isinstance(self.tol, float) and math.isfinite(self.tol) and self.tol > 0):
            raise ConfigError("tol", self.tol, "must be a finite number > 0")
        check_count("max_iter", self.max_iter, upper=100000)

    @classmethod
    def protocol_defaults(cls, overrides: dict) -> dict:
        return {"digits": ()} if overrides.get("model") == "softmax" else {}

    @property
    def lambdas(self) -> tuple[float, ...]:
        if self.l2:
            return tuple(sorted(set(self.l2)))
        lo, hi = self.l2_range
        return tuple(float(v) for v in np.geomspace(lo, hi, self.num_l2))


register(
    "regularization_path",
    RegPath,
    "experiments.regpath:regularization_path",
    headline=("objective", "weight_norm", "val_accuracy", "test_accuracy", "lr_limit",
              "iterations"),
    smoke=dict(num_train=3000, num_val=1000, num_test=200, num_l2=4),
)  # fmt: skip
