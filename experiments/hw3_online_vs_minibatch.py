"""Homework 3, `hw3_online_vs_minibatch`: the `hw3_mlp` family (784-256-128-10) trained with
batch sizes 1, 32 and 128: wall time, steps/s and test accuracy, their figures and table.
Configs, registration and the course: `experiments.hw3_config`.

Dimension legend: N training examples, M test examples, D features.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments.common import (
    RunDir,
)
from experiments.hw3_config import (
    BatchSizes,
)
from experiments.hw3_mlp import net_name
from jaxlr.data.splits import load_splits
from jaxlr.engine.config import (
    ConfigError,
    make_hparams,
)
from jaxlr.engine.step import schedule_numbers
from jaxlr.engine.train import fit, measure_step_rate, model_for
from jaxlr.report import figures, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.hw3")


def hw3_online_vs_minibatch(cfg: BatchSizes, run: RunDir) -> dict:
    """Online (batch 1) versus mini-batch (32, 128) SGD, same network, same epochs.

    Launch:  python -m experiments.main --experiment=hw3_online_vs_minibatch
             --workdir=runs/hw3_online_vs_minibatch   (--batch_sizes=1,8,32,128 to change)
    Runtime: about 2 min on 2 CPU cores (784-256-128-10, 2 epochs on 60,000 images per
             batch size; batch 1 is 120,000 steps).
    Result:  with one learning rate (0.01) for all, batch 1 is the most accurate per epoch
             (test accuracy about 0.97 after 2 epochs, against ~0.93 for batch 32 and ~0.90
             for batch 128) but runs a few thousand steps/s, so an epoch takes ~10x longer
             than with batch 32; per second of training the mini-batches are ahead early on.
    """
    splits = load_splits(cfg.data)
    data = splits.data
    x_test, y_test = jnp.asarray(splits.x_test), jnp.asarray(splits.y_test)
    n, d = np.shape(data.x_train)
    hp = cfg.hparams
    hparams = make_hparams(hp.lr, hp.l2, hp.momentum, hp.seed, np.asarray(data.x_train).dtype)
    runs, histories = {}, {}
    for b in cfg.batch_sizes:
        if b > n:
            raise ConfigError(
                "batch_sizes", cfg.batch_sizes, f"{b} exceeds the {n} training images"
            )
        key = f"batch_size={b}"
        runs[key], histories[key] = _online_run(cfg, b, hparams, data, x_test, y_test)
        tables.write_history(run.out / f"history_{tables.slug(key)}.jsonl", histories[key])
    _batch_size_figures(
        run.out / "test_accuracy.png",
        run.out / "steps_per_second.png",
        histories,
        runs,
        suptitle=f"{net_name(d, cfg.train)} {cfg.train.activation}, SGD lr {hp.lr:g}, "
        f"{n} training images",
    )
    table = _online_table(runs)
    sections = [
        f"Network {net_name(d, cfg.train)} ({cfg.train.activation}), plain SGD with learning "
        f"rate {hp.lr:g} for every batch size, {cfg.train.num_epochs} epochs over the first {n} "
        f"training images of {cfg.data.dataset} (shuffled every epoch), tested on "
        f"{int(y_test.shape[0])} test images at {cfg.checks_per_epoch} checks per epoch. "
        "Throughput (steps/s) is measured on one extra epoch of a program compiled beforehand "
        "and without checks; the wall time is the training loop with its checks, compilation "
        "excluded.",
        "## Result\n\n" + table,
        "## Figures\n\n![test accuracy](test_accuracy.png)\n\n"
        "![steps per second](steps_per_second.png)\n\n"
        "Histories: `history_batch_size_<B>.jsonl`.",
    ]
    tables.write_report(run.out / "report.md", "hw3: online versus mini-batch SGD", sections)
    return {
        **runs,
        "batch_sizes": list(cfg.batch_sizes),
        "num_train": int(n),
        "learning_rate": hp.lr,
    }


def _batch_size_figures(
    accuracy_path,
    throughput_path,
    histories: Mapping[str, Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Any]],
    *,
    suptitle: str,
):
    """Test accuracy against epochs and against training time, and steps/s, of each run.

    Args:
      histories: run name -> history (checks: the test accuracy).
      runs: run name -> {"steps_per_epoch", "steps_per_second", "test_accuracy"}.
    Checks happen at regular steps and a compiled epoch runs at a steady rate, so the
    training time at a check is its step count over the measured throughput.
    """
    curves = {}
    for key, h in histories.items():
        m, sps = runs[key]["steps_per_epoch"], runs[key]["steps_per_second"]
        steps = len(h["step"])
        cstep = np.asarray(h["check_step"], np.float64) + 1.0
        curves[key] = {
            "epoch": np.append(cstep / m, steps / m),
            "time": np.append(cstep / sps, steps / sps),
            "acc": np.append(h["val_accuracy"], runs[key]["test_accuracy"]),
        }
    acc_lo = min(float(np.nanpercentile(c["acc"], 10)) for c in curves.values())
    ylim = (max(0.0, acc_lo - 0.02), 1.0)
    a = figures.plot_side_by_side(
        accuracy_path,
        [
            {
                "series": {k: (c["epoch"], c["acc"]) for k, c in curves.items()},
                "xlabel": "epoch",
                "ylabel": "test accuracy",
                "title": "test accuracy vs epochs",
                "ylim": ylim,
                "marker": ".",
            },
            {
                # Without the check after step 0: one step's time would stretch the log axis.
                "series": {k: (c["time"][1:], c["acc"][1:]) for k, c in curves.items()},
                "xlabel": "training time (s, checks excluded; log scale)",
                "ylabel": "test accuracy",
                "title": "test accuracy vs training time",
                "ylim": ylim,
                "logx": True,
                "marker": ".",
            },
        ],
        suptitle=suptitle,
    )
    b = figures.plot_bar(
        throughput_path,
        list(runs),
        [r["steps_per_second"] for r in runs.values()],
        ylabel="steps / s (log scale)",
        title="training throughput (one epoch, compiled, no checks)",
        fmt="{:,.0f}",
        logy=True,
    )
    return a, b


def _online_run(cfg: BatchSizes, b: int, hparams, data, x_test, y_test) -> tuple[dict, dict]:
    """Trains and measures the network with batch size `b`: (its numbers, its history)."""
    n, d = np.shape(data.x_train)
    hp = cfg.hparams
    key = f"batch_size={b}"
    m = schedule_numbers(dataclasses.replace(cfg.train, batch_size=b), n).batches_per_epoch
    every = max(1, m // cfg.checks_per_epoch)
    tcfg = dataclasses.replace(cfg.train, batch_size=b, eval_every=every)
    log.info("[%s] %d steps per epoch, %d epochs, lr %g", key, m, tcfg.num_epochs, hp.lr)
    result = fit(
        tcfg,
        hparams,
        data,
        time_epochs=True,
        log_fn=lambda msg, key=key: log.info("[%s] %s", key, msg),
    )
    model = model_for(tcfg, d, np.asarray(data.x_train).dtype)
    test = jmetrics.evaluate(model, result.params, x_test, y_test)
    sps = measure_step_rate(tcfg, hparams, data)
    h = result.history
    numbers = {
        "batch_size": b,
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "wall_seconds": result.timing["run_seconds"],
        "compile_seconds": float(result.timing["compile_seconds"]),
        "epoch_seconds": [float(s) for s in result.timing["epoch_seconds"]],
        "steps": int(len(h["step"])),
        "steps_per_epoch": m,
        "steps_per_second": sps,
        "train_seconds_per_epoch": m / sps,
        "examples_per_second": sps * b,
        "eval_every": every,
    }
    return numbers, h


def _online_table(runs: dict) -> str:
    """The result table of hw3_online_vs_minibatch: one row per batch size."""
    return tables.markdown_table(
        [
            "run",
            "test accuracy",
            "steps",
            "steps/s",
            "examples/s",
            "s per epoch (training)",
            "wall (s, with checks)",
            "compile (s)",
        ],
        [
            [
                key,
                f"{r['test_accuracy']:.4f}",
                str(r["steps"]),
                f"{r['steps_per_second']:,.0f}",
                f"{r['examples_per_second']:,.0f}",
                f"{r['train_seconds_per_epoch']:.2f}",
                f"{r['wall_seconds']:.1f}",
                f"{r['compile_seconds']:.1f}",
            ]
            for key, r in runs.items()
        ],
        align="lrrrrrrr",
    )
