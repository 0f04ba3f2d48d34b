"""The `sweep` experiment: any grid of learning rate x L2 lambda x momentum x seed in one call.

Protocol defaults follow the model: `--model=logistic` (the default) is the `tdt4265_task2`
protocol (digits 2 vs 3, lr 0.05, 50 epochs, batch 128, no shuffling); `--model=softmax`
(and `mlp`) the `tdt4265_task3` protocol (all ten digits, lr 0.01, shuffling). A value
given on the command line always wins over the protocol's.

Dimension legend: S grid points, T steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import ClassVar

import numpy as np

from experiments.common import (
    RunDir,
    RunFailed,
    checkpoint_dir,
    optimum_for,
    protocol_text,
    stability_text,
)
from experiments.config import ExperimentConfig, register
from jaxlr.data.config import DataConfig
from jaxlr.data.splits import load_splits
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.config import (
    ConfigError,
    GridHParams,
    TrainConfig,
    check_choice,
    check_count,
    check_nonneg_int,
)
from jaxlr.engine.distributed import parse_address
from jaxlr.engine.grid import random_points
from jaxlr.engine.halving import Halving
from jaxlr.host.io import atomic_write_text
from jaxlr.report import plots, tables

log = logging.getLogger("jaxlr.experiments.sweep")

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
      rung_epochs: epochs per rung of successive halving.
      keep_fraction: fraction of the points kept at each rung, in (0, 1).
      block_size: most points per compiled block ('all': from a memory estimate).
      checkpoint: folder (relative to the workdir) where the sweep's state is saved after
        every chunk; the same command resumes a killed sweep.
      optimum: for the linear models, solve each lambda to its exact optimum and report every
        point's gap and its learning rate over the gradient-descent limit.
      coordinator_address: host:port of process 0, to run one sweep over several processes
        or hosts (with --num_processes and --process_id; none of them under SLURM / Open MPI,
        which JAX detects).
      num_processes: number of processes of a multi-process sweep.
      process_id: this process's index in [0, num_processes).
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
            try:
                parse_address(self.coordinator_address)
            except ValueError:
                raise ConfigError(
                    "coordinator_address",
                    self.coordinator_address,
                    "must be host:port with a port in [1, 65535]",
                ) from None

    @classmethod
    def protocol_defaults(cls, overrides: dict) -> dict:
        model = overrides.get("model", "logistic")
        return dict(PROTOCOLS["logistic" if model == "logistic" else "softmax"])


def _check_range(name: str, values: tuple, optional: bool) -> None:
    if optional and not values:
        return
    ok = len(values) == 2 and all(math.isfinite(v) for v in values)
    if not ok or not 0 < values[0] <= values[1]:
        raise ConfigError(name, values, "must be LO,HI with 0 < LO <= HI (log-uniform)")


def grid_of(cfg: Sweep, dtype) -> jgrid.Grid:
    """The points of a config: lr x l2 x momentum x seeds, or a seeded random search."""
    hp = cfg.hparams
    if cfg.search == "random":
        return random_points(
            cfg.num_samples,
            cfg.lr_range,
            cfg.l2_range or None,
            cfg.momentum_range or None,
            seed=cfg.search_seed,
            train_seed=hp.seed,
            dtype=dtype,
        )
    return jgrid.make_grid(
        learning_rate=hp.lr,
        l2=hp.l2,
        momentum=hp.momentum,
        seed=hp.seed_values,
        dtype=dtype,
    )


def _best(result: jsweep.SweepResult, by: str) -> dict | None:
    if result.diverged.all():
        return None
    i = result.best_index(by)
    return {"index": i, **result.records()[i]}


def _write_histories(run: RunDir, result: jsweep.SweepResult, grid: jgrid.Grid) -> dict:
    """Writes every point's history; returns point index -> its file name."""
    histories = {}
    for i, h in enumerate(result.histories):
        name = f"history_{i:03d}_{tables.slug(plots.sweep_point_label(grid.point(i), grid))}.jsonl"
        tables.write_history(run.out / name, h)
        histories[i] = name
    return histories


def _add_optimum(tcfg: TrainConfig, data, result: jsweep.SweepResult, rows, records):
    """Adds each point's exact optimum, gap and learning-rate limit to its row and record."""
    opt = optimum_for(
        tcfg,
        data,
        [r["l2"] for r in rows],
        [r["learning_rate"] for r in rows],
        np.asarray(result.metrics["train_objective"], np.float64),
    )
    for row, rec, o in zip(rows, records, opt.rows):
        extra = {
            "optimum_objective": o["optimum_objective"] if o["converged"] else "",
            "gap": o["gap"] if o["converged"] and not row["diverged"] else "",
            "lr_limit": o["lr_limit"],
            "lr_over_limit": o["lr_over_limit"],
            "unstable": o["unstable"],
        }
        row.update(extra)
        rec.update({k: (None if v == "" else v) for k, v in extra.items()})
    return opt


def _sweep_tables(run: RunDir, result: jsweep.SweepResult, rows: list[dict]) -> str:
    """Writes table.csv and table.md (best by validation loss in bold); returns the markdown."""
    atomic_write_text(run.out / "table.csv", tables.sweep_csv(result, rows=rows))
    table = tables.sweep_markdown(result, rows=rows)
    atomic_write_text(run.out / "table.md", table)
    return table.rstrip("\n")


def _best_text(cfg: Sweep, grid, result, best_loss, best_acc, cost: dict, opt) -> str:
    """The report's best-point section: the best points, divergence, work, pruning, stability."""
    tcfg = cfg.train
    label = plots.sweep_point_label
    best_text = "Every point diverged."
    if best_loss is not None:
        best_text = (
            f"Best by validation loss: point {best_loss['index']} "
            f"({label(grid.point(best_loss['index']), grid)}), val loss "
            f"{best_loss['val_loss']:.4f}, val accuracy {best_loss['val_accuracy']:.4f}. "
            f"Best by validation accuracy: point {best_acc['index']} "
            f"({label(grid.point(best_acc['index']), grid)}), val accuracy "
            f"{best_acc['val_accuracy']:.4f}."
        )
    # The seed only draws the data order and a random initialisation.
    zero_init = tcfg.init == "zeros" or (tcfg.init == "auto" and tcfg.model != "mlp")
    if len(grid.values.get("seed", ())) > 1 and not tcfg.shuffle and zero_init:
        best_text += (
            " (Without shuffling and with zero initialisation the seeds change nothing: "
            "their rows are identical.)"
        )
    ndiv = int(result.diverged.sum())
    if ndiv:
        best_text += f" {ndiv} point(s) diverged (flagged in the table, never chosen)."
    if cost:
        best_text += (
            f" The points ran {cost['point_steps']:,} steps in all; the compiled blocks "
            f"computed {cost['computed_point_steps']:,} point-steps (stopped points are "
            "compacted away between chunks)."
        )
    if cfg.prune == "halving":
        n_pruned = int((np.asarray(result.pruned_rung) >= 0).sum())
        best_text += (
            f" Successive halving every {cfg.rung_epochs} epochs kept {cfg.keep_fraction:.3g} "
            f"of the points at each rung and stopped {n_pruned} (column pruned_rung)."
        )
    if opt is not None:
        best_text += "\n\n" + stability_text(
            opt.rows, lambda i: f"point {i} ({label(grid.point(i), grid)})"
        )
    return best_text


@register(
    "sweep",
    Sweep,
    smoke=dict(num_epochs=2, max_examples=256, lr=(0.01, 0.1), l2=(0.0, 0.01)),
    headline=(
        "num_points",
        "num_diverged",
        "num_unstable",
        "point_steps",
        "best_by_val_loss.index",
        "best_by_val_loss.val_loss",
        "best_by_val_accuracy.index",
        "best_by_val_accuracy.val_accuracy",
        "wall_seconds",
    ),
)
def sweep(cfg: Sweep, run: RunDir) -> dict:
    """A grid of lr x l2 x momentum x seeds trained in one vmapped call (`jaxlr.engine.sweep`).

    Launch:  python -m experiments.main --experiment=sweep --workdir=runs/sweep \\
               --model=softmax --l2=0,0.001,0.01,0.1 --lr=0.001,0.01,0.1 --seeds=3
             (`--model=logistic` (default): tdt4265_task2 protocol, 2 vs 3, lr 0.05;
             `--model=softmax`: tdt4265_task3 protocol; any field can be overridden.)
    Runtime: the 36-point softmax grid above, 50 epochs: about 3 minutes on 2 (shared) CPU
             cores; the default logistic protocol with one point: about 5 s.
    Result:  table.md / table.csv with one row per point (best in bold), heatmap of the
             validation accuracy over lambda x lr (mean over seeds), curves of all points,
             history_<point>.jsonl, metrics.json with every point and the best one. For the
             grid above: mean validation accuracy about 0.916 at lr 0.01 or 0.1 with lambda
             <= 0.001, 0.89 at lr 0.001, and 0.62 at lr 0.1 with lambda 0.1 (the step is too
             large for the penalty: the accuracy oscillates).
    """
    data = load_splits(cfg.data).data
    tcfg = cfg.train
    grid = grid_of(cfg, np.asarray(data.x_train).dtype)
    prune = Halving(cfg.rung_epochs, cfg.keep_fraction) if cfg.prune == "halving" else None
    result = jsweep.run_sweep(
        tcfg,
        grid,
        data,
        block_size=cfg.block_size,
        log_fn=log.info,
        prune=prune,
        checkpoint_dir=checkpoint_dir(cfg.checkpoint, run),
    )
    if bool(np.all(result.diverged)):
        raise RunFailed(
            f"every one of the {grid.size} sweep points diverged; lower the learning rates "
            "(or raise --diverge_factor)"
        )
    histories = _write_histories(run, result, grid)
    rows = tables.sweep_rows(result)
    records = result.records()
    opt = None
    if cfg.optimum and tcfg.model != "mlp":
        opt = _add_optimum(tcfg, data, result, rows, records)
    for rec in records:
        rec["history"] = histories[rec["index"]]
    table = _sweep_tables(run, result, rows)
    if cfg.search == "grid":
        figures = plots.plot_sweep_heatmaps(result, run.out)
    else:
        figures = [plots.plot_search_scatter(result, run.out)]
    curves = plots.plot_sweep_curves(result, run.out)
    best_loss, best_acc = _best(result, "val_loss"), _best(result, "val_accuracy")
    cost = result.work()
    best_text = _best_text(cfg, grid, result, best_loss, best_acc, cost, opt)
    proto = (
        protocol_text(cfg, data)
        + f" Early stopping {tcfg.early_stopping}. Grid axes "
        + " x ".join(f"{a} {list(grid.values[a])}" for a in grid.axes)
        + f" = {grid.size} points, trained in one vmapped sweep in {result.wall_seconds:.1f} s."
    )
    sections = [
        proto,
        "## Best point\n\n" + best_text,
        "## All points\n\n" + table + "\n(`table.csv` holds the same rows.)",
        "## Figures\n\n"
        + "\n\n".join(f"![sweep figure]({h})" for h in figures)
        + f"\n\n![validation accuracy of every point]({curves})",
    ]
    what = f"{cfg.train.model}, {cfg.data.dataset}"
    tables.write_report(run.out / "report.md", f"Hyper-parameter sweep ({what})", sections)
    return {
        **cost,
        "num_points": grid.size,
        "num_unstable": sum(bool(r.get("unstable")) for r in records),
        "axes": list(grid.axes),
        "shape": list(grid.shape),
        "values": {k: list(v) for k, v in grid.values.items()},
        "num_diverged": int(result.diverged.sum()),
        "best_by_val_loss": best_loss,
        "best_by_val_accuracy": best_acc,
        "points": records,
        "wall_seconds": result.wall_seconds,
    }
