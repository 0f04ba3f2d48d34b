"""What every experiment shares: running one under its workdir, training one run, report prose.

An experiment is `fn(cfg, run) -> metrics` registered with `experiments.config.register`: `cfg`
is its typed config, `run.out` the folder its outputs go to (staged, published as one set
when it returns) and `run.workdir` the workdir the user named (checkpoints for resuming live
there, outside the staged set).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments.config import EXPERIMENTS, make_config, resolve_path
from jaxlr import report
from jaxlr.config import TrainConfig, make_hparams
from jaxlr.io import atomic_write_json
from jaxlr.sections import DataConfig
from jaxlr.train import Data, TrainResult, fit, schedule_numbers

log = logging.getLogger("jaxlr.experiments")


class RunFailed(RuntimeError):
    """A run that failed in an expected way (every grid point diverged): one line, exit 1."""


class RunDir(NamedTuple):
    """Where a run writes: `out` (its outputs) and `workdir` (the folder the user named)."""

    out: Path
    workdir: Path


def run_experiment(name: str, workdir: str | Path, overrides: dict | None = None) -> dict:
    """Runs experiment `name` into `workdir`; returns its metrics (also `metrics.json`).

    The config is built and checked first (`ConfigError` before anything is written). The
    run holds the workdir's lock, writes into a staging folder and publishes config.json,
    metrics.json, report, histories and figures together when it succeeds; a failed or
    interrupted run leaves the workdir's earlier outputs as they were.
    """
    from jaxlr import workdir as jworkdir

    cfg = make_config(name, overrides)
    workdir = Path(workdir)
    with jworkdir.Staging(workdir) as stage:
        out = stage.dir
        atomic_write_json(out / "config.json", report.jsonable({"experiment": name, **cfg.flat()}))
        t0 = time.perf_counter()
        metrics = EXPERIMENTS[name].fn(cfg, RunDir(out, workdir))
        metrics.setdefault("wall_seconds_total", time.perf_counter() - t0)
        atomic_write_json(out / "metrics.json", report.jsonable(metrics))
    log.info("wrote %s", workdir / "metrics.json")
    return metrics


def checkpoint_file(folder: str, run: RunDir, key: str | None) -> Path | None:
    """The resumable checkpoint of run `key` in `folder` (relative to the workdir); '' = none."""
    if not folder:
        return None
    return resolve_path(folder, run.workdir) / f"{report.slug(key or 'run')}.npz"


def train_one(cfg, data: Data, run: RunDir, key: str | None = None, **changes) -> TrainResult:
    """Trains one run of `cfg` (its `train` and `hparams` sections) with `jaxlr.train.fit`.

    Args:
      cfg: an experiment config with `train`, `hparams` (`RunHParams`) and `checkpoint`.
      data: preprocessed arrays.
      run: where the experiment writes (checkpoints go under the workdir).
      key: run name in logs and checkpoint names (None for an experiment's only run).
      **changes: `TrainConfig` fields that differ for this run (schedule=..., shuffle=...);
        `lr=` and `l2=` override the hyper-parameters.
    """
    hp = cfg.hparams
    lr, l2 = changes.pop("lr", hp.lr), changes.pop("l2", hp.l2)
    tcfg = dataclasses.replace(cfg.train, **changes)
    hparams = make_hparams(
        lr, l2, momentum=hp.momentum, seed=hp.seed, dtype=np.asarray(data.x_train).dtype
    )
    prefix = f"[{key}] " if key else ""
    return fit(
        tcfg,
        hparams,
        data,
        checkpoint_path=checkpoint_file(getattr(cfg, "checkpoint", ""), run, key),
        log_fn=lambda msg: log.info("%s%s", prefix, msg),
    )


def run_metrics(result: TrainResult, tcfg: TrainConfig, num_train: int) -> dict:
    """metrics.json entry of one run: final numbers of the returned weights, schedule, time."""
    out = dict(result.metrics)
    sched = schedule_numbers(tcfg, num_train)
    out["steps_per_epoch"] = int(sched.batches_per_epoch)
    out["eval_every"] = int(sched.eval_every)
    out["wall_seconds"] = float(result.wall_seconds)
    return out


def task_name(data: DataConfig) -> str:
    """What is classified: "2 vs 3" or "ten digits" (for titles)."""
    return f"{data.digits[0]} vs {data.digits[1]}" if data.binary else "ten digits"


def data_text(data_cfg: DataConfig, data: Data) -> str:
    """One sentence on the data of a run, from its config."""
    n, v = int(np.shape(data.x_train)[0]), int(np.shape(data.x_val)[0])
    what = (
        f"digits {data_cfg.digits[0]} (label 1) vs {data_cfg.digits[1]} (label 0)"
        if data_cfg.binary
        else "all ten digits"
    )
    return (
        f"Data: {data_cfg.dataset}, {what}, {n} training / {v} validation examples (split "
        f"`{data_cfg.split}`, scale `{data_cfg.scale}`, bias feature {data_cfg.bias_feature})."
    )


def protocol_text(cfg, data: Data, tcfg: TrainConfig | None = None) -> str:
    """The data and training protocol of a run as report prose, from its config."""
    tcfg = tcfg or cfg.train
    sched = schedule_numbers(tcfg, int(np.shape(data.x_train)[0]))
    lr = cfg.hparams.lr
    lr_text = f"{lr:g}" if isinstance(lr, float) else ", ".join(f"{v:g}" for v in lr)
    return (
        f"{data_text(cfg.data, data)} Model `{tcfg.model}`, optimizer `{tcfg.optimizer}`, "
        f"schedule `{tcfg.schedule}`, learning rate {lr_text}, batch {tcfg.batch_size}, up to "
        f"{tcfg.num_epochs} epochs ({sched.batches_per_epoch} steps each), shuffle "
        f"{tcfg.shuffle}, validation every {sched.eval_every} steps, dtype {cfg.data.dtype}."
    )
