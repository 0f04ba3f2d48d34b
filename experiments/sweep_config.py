"""Config and registration of the `sweep` experiment (run by `experiments.sweep`).

Light on purpose (no JAX, no matplotlib): `--list` and `--help` import this module only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from experiments.config import ExperimentConfig, register
from jaxlr.data.config import DataConfig
from jaxlr.engine.config import (
    ConfigError,
    GridHParams,
    TrainConfig,
    check_choice,
    check_count,
    check_nonneg_int,
)

# Model-dependent defaults (tdt4265_task2 for the binary model, tdt4265_task3 otherwise).
PROTOCOLS = {
    "logistic": dict(digits=(2, 3), lr=(0.05,), shuffle=False),
    "softmax": dict(digits=(), lr=(0.01,), shuffle=True),
}


@dataclasses.dataclass(frozen=True)
class Sweep(ExperimentConfig):
    """A grid (or a random search) of hyper-parameters trained as one vmapped program.

    Attributes:
      search: grid (every combination of --lr, --l2, --momentum, seeds) or random
        (--num_samples points drawn log-uniformly from --lr_range, --l2_range,
        --momentum_range).
      num_samples: points of a random search.
      lr_range: LO,HI of the learning rate (random search; 0 < LO <= HI).
      l2_range: LO,HI of lambda (random search; empty: lambda 0 everywhere).
      momentum_range: LO,HI of the momentum (random search; empty: 0).
      search_seed: seed of the random draws (the training seed is --seed).
      prune: none, or halving: successive halving, every --rung_epochs epochs all but the
        best --keep_fraction of the points still training (by best validation loss) stop.
      rung_epochs: epochs per rung of successive halving; less than --num_epochs (points are
        ranked at rung ends before the last epoch).
      keep_fraction: fraction of the points kept at each rung, in (0, 1).
      block_size: most points per compiled block ('all': from a memory estimate).
      checkpoint: folder (relative to the current folder) where the sweep's state is saved
        after every chunk; the same command resumes a killed sweep.
      optimum: for the linear models, solve each lambda to its exact optimum and report every
        point's gap and its learning rate over the gradient-descent limit.
      coordinator_address: host:port of process 0, to run one sweep over several processes
        or hosts (with --num_processes and --process_id; none of them under SLURM / Open MPI,
        which JAX detects).
      num_processes: number of processes of a multi-process sweep.
      process_id: this process's index in [0, num_processes).
      shard: I/N: train only shard I of N of the points (a contiguous slice, the same on any
        machine) as a sweep of its own, and publish its result for `sweep_merge`; empty:
        from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT in a SLURM job array, else every
        point; none: every point, even in a job array. Not with --prune=halving.
    """

    data: DataConfig = DataConfig(digits=(2, 3))
    train: TrainConfig = TrainConfig(model="logistic", num_epochs=50, batch_size=128)
    hparams: GridHParams = GridHParams(lr=(0.05,))
    search: str = "grid"
    num_samples: int = 64
    lr_range: tuple[float, ...] = (1e-3, 1.0)
    l2_range: tuple[float, ...] = ()
    momentum_range: tuple[float, ...] = ()
    search_seed: int = 0
    prune: str = "none"
    rung_epochs: int = 5
    keep_fraction: float = 1 / 3
    block_size: int | None = None
    checkpoint: str = ""
    optimum: bool = True
    coordinator_address: str = ""
    num_processes: int | None = None
    process_id: int | None = None
    shard: str = ""
    FIXED: ClassVar = ()

    def __post_init__(self):
        super().__post_init__()
        if self.block_size is not None and self.block_size < 1:
            raise ConfigError("block_size", self.block_size, "must be a whole number >= 1 or 'all'")
        check_choice("search", self.search, ("grid", "random"))
        check_choice("prune", self.prune, ("none", "halving"))
        check_count("num_samples", self.num_samples, upper=1 << 20)
        for name in ("lr_range", "l2_range", "momentum_range"):
            _check_range(name, getattr(self, name), optional=name != "lr_range")
        if self.momentum_range and not self.momentum_range[1] < 1:
            raise ConfigError("momentum_range", self.momentum_range, "must lie in (0, 1)")
        check_nonneg_int("search_seed", self.search_seed)
        check_count("rung_epochs", self.rung_epochs)
        if not 0 < self.keep_fraction < 1:
            raise ConfigError("keep_fraction", self.keep_fraction, "must be in (0, 1)")
        dist = (self.coordinator_address, self.num_processes, self.process_id)
        if any(v not in ("", None) for v in dist) and any(v in ("", None) for v in dist):
            raise ConfigError(
                "coordinator_address",
                self.coordinator_address,
                "give --coordinator_address, --num_processes and --process_id together",
            )
        if self.num_processes is not None:
            check_count("num_processes", self.num_processes, upper=1 << 16)
            if not 0 <= (self.process_id or 0) < self.num_processes:
                raise ConfigError(
                    "process_id", self.process_id, f"must be in [0, {self.num_processes})"
                )
        if self.coordinator_address:
            from jaxlr.engine.distributed import parse_address  # imports JAX: only when given

            try:
                parse_address(self.coordinator_address)
            except ValueError:
                raise ConfigError(
                    "coordinator_address",
                    self.coordinator_address,
                    "must be host:port with a port in [1, 65535]",
                ) from None
        if self.shard not in ("", "none"):
            from jaxlr.engine.shards import parse_shard  # imports JAX: only when given

            try:
                parse_shard(self.shard)
            except ValueError as err:
                raise ConfigError("shard", self.shard, f"{err}, or none") from None
            if self.prune == "halving":
                raise ConfigError("shard", self.shard, HALVING_REFUSAL)
        if self.prune == "halving":
            _check_rungs(self.rung_epochs, self.train.num_epochs)

    def unread(self) -> dict[str, tuple[str, tuple]]:
        # A grid reads lr, l2, momentum and seeds; a random search its ranges and seed.
        out = super().unread()
        if self.search == "grid":
            for name in ("num_samples", "lr_range", "l2_range", "momentum_range", "search_seed"):
                out[name] = ("search", ("random",))
        else:
            for name in ("lr", "l2", "momentum", "seeds"):
                out.setdefault(name, ("search", ("grid",)))
        if self.train.optimizer != "momentum":
            out.setdefault("momentum_range", ("optimizer", ("momentum",)))
        if self.prune != "halving":
            out["rung_epochs"] = out["keep_fraction"] = ("prune", ("halving",))
        return out

    @classmethod
    def protocol_defaults(cls, overrides: dict) -> dict:
        model = overrides.get("model", "logistic")
        return dict(PROTOCOLS["logistic" if model == "logistic" else "softmax"])


def _check_rungs(rung_epochs: int, num_epochs: int) -> None:
    """Halving ranks the points at the end of each rung before the last epoch (epochs
    rung_epochs, 2 rung_epochs, ... < num_epochs): with no such rung it would prune nothing."""
    why = "halving ranks the points at rung ends before the last epoch, so it would prune nothing"
    if num_epochs < 2:
        allowed = f"needs --num_epochs of at least 2, got --num_epochs={num_epochs} ({why})"
        raise ConfigError("prune", "halving", allowed)
    if rung_epochs >= num_epochs:
        raise ConfigError(
            "rung_epochs",
            rung_epochs,
            f"must be less than --num_epochs={num_epochs} with --prune=halving, i.e. 1 to "
            f"{num_epochs - 1} ({why})",
        )


def _check_range(name: str, values: tuple, optional: bool) -> None:
    if optional and not values:
        return
    ok = len(values) == 2 and all(math.isfinite(v) for v in values)
    if not ok or not 0 < values[0] <= values[1]:
        raise ConfigError(name, values, "must be LO,HI with 0 < LO <= HI (log-uniform)")


# Why halving and shards do not mix (one line, for the refusals).
HALVING_REFUSAL = (
    "cannot be combined with --prune=halving: halving compares every point's result at each "
    "rung, and array tasks run apart; run halving unsharded (several devices or processes: "
    "jax.distributed), or shard without pruning"
)
# What the end of a sweep prints (a shard prints what it has of these).
HEADLINE = (
    "shard",
    "num_points",
    "num_diverged",
    "num_unstable",
    "point_steps",
    "best_by_val_loss.index",
    "best_by_val_loss.val_loss",
    "best_by_val_accuracy.index",
    "best_by_val_accuracy.val_accuracy",
    "wall_seconds",
)

register(
    "sweep",
    Sweep,
    "experiments.sweep:sweep",
    smoke=dict(num_epochs=2, max_examples=256, lr=(0.01, 0.1), l2=(0.0, 0.01)),
    headline=HEADLINE,
)


@dataclasses.dataclass(frozen=True)
class SweepMerge(ExperimentConfig):
    """Shards of one sweep merged into one sweep workdir.

    Attributes:
      shards: the workdirs of every shard (comma-separated, in any order).
      data_dir: where this machine keeps the data files (empty: the shards' --data_dir); the
        data must be the shards' (checked by digest).
    """

    shards: tuple[str, ...] = ()
    data_dir: str = ""


register(
    "sweep_merge",
    SweepMerge,
    "experiments.sweep_merge:sweep_merge",
    list_args="--shards=runs/sweep_0,runs/sweep_1",
    headline=HEADLINE,
)
