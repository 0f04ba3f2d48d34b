"""The `sweep` experiment: any grid of learning rate x L2 lambda x momentum x seed in one call.

Protocol defaults follow the model: `--model=logistic` (the default) is the `tdt4265_task2`
protocol (digits 2 vs 3, lr 0.05, 50 epochs, batch 128, no shuffling); `--model=softmax`
(and `mlp`) the `tdt4265_task3` protocol (all ten digits, lr 0.01, shuffling). A value
given on the command line always wins over the protocol's.

Dimension legend: S grid points, T steps.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from experiments.common import (
    TENSORBOARD_DIR,
    RunDir,
    RunFailed,
    checkpoint_dir,
    optimum_ahead,
    optimum_for,
    protocol_text,
    stability_text,
    tensorboard_observer,
)
from experiments.sweep_config import HALVING_REFUSAL, Sweep
from jaxlr.data.splits import load_splits
from jaxlr.engine import grid as jgrid
from jaxlr.engine import shards as jshards
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.config import ConfigError
from jaxlr.engine.grid import random_points
from jaxlr.engine.halving import Halving
from jaxlr.engine.sweep_result import SweepResult
from jaxlr.host.io import atomic_write_text
from jaxlr.report import sweep_plots, tables

log = logging.getLogger("jaxlr.experiments.sweep")

# Settings of one task that do not change any point's numbers: left out of the fingerprint
# that every shard of one sweep must share.
TASK_LOCAL = (
    "shard",
    "checkpoint",
    "block_size",
    "coordinator_address",
    "num_processes",
    "process_id",
    "data_dir",
)
SHARD_FILE = "shard.npz"


def shard_of(cfg: Sweep, environ) -> jshards.Shard | None:
    """The shard this run trains: --shard, else the SLURM array task's; None for every point.

    Raises:
      RunFailed: the SLURM variables do not describe a shard, or ask for halving (one line).
    """
    if cfg.shard == "none":
        return None
    if cfg.shard:
        shard, source = jshards.parse_shard(cfg.shard), f"--shard={cfg.shard}"
    else:
        try:
            shard = jshards.shard_from_env(environ)
        except ValueError as err:
            raise RunFailed(f"SLURM job array: {err} (or --shard=none for every point)") from None
        if shard is None:
            return None
        source = f"SLURM array task {shard} (SLURM_ARRAY_TASK_ID)"
        if cfg.prune == "halving":
            raise RunFailed(
                f"{source}: a shard {HALVING_REFUSAL}; or --shard=none to train every point "
                "in this task"
            )
    size = grid_of(cfg, np.float64).size
    if not len(jshards.shard_indices(size, shard)):
        message = (
            f"shard {shard} of this {size}-point grid holds no point: use at most {size} shards"
        )
        if cfg.shard:
            raise ConfigError("shard", cfg.shard, message)
        raise RunFailed(f"{source}: {message}")
    return shard


def fingerprint_config(cfg: Sweep) -> dict:
    """The settings every shard of one sweep must share (all but `TASK_LOCAL`), JSON-ready."""
    return tables.jsonable({k: v for k, v in cfg.flat().items() if k not in TASK_LOCAL})


def _write_shard(cfg: Sweep, run: RunDir, data, grid, shard, train_args: dict) -> dict:
    """Trains one shard and publishes its result (shard.npz), table and a short report."""
    idx = jshards.shard_indices(grid.size, shard)
    log.info("shard %s: points %d..%d of %d", shard, idx[0], idx[-1], grid.size)
    result = jshards.run_shard(cfg.train, grid, data, shard, **train_args)
    fingerprint = jshards.sweep_fingerprint(fingerprint_config(cfg), grid, data)
    jshards.save_shard(run.out / SHARD_FILE, result, shard, idx, fingerprint)
    rows = tables.sweep_rows(result)
    records = result.records()
    for row, rec, i in zip(rows, records, idx):
        row["index"] = rec["index"] = int(i)
    table = _sweep_tables(run, result, rows)
    cost = result.work()
    text = (
        f"Shard {shard} of a sweep of {grid.size} points: points {idx[0]} to {idx[-1]} "
        f"(indices of the whole grid), trained in {result.wall_seconds:.1f} s; "
        f"{int(result.diverged.sum())} diverged. Its result is `{SHARD_FILE}`; when every "
        "shard has finished, `python -m experiments.main --experiment=sweep_merge "
        "--workdir=DIR --shards=W0,W1,...` writes the whole sweep's table, figures and best point."
    )
    sections = [text, "## Points of this shard\n\n" + table]
    what = f"{cfg.train.model}, {cfg.data.dataset}"
    tables.write_report(run.out / "report.md", f"Sweep shard {shard} ({what})", sections)
    return {
        **cost,
        "shard": str(shard),
        "num_points": int(len(idx)),
        "num_points_total": grid.size,
        "num_diverged": int(result.diverged.sum()),
        "points": records,
    }


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


def _best(result: SweepResult, by: str) -> dict | None:
    if result.diverged.all():
        return None
    i = result.best_index(by)
    return {"index": i, **result.records()[i]}


def _write_histories(run: RunDir, result: SweepResult, grid: jgrid.Grid) -> dict:
    """Writes every point's history; returns point index -> its file name."""
    histories = {}
    for i, h in enumerate(result.histories):
        label = sweep_plots.sweep_point_label(grid.point(i), grid)
        name = f"history_{i:03d}_{tables.slug(label)}.jsonl"
        tables.write_history(run.out / name, h)
        histories[i] = name
    return histories


def _write_tensorboard(cfg: Sweep, run: RunDir, result, records: list, live: bool) -> None:
    """The sweep's TensorBoard HParams view (and curves, unless written live)."""
    from jaxlr.report.observers import write_sweep_hparams, write_sweep_tensorboard

    root = run.out / TENSORBOARD_DIR
    points = [result.grid.point(i) for i in range(result.grid.size)]
    if live:
        write_sweep_hparams(root, points, records, result.histories, enabled=run.tensorboard)
    else:
        write_sweep_tensorboard(
            root,
            result.config,
            points,
            result.histories,
            records,
            num_batches=result.num_batches,
            enabled=run.tensorboard,
        )


def _add_optimum(cfg: Sweep, splits, result: SweepResult, rows, records, ahead=None):
    """Adds each point's exact optimum, gap and learning-rate limit to its row and record."""
    opt = optimum_for(
        cfg.train,
        cfg.data,
        splits,
        [r["l2"] for r in rows],
        [r["learning_rate"] for r in rows],
        np.asarray(result.metrics["train_objective"], np.float64),
        ahead=ahead,
    )
    tables.merge_optimum(
        records, opt.rows, diverged=[r["diverged"] for r in rows], converged_only=True
    )
    for row, rec in zip(rows, records):
        # The table leaves a cell empty where there is no number.
        row.update({k: "" if rec[k] is None else rec[k] for k in tables.OPTIMUM_FIELDS})
    return opt


def _sweep_tables(run: RunDir, result: SweepResult, rows: list[dict]) -> str:
    """Writes table.csv and table.md (best by validation loss in bold); returns the markdown."""
    atomic_write_text(run.out / "table.csv", tables.sweep_csv(result, rows=rows))
    table = tables.sweep_markdown(result, rows=rows)
    atomic_write_text(run.out / "table.md", table)
    return table.rstrip("\n")


def _best_text(cfg: Sweep, grid, result, best_loss, best_acc, cost: dict, opt) -> str:
    """The report's best-point section: the best points, divergence, work, pruning, stability."""
    tcfg = cfg.train
    label = sweep_plots.sweep_point_label
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
    shard = shard_of(cfg, os.environ)
    splits = load_splits(cfg.data)
    data = splits.data
    grid = grid_of(cfg, np.asarray(data.x_train).dtype)
    prune = Halving(cfg.rung_epochs, cfg.keep_fraction) if cfg.prune == "halving" else None
    # The points' curves are written live; their HParams rows once the optimum is known.
    board = tensorboard_observer(run, sweep=True, config=cfg.to_dict(), hparams_at_end=False)
    train_args = dict(
        block_size=cfg.block_size,
        log_fn=log.info,
        checkpoint_dir=checkpoint_dir(cfg.checkpoint, run),
        observers=[board],
    )
    if shard is not None:
        return _write_shard(cfg, run, data, grid, shard, train_args)
    # The optimum's programs and data-only work run on a thread while the points train.
    l2_S = np.asarray(grid.hparams.l2)
    ahead = optimum_ahead(cfg.train, splits, l2_S, cfg.data) if cfg.optimum else None
    result = jsweep.run_sweep(cfg.train, grid, data, prune=prune, **train_args)
    return write_sweep_outputs(cfg, run, splits, result, live_tensorboard=True, ahead=ahead)


def write_sweep_outputs(
    cfg: Sweep,
    run: RunDir,
    splits,
    result: SweepResult,
    how: str | None = None,
    live_tensorboard: bool = False,
    ahead=None,
) -> dict:
    """Writes a whole sweep's outputs into `run.out`; returns its metrics.json content.

    The one place that turns a `SweepResult` into files: table.csv / table.md, heatmaps or
    the search scatter, curves, histories, report.md, and the metrics (every point, the best
    ones, work counts). The `sweep` experiment calls it on its result and `sweep_merge` on the
    result stitched from shards.

    Args:
      cfg: the sweep's config.
      run: where to write.
      splits: the config's `jaxlr.data.splits.Splits` (the exact optimum is solved on the
        float64 features of its images; counts for the report).
      result: every point of the grid.
      how: how the points were trained, for the report (default: one vmapped sweep and its
        wall time).
      live_tensorboard: the points' TensorBoard curves were written while training
        (`TensorBoardObserver`): only their HParams rows are added; False writes the whole
        TensorBoard set now (e.g. merged shards).
      ahead: the `experiments.common.optimum_ahead` started before training, or None.
    Raises:
      RunFailed: every point diverged.
    """
    data = splits.data
    tcfg = cfg.train
    grid = result.grid
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
        opt = _add_optimum(cfg, splits, result, rows, records, ahead)
    _write_tensorboard(cfg, run, result, records, live_tensorboard)
    for rec in records:
        rec["history"] = histories[rec["index"]]
    table = _sweep_tables(run, result, rows)
    if cfg.search == "grid":
        figures = sweep_plots.plot_sweep_heatmaps(result, run.out)
    else:
        figures = [sweep_plots.plot_search_scatter(result, run.out)]
    curves = sweep_plots.plot_sweep_curves(result, run.out)
    best_loss, best_acc = _best(result, "val_loss"), _best(result, "val_accuracy")
    cost = result.work()
    best_text = _best_text(cfg, grid, result, best_loss, best_acc, cost, opt)
    proto = (
        protocol_text(cfg, data)
        + f" Early stopping {tcfg.early_stopping}. Grid axes "
        + " x ".join(f"{a} {list(grid.values[a])}" for a in grid.axes)
        + f" = {grid.size} points, "
        + (how or f"trained in one vmapped sweep in {result.wall_seconds:.1f} s")
        + "."
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
