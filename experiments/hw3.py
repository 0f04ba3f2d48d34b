"""Deep-learning homework 3: a 98% two-hidden-layer network, online versus mini-batch SGD, a
regularized 4-vs-9 logistic regression tuned by a checkpointed grid, and its worst mistakes.

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FLAG=V]

- `hw3_mlp`: the 784-3136-1568-10 ReLU network, plain SGD lr 0.1, batch 32, 6 epochs on all
  60,000 training images, tested on the 10,000 test images (at least 98% required);
- `hw3_online_vs_minibatch`: the same family (784-256-128-10) with batch sizes 1, 32 and 128:
  wall time, steps/s and test accuracy;
- `hw3_logreg_grid`: 9 (label 1) vs 4 (label 0), a lambda x lr grid of full-batch gradient
  descent in one vmapped sweep; the best point is checkpointed, read back and tested on the
  first 1000 test images of 4s and 9s;
- `hw3_misclassified`: the 20 most confidently misclassified of those 1000 test images, from
  that checkpoint, written into its own workdir.

Inputs of every hw3 experiment are scaled to [0, 1] (`scale=unit`): the 98% network trains
at least as well with them as with [-1, 1] (see WORKSPACE.md), and the homework's data
loading gives [0, 1] pixels. The networks have explicit bias vectors (784 inputs, no bias
feature); the logistic regression uses the bias trick (785 inputs, the last weight is w0,
not penalised).

Dimension legend: N training examples, V validation examples, M test examples, D features,
K classes, S grid points.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import (
    RunDir,
    RunFailed,
    class_words,
    optimum_for,
    optimum_params,
    stability_text,
    task_name,
    train_one,
)
from experiments.hw3_config import (
    CHECKPOINT_KIND,
    CHECKPOINT_NAME,
    GRID_COMMAND,
    BatchSizes,
    LogregGrid,
    Misclassified,
    Mlp,
)
from jaxlr.data.splits import features, float_dtype, load_splits, test_subset
from jaxlr.engine.config import (
    ConfigError,
    TrainConfig,
    make_hparams,
)
from jaxlr.engine.grid import make_grid
from jaxlr.engine.step import schedule_numbers, train_eval_count
from jaxlr.engine.sweep import run_sweep
from jaxlr.engine.train import fit, measure_step_rate, model_for
from jaxlr.host import checkpoint as ckpt
from jaxlr.report import metrics as jmetrics
from jaxlr.report import plots, tables

log = logging.getLogger("jaxlr.experiments.hw3")


def _net_name(d: int, tcfg: TrainConfig) -> str:
    return "-".join(map(str, (d, *tcfg.hidden, tcfg.num_classes)))


# ---------------------------------------------------------------------------------------------
# hw3_mlp: the 98% network.


def hw3_mlp(cfg: Mlp, run: RunDir) -> dict:
    """784-3136-1568-10 ReLU network, SGD lr 0.1, batch 32, 6 epochs: at least 98% test accuracy.

    Launch:  python -m experiments.main --experiment=hw3_mlp --workdir=runs/hw3_mlp
             (--grad=autodiff for jax.grad, --activation=sigmoid, --split=holdout for a
             validation split held out from the training images)
    Runtime: about 2 min on 2 CPU cores (11,250 steps of batch 32 at ~110 steps/s, 12 checks).
    Result:  test accuracy about 0.983 on the 10,000 MNIST test images (>= 0.980 required).
    """
    splits = load_splits(cfg.data)
    data, tcfg = splits.data, cfg.train
    n, d = np.shape(data.x_train)
    m = schedule_numbers(tcfg, n).batches_per_epoch
    log.info(
        "hw3_mlp: %s %s, grad %s, %d training images, %d steps per epoch",
        _net_name(d, tcfg),
        tcfg.activation,
        tcfg.grad,
        n,
        m,
    )
    result = train_one(cfg, data, run)
    model = model_for(tcfg, d, np.asarray(data.x_train).dtype)
    test = jmetrics.evaluate(model, result.params, splits.x_test, splits.y_test)
    cm_KK = jmetrics.confusion_matrix(splits.y_test, test.predictions, tcfg.num_classes)
    per_class = jmetrics.per_class_accuracy(cm_KK)
    steps = result.metrics["steps"]
    metrics = {
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "test_correct": test.correct,
        "test_total": test.total,
        "train_accuracy": result.metrics["train_accuracy"],
        "train_loss": result.metrics["train_loss"],
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": cm_KK.tolist(),
        "wall_seconds": float(result.wall_seconds),
        "steps": steps,
        "steps_per_second": steps / max(result.wall_seconds, 1e-9),
        "epochs": result.metrics["epochs"],
        "steps_per_epoch": m,
        "grad": tcfg.grad,
        "activation": tcfg.activation,
        "hidden": list(tcfg.hidden),
        "num_train": int(n),
    }
    holdout = not splits.test_is_val
    if holdout:
        metrics["val_accuracy"] = result.metrics["val_accuracy"]
        metrics["val_loss"] = result.metrics["val_loss"]
    test_name = "validation" if holdout else "test"
    tables.write_history(run.out / "history.jsonl", result.history)
    title = f"{_net_name(d, tcfg)} {tcfg.activation} ({tcfg.grad}), {cfg.data.dataset}"
    _mlp_figures(run, cfg, result, m, n, title, test_name, metrics, cm_KK)
    sections = _mlp_sections(cfg, d, n, m, len(data.y_val), test_name, metrics, cm_KK)
    tables.write_report(run.out / "report.md", f"hw3_mlp: {title}", sections)
    return metrics


def _mlp_figures(
    run: RunDir, cfg: Mlp, result, m: int, n: int, title: str, test_name: str, metrics: dict, cm_KK
) -> None:
    """hw3_mlp's figures: loss and accuracy curves, per-class accuracy, confusion matrix."""
    tcfg, words = cfg.train, class_words(cfg.data)
    per_class = jmetrics.per_class_accuracy(cm_KK)
    final_curve = {
        "test_loss": result.metrics["val_loss"],
        "test_accuracy": result.metrics["val_accuracy"],
    }
    _epoch_history_figures(
        run.out / "loss.png",
        run.out / "accuracy.png",
        result.history,
        m,
        final_curve,
        title,
        test_name,
        train_eval_count(tcfg, n),
    )
    plots.plot_bar(
        run.out / "per_class_accuracy.png",
        list(words.class_names),
        per_class,
        xlabel="class",
        ylabel="test accuracy",
        title=f"{title}: per-class test accuracy (overall {metrics['test_accuracy']:.4f})",
        fmt="{:.3f}",
        ylim=(max(0.0, float(per_class.min()) - 0.03), 1.0),
    )
    plots.plot_confusion(
        run.out / "confusion_matrix.png",
        cm_KK,
        f"{title}: test confusion matrix ({metrics['test_total']} images)",
        class_names=words.class_names,
        noun=words.noun,
    )


def _epoch_history_figures(
    loss_path,
    accuracy_path,
    history: Mapping[str, Any],
    steps_per_epoch: int,
    final: Mapping[str, float],
    title: str,
    test_name: str,
    n_train_eval: int,
):
    """Loss and accuracy figures of one run against epochs, ending with a final test point.

    Loss: batch loss (faint), its running mean over M // 10 batches, and the `test_name`
    loss at the checks plus `final["test_loss"]` at the end; y from 0 to 1.15 times the
    highest smoothed loss after the first window (at least 0.1). Accuracy: the training
    accuracy at the checks and the `test_name` accuracy plus `final["test_accuracy"]`,
    zoomed on the second half of training (from just below the lowest value there, or
    0.975 at most, to 1.0005).

    Args:
      loss_path, accuracy_path: destination PNGs.
      history: a `jaxlr.engine.train` history.
      steps_per_epoch: M, for the x axis (epochs completed after each step).
      final: {"test_loss": ..., "test_accuracy": ...} after the last step.
      title: prefix of both titles.
      test_name: what the checks evaluate ("test" or "validation").
      n_train_eval: training images each check scores (for the legend).

    Returns:
      (loss_path, accuracy_path) as Paths.
    """
    m = int(steps_per_epoch)
    window = max(1, m // 10)
    h = {k: np.asarray(v) for k, v in history.items()}
    ep = jmetrics.epochs_done(h["step"], m)
    cep = jmetrics.epochs_done(h["check_step"], m)
    last = float(ep[-1]) if len(ep) else 0.0
    smooth = jmetrics.running_mean(h["train_loss"], window)
    loss = {
        "training loss (batch)": (ep, h["train_loss"]),
        f"training loss (mean of last {window} batches)": (ep, smooth),
        f"{test_name} loss": (
            np.append(cep, last),
            np.append(h["val_loss"], final["test_loss"]),
        ),
    }
    hi = max(float(np.nanmax(smooth[window:])) if len(smooth) > window else 1.0, 0.1)
    a = plots.plot_curves(
        loss_path,
        loss,
        styles={
            "training loss (batch)": {"alpha": 0.25, "linewidth": 0.5, "color": "C0"},
            f"training loss (mean of last {window} batches)": {"color": "C0", "linewidth": 1.8},
            f"{test_name} loss": {"color": "C1", "marker": "o", "linewidth": 1.5},
        },
        xlabel="epoch",
        ylabel="cross-entropy loss",
        title=f"{title}: loss",
        ylim=(0.0, 1.15 * hi),
    )
    acc = {
        f"training accuracy (first {n_train_eval} training images)": (cep, h["train_accuracy"]),
        f"{test_name} accuracy": (
            np.append(cep, last),
            np.append(h["val_accuracy"], final["test_accuracy"]),
        ),
    }
    # Zoomed on the second half of training: the first checks (10% at step 0) would squash
    # the differences that matter near 98%.
    late = cep >= 0.5 * last
    vals = np.concatenate(
        [h["train_accuracy"][late], h["val_accuracy"][late], [final["test_accuracy"]]]
    )
    lo = float(np.nanmin(vals)) if np.isfinite(vals).any() else 0.9
    b = plots.plot_curves(
        accuracy_path,
        acc,
        marker="o",
        xlabel="epoch",
        ylabel="accuracy",
        title=f"{title}: accuracy",
        ylim=(max(0.0, min(lo, 0.98) - 0.005), 1.0005),
    )
    return a, b


def _mlp_sections(
    cfg: Mlp, d: int, n: int, m: int, num_val: int, test_name: str, metrics: dict, cm_KK
) -> list[str]:
    """hw3_mlp's report sections: the protocol, the result table, the figures."""
    tcfg, names = cfg.train, class_words(cfg.data).class_names
    confusions = ", ".join(
        f"{names[t]} as {names[p]} ({c})" for t, p, c in jmetrics.top_confusions(cm_KK, 3)
    )
    result_table = tables.markdown_table(
        ["test accuracy", "test loss", "correct", "train accuracy (all)", "wall (s)", "steps/s"],
        [
            [
                f"{metrics['test_accuracy']:.4f}",
                f"{metrics['test_loss']:.4f}",
                f"{metrics['test_correct']} / {metrics['test_total']}",
                f"{metrics['train_accuracy']:.4f}",
                f"{metrics['wall_seconds']:.1f}",
                f"{metrics['steps_per_second']:.1f}",
            ]
        ],
        align="rrrrrr",
    )
    return [
        f"Network {_net_name(d, tcfg)}, {tcfg.activation} hidden units, softmax output, "
        f"{tcfg.init} initialisation (Glorot for `auto`), explicit biases; inputs scaled "
        f"`{cfg.data.scale}`. Plain SGD, learning rate {cfg.hparams.lr:g}, batch "
        f"{tcfg.batch_size}, {tcfg.num_epochs} epochs of {m} steps on {n} training images of "
        f"{cfg.data.dataset} (split `{cfg.data.split}`, shuffled every epoch: {tcfg.shuffle}), "
        f"gradients `{tcfg.grad}`, dtype {cfg.data.dtype}. Checks every {tcfg.eval_every} "
        f"steps on the {num_val} {test_name} images and the first "
        f"{train_eval_count(tcfg, n)} training images.",
        "## Result\n\n" + result_table + "\n\nWall time includes compilation and the checks. "
        f"Most frequent confusions: {confusions or 'none'}.",
        "## Figures\n\n"
        "![loss](loss.png)\n\n![accuracy](accuracy.png)\n\n"
        "![per-class accuracy](per_class_accuracy.png)\n\n"
        "![confusion matrix](confusion_matrix.png)\n\n"
        "History: `history.jsonl` (training loss per step, checks merged into their step).",
    ]


# ---------------------------------------------------------------------------------------------
# hw3_online_vs_minibatch.


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
        suptitle=f"{_net_name(d, cfg.train)} {cfg.train.activation}, SGD lr {hp.lr:g}, "
        f"{n} training images",
    )
    table = _online_table(runs)
    sections = [
        f"Network {_net_name(d, cfg.train)} ({cfg.train.activation}), plain SGD with learning "
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
    a = plots.plot_side_by_side(
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
    b = plots.plot_bar(
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


# ---------------------------------------------------------------------------------------------
# hw3_logreg_grid and hw3_misclassified.


def hw3_logreg_grid(cfg: LogregGrid, run: RunDir) -> dict:
    """9 (label 1) vs 4 (label 0): lambda x lr grid of full-batch GD in one vmapped sweep.

    Launch:  python -m experiments.main --experiment=hw3_logreg_grid --workdir=runs/hw3_logreg_grid
             (--l2=0.01,0.5,1 --lr=0.1,0.5,1 are the defaults)
    Runtime: about 30 s on 2 CPU cores (9 points x 1000 full-batch steps of 9,847 images).
    Result:  best point lambda 0.01, lr 0.5 (validation accuracy 0.965 on 1,944 held-out 4s
             and 9s); 940 of the first 1000 4/9 test images right; checkpoint logreg_best.npz
             beside the report (read by hw3_misclassified).
    """
    splits = load_splits(cfg.data)
    data = splits.data
    n, d = np.shape(data.x_train)
    tcfg = dataclasses.replace(cfg.train, batch_size=int(n))
    dtype = np.asarray(data.x_train).dtype
    hp = cfg.hparams
    grid = make_grid(learning_rate=hp.lr, l2=hp.l2, seed=(hp.seed,), dtype=dtype)
    res = run_sweep(tcfg, grid, data, block_size=cfg.block_size, log_fn=log.info)
    if bool(np.all(res.diverged)):
        raise RunFailed(
            f"every one of the {grid.size} grid points diverged; lower the learning rates "
            "(or raise --diverge_factor)"
        )
    # Highest validation accuracy; ties go to the lower validation cross-entropy.
    best = res.best_index("val_accuracy", then="val_cross_entropy")
    point = grid.point(best)

    # Save the best point's weights, then read them back from disk for the test.
    path = run.out / CHECKPOINT_NAME
    _save_best(path, cfg, tcfg, res, best, point)
    model = model_for(tcfg, d, dtype)
    params, meta = ckpt.load_params(path, model.init(jax.random.PRNGKey(0)), kind=CHECKPOINT_KIND)
    images, x_test, y_test, _ = test_subset(cfg.data)
    train = jmetrics.evaluate(model, params, data.x_train, data.y_train, point["l2"])
    test = jmetrics.evaluate(model, params, x_test, y_test, point["l2"])

    points = _grid_points(res, grid)
    for i in range(grid.size):
        tables.write_history(run.out / f"history_{i:02d}.jsonl", res.histories[i])
    opt_text = ""
    if cfg.optimum:
        optimum_test = _grid_optimum(cfg, tcfg, splits, points, hp.l2, images, y_test)
        opt_text = _optimum_text(cfg, points, optimum_test, len(y_test))
    _grid_figures(run.out, res, grid, num_val=len(data.y_val), num_epochs=tcfg.num_epochs)
    metrics = {
        "l2": point["l2"],
        "learning_rate": point["learning_rate"],
        "val_accuracy": points[best]["val_accuracy"],
        "test_correct": test.correct,
        "test_total": test.total,
        "test_accuracy": test.accuracy,
        "final_objective": train.objective,
        "final_train_cross_entropy": train.loss,
        "test_objective": test.objective,
        "test_cross_entropy": test.loss,
        "checkpoint": CHECKPOINT_NAME,
        "checkpoint_step": int(meta["step"]),
        "best_index": best,
        "num_train": int(n),
        "num_val": int(len(data.y_val)),
        "num_diverged": int(np.sum(res.diverged)),
        "num_unstable": int(sum(bool(p.get("unstable")) for p in points)),
        "wall_seconds": float(res.wall_seconds),
        "grid": points,
    }
    if cfg.optimum:
        metrics["optimum_test_correct"] = {f"{k:g}": v for k, v in optimum_test.items()}
    headers, rows = _grid_table(points)
    align = "r" * (len(headers) - 1) + "l"  # the status column last
    table = tables.markdown_table(headers, rows, align=align, bold=(best,))
    sections = _grid_sections(cfg, tcfg, metrics, splits.num_train_images, table, opt_text)
    tables.write_report(
        run.out / "report.md",
        f"hw3: regularized logistic regression {task_name(cfg.data)}",
        sections,
    )
    return metrics


def _save_best(path, cfg: LogregGrid, tcfg: TrainConfig, res, best: int, point: dict) -> None:
    """Saves the weights of grid point `best` to `path`, with its config and hyper-parameters."""
    ckpt.save_params(
        path,
        res.point_params(best),
        kind=CHECKPOINT_KIND,
        step=int(res.metrics["steps"][best]),
        config=tcfg.to_dict(),
        meta={
            "experiment": "hw3_logreg_grid",
            "data": tables.jsonable(cfg.to_dict()["data"]),  # the section, as in config.json
            "hparams": point,
            "val_accuracy": float(np.asarray(res.metrics["val_accuracy"], np.float64)[best]),
        },
    )


def _grid_points(res, grid) -> list[dict]:
    """One entry per grid point: its hyper-parameters and final numbers."""
    val_acc_S = np.asarray(res.metrics["val_accuracy"], np.float64)
    val_ce_S = np.asarray(res.metrics["val_cross_entropy"], np.float64)
    return [
        {
            **grid.point(i),
            "val_accuracy": float(val_acc_S[i]),
            "val_cross_entropy": float(val_ce_S[i]),
            "train_accuracy": float(res.metrics["train_accuracy"][i]),
            "train_objective": float(res.metrics["train_objective"][i]),
            "diverged": bool(res.diverged[i]),
        }
        for i in range(grid.size)
    ]


def _grid_optimum(cfg, tcfg: TrainConfig, splits, points: list, lambdas, images_test,
                  y_test) -> dict:  # fmt: skip
    """Adds the exact optimum's numbers to every point; returns lambda -> its test count.

    The optimum is solved on the float64 features of the training images and scored on the
    float64 features of the test images (`images_test`, uint8), whatever the training dtype.
    """
    opt = optimum_for(
        tcfg,
        cfg.data,
        splits,
        [p["l2"] for p in points],
        [p["learning_rate"] for p in points],
        [p["train_objective"] for p in points],
    )
    x_test64 = features(cfg.data, images_test, np.float64)
    tables.merge_optimum(points, opt.rows)
    return {
        lam: jmetrics.evaluate(
            opt.model, optimum_params(opt, lam), x_test64, y_test, float64=True
        ).correct
        for lam in lambdas
    }


def _grid_figures(folder, result: Any, grid: Any, *, num_val: int, num_epochs: int) -> list[str]:
    """The three figures of a lambda x learning-rate grid of one seed.

    `grid_val_accuracy.png` (heatmap), `grid_objective.png` (log10 of the final training
    objective) and `grid_curves.png` (validation accuracy against epochs, one panel per
    lambda). Diverged points are blank in the heatmaps. Returns the file names.
    """
    ok = ~np.asarray(result.diverged)
    l2_vals, lr_vals = grid.values["l2"], grid.values["learning_rate"]
    val_acc = np.asarray(result.metrics["val_accuracy"], np.float64)
    acc_RC = np.where(ok, val_acc, np.nan).reshape(len(l2_vals), len(lr_vals))
    obj_RC = np.where(ok, result.metrics["train_objective"], np.nan).reshape(acc_RC.shape)
    rows = [f"lambda={v:g}" for v in l2_vals]
    cols = [f"lr={v:g}" for v in lr_vals]
    plots.plot_heatmap(
        folder / "grid_val_accuracy.png",
        acc_RC,
        rows,
        cols,
        xlabel="learning rate",
        ylabel="L2 strength lambda",
        title=f"validation accuracy ({num_val} held-out images), {num_epochs} epochs",
        fmt="{:.4f}",
        colorbar_label="validation accuracy",
    )
    # The objective spans orders of magnitude (an oscillating point grows large): log10.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_obj = np.log10(obj_RC)
    plots.plot_heatmap(
        folder / "grid_objective.png",
        log_obj,
        rows,
        cols,
        xlabel="learning rate",
        ylabel="L2 strength lambda",
        title="log10 of the final training objective (cross-entropy + lambda ||w||^2)",
        fmt="{:.2f}",
        colorbar_label="log10 objective",
    )
    m = result.num_batches or 1
    lo = float(np.nanmin(acc_RC)) if np.isfinite(acc_RC).any() else 0.5
    panels = []
    for j, lam in enumerate(l2_vals):
        idx = [j * len(lr_vals) + k for k in range(len(lr_vals))]
        panels.append(
            {
                "series": {
                    f"lr={grid.point(i)['learning_rate']:g}": (
                        jmetrics.epochs_done(result.histories[i]["check_step"], m),
                        result.histories[i]["val_accuracy"],
                    )
                    for i in idx
                },
                "xlabel": "epoch (one full-batch step each)",
                "ylabel": "validation accuracy",
                "title": f"lambda = {lam:g}",
                "logx": True,
                "ylim": (max(0.0, lo - 0.05), 1.0),
            }
        )
    plots.plot_side_by_side(
        folder / "grid_curves.png",
        panels,
        suptitle="validation accuracy of every grid point during training",
        sharey=True,
        panel_size=(4.8, 3.8),
    )
    return ["grid_val_accuracy.png", "grid_objective.png", "grid_curves.png"]


def _grid_sections(
    cfg: LogregGrid, tcfg: TrainConfig, m: dict, num_train_images: int, table: str, opt_text: str
) -> list[str]:
    """hw3_logreg_grid's report sections from its metrics `m`."""
    words = class_words(cfg.data)
    pos, neg = (words.class_names[c] for c in cfg.data.digits)
    both = f"images of {words.plural} {pos} and {neg}"
    n, num_val, total = m["num_train"], m["num_val"], m["test_total"]
    return [
        f"Logistic regression, {words.noun} {pos} (label 1) vs {words.noun} {neg} (label 0) of "
        f"{cfg.data.dataset}, inputs scaled `{cfg.data.scale}` plus the constant-1 feature (the "
        f"bias w0). Objective: mean binary cross-entropy + lambda * sum of squared weights, w0 "
        f"not penalised. Full-batch gradient descent (batch = all {n} training examples) for "
        f"{tcfg.num_epochs} epochs from zero weights; threshold 0.5. Training images: the "
        f"{n} {both} among the first {num_train_images} training images; validation: the "
        f"{num_val} {both} among the last {cfg.data.num_val} training images. "
        f"The {len(m['grid'])} grid points trained in one vmapped sweep "
        f"({m['wall_seconds']:.1f} s, compilation included); {m['num_diverged']} diverged.",
        "## Grid\n\n" + table + "\n\n" + opt_text,
        f"## Best point\n\nlambda = {m['l2']:g}, learning rate = "
        f"{m['learning_rate']:g} (highest validation accuracy, ties to the lower "
        f"validation cross-entropy): validation accuracy {m['val_accuracy']:.4f}. Its weights "
        f"were saved to `{CHECKPOINT_NAME}` (step {m['checkpoint_step']}) and read back from "
        f"disk: **{m['test_correct']} of {total}** of the first {total} test {both} are "
        f"classified correctly. Final training objective "
        f"{m['final_objective']:.5f} (cross-entropy {m['final_train_cross_entropy']:.5f}); on "
        f"those test images the cross-entropy is {m['test_cross_entropy']:.5f}.",
        "## Figures\n\n![validation accuracy of the grid](grid_val_accuracy.png)\n\n"
        "![final objective of the grid](grid_objective.png)\n\n"
        "![validation accuracy curves](grid_curves.png)\n\n"
        "Histories: `history_<point>.jsonl` (point index in metrics.json `grid`).",
    ]


def _grid_table(points: list) -> tuple[list, list]:
    """Headers and rows of the grid table (optimum columns when they were computed)."""
    with_opt = "optimum_objective" in points[0]
    headers = ["lambda", "lr", "val accuracy", "val cross-entropy", "train objective"]
    if with_opt:
        headers += ["optimum", "gap", "lr / limit"]
    headers.append("status")
    rows = []
    for p in points:
        row = [
            f"{p['l2']:g}",
            f"{p['learning_rate']:g}",
            f"{p['val_accuracy']:.4f}",
            f"{p['val_cross_entropy']:.4f}",
            f"{p['train_objective']:.4g}",
        ]
        if with_opt:
            gap = "-" if p["gap"] is None else f"{p['gap']:.3g}"  # None: no converged optimum
            row += [f"{p['optimum_objective']:.5f}", gap, f"{p['lr_over_limit']:.2f}"]
        status = "diverged" if p["diverged"] else ("unstable" if p.get("unstable") else "ok")
        rows.append([*row, status])
    return headers, rows


def _optimum_text(cfg, points: list, optimum_test: dict, num_test: int) -> str:
    """What the exact optimum says about the grid (gap, stability, the optimum's test count)."""
    text = stability_text(
        points, lambda i: f"lambda {points[i]['l2']:g} with lr {points[i]['learning_rate']:g}"
    )
    counts = ", ".join(f"{c} at lambda {lam:g}" for lam, c in optimum_test.items())
    text += (
        f" The gap is the final training objective minus the exact optimum of the same "
        f"objective (Newton-CG in float64); gaps within ~1e-7 are the float32 rounding of the "
        f"trained objective. At the exact optimum the first {num_test} test "
        f"images score {counts} correct."
    )
    if tuple(cfg.data.digits) == (9, 4) and num_test == 1000 and 0.01 in optimum_test:
        c = optimum_test[0.01]
        verdict = "more than" if c < 974 else ("as many as" if c == 974 else "fewer than")
        text += (
            f" The homework hand-in reports 974 of 1000 at lambda 0.01: {verdict} the "
            f"{c} that the exact optimum of the stated objective gets on these images."
        )
    return text


def hw3_misclassified(cfg: Misclassified, run: RunDir) -> dict:
    """The 20 most confidently misclassified 4/9 test images of the hw3_logreg_grid checkpoint.

    Launch:  python -m experiments.main --experiment=hw3_misclassified
             --workdir=runs/hw3_misclassified
             --grid_checkpoint=runs/hw3_logreg_grid/logreg_best.npz
             (after hw3_logreg_grid)
    Runtime: a few seconds.
    Result:  misclassified.png: a 4x5 grid, each image titled with true and predicted digit and
             the confidence |p - 0.5| + 0.5; with the default grid 60 of the 1000 images are
             wrong, the most confident mistake at about 91%.
    """
    data_cfg, model, params, meta = _load_grid_checkpoint(cfg, run.workdir)
    pos, neg = data_cfg.digits
    names = {1: pos, 0: neg}
    class_names = class_words(data_cfg).class_names
    images, x_test, y_test, test_idx = test_subset(data_cfg)
    test = jmetrics.evaluate(model, params, x_test, y_test)
    z_N = test.logits
    top, conf_N, pred_N = jmetrics.most_confident_mistakes(z_N, y_test, cfg.num_shown)
    wrong = test.total - test.correct
    p_N = np.asarray(jax.nn.sigmoid(z_N), np.float64)
    titles = [
        f"true {class_names[names[int(y_test[i])]]}, pred {class_names[names[int(pred_N[i])]]}"
        f"\n{100 * conf_N[i]:.1f}%"
        for i in top
    ]
    if len(top):
        plots.plot_image_grid(
            run.out / "misclassified.png",
            images[top],
            titles,
            4,
            5,
            suptitle=(
                f"the {len(top)} most confidently misclassified of {len(y_test)} test images "
                f"({task_name(data_cfg)}; confidence |p - 0.5| + 0.5)"
            ),
        )
    acc = test.accuracy
    items = [
        {
            "rank": r + 1,
            "test_index": int(test_idx[i]),
            "subset_index": int(i),
            "true_digit": names[int(y_test[i])],
            "predicted_digit": names[int(pred_N[i])],
            "p_positive": float(p_N[i]),
            "confidence": float(conf_N[i]),
        }
        for r, i in enumerate(top)
    ]
    table = _misclassified_table(items)
    hp = meta.get("hparams", {})
    body = (
        f"Checkpoint `{cfg.grid_checkpoint}` (step {meta['step']}; lambda "
        f"{hp.get('l2', float('nan')):g}, learning rate "
        f"{hp.get('learning_rate', float('nan')):g}), "
        f"evaluated on the first {len(y_test)} test images of {class_words(data_cfg).plural} "
        f"{class_names[pos]} and {class_names[neg]}: "
        f"{len(y_test) - wrong} correct, {wrong} misclassified (accuracy {acc:.4f}). "
        f"Confidence of a prediction is |p - 0.5| + 0.5 with p = sigmoid(z) the predicted "
        f"probability of a {class_names[pos]}.\n\n"
        + ("![most confident mistakes](misclassified.png)\n\n" if len(top) else "")
        + table
    )
    tables.write_report(
        run.out / "report.md",
        f"hw3: most confidently misclassified test images, {task_name(data_cfg)}",
        [body],
    )
    return {
        "checkpoint": cfg.grid_checkpoint,
        "test_total": int(len(y_test)),
        "test_correct": int(len(y_test) - wrong),
        "num_misclassified": wrong,
        "test_accuracy": acc,
        "shown": len(items),
        "misclassified": items,
    }


def _load_grid_checkpoint(cfg: Misclassified, workdir):
    """(data config, model, params, meta) of the checkpoint `cfg.grid_checkpoint` names.

    One read: `load_params` refuses a missing, corrupt or foreign file; the template of the
    weights is built from the checkpoint's own config and data settings. Refused too: a
    checkpoint inside `workdir` (publishing this run could replace or remove it), and one
    trained on another data set or dtype than this run's (the test images would not be the
    ones it was trained for).
    """
    from pathlib import Path

    path = Path(cfg.grid_checkpoint).expanduser()
    inside = Path(workdir).resolve()
    if path.resolve() == inside or inside in path.resolve().parents:
        raise ckpt.CheckpointError(
            f"--grid_checkpoint={cfg.grid_checkpoint} lies inside --workdir={workdir}, the "
            "folder this run writes: give this run another --workdir (or copy the checkpoint "
            "out of it)"
        )
    bound = {}

    def template(meta: dict):
        try:
            tcfg = TrainConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError):
            tcfg = None
        if tcfg is None or tcfg.model != "logistic":
            raise ckpt.CheckpointError(f"checkpoint {path} holds no logistic-regression config")
        # The grid's data section; older checkpoints (and hand-made ones) carry its fields
        # at the top level of the meta.
        saved = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        saved = {**meta, **saved}
        for field in ("dataset", "dtype"):
            # Every checkpoint hw3_logreg_grid writes says both; one that does not (made by
            # hand) is taken as this run's (its weights' dtype is still checked on reading).
            value = saved.get(field)
            if value is not None and value != getattr(cfg.data, field):
                raise ckpt.CheckpointError(
                    f"checkpoint {path} was trained with --{field}={value}, this run evaluates "
                    f"with --{field}={getattr(cfg.data, field)}: add --{field}={value}"
                )
        bound["data"] = dataclasses.replace(
            cfg.data,
            digits=tuple(saved["digits"]),
            scale=saved["scale"],
            bias_feature=bool(saved["bias_feature"]),
        )
        d = 784 + (1 if bound["data"].bias_feature else 0)
        bound["model"] = model_for(tcfg, d, float_dtype(bound["data"]))
        return bound["model"].init(jax.random.PRNGKey(0))

    hint = (
        f"it is written by hw3_logreg_grid: run `{GRID_COMMAND}` first "
        "(or pass --grid_checkpoint=PATH)"
    )
    params, meta = ckpt.load_params(path, template, kind=CHECKPOINT_KIND, hint=hint)
    return bound["data"], bound["model"], params, meta


def _misclassified_table(items: list[dict]) -> str:
    """One row per shown mistake: rank, test index, true and predicted digit, confidence."""
    return tables.markdown_table(
        ["rank", "test index", "true", "predicted", "confidence"],
        [
            [
                str(it["rank"]),
                str(it["test_index"]),
                str(it["true_digit"]),
                str(it["predicted_digit"]),
                f"{100 * it['confidence']:.1f}%",
            ]
            for it in items
        ],
        align="rrrrr",
    )
