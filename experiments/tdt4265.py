"""TDT4265 Assignment 1: logistic and softmax regression on MNIST, every task as an experiment.

Course protocol (the defaults): images scaled to [-1, 1] plus the constant-1 bias feature,
weights initialised to zeros, train = the first 20,000 training images, validation = the
10,000 test images (for the binary tasks only the digits 2 (label 1) and 3 (label 0) of
both: 4,005 training and 2,042 validation images), batch 128, the last partial batch
dropped, validation every max(1, M // 5) steps with M batches per epoch.

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FLAG=V]

Every run writes config.json, metrics.json, its history as JSON lines (`history.jsonl`, or
`history_<run>.jsonl` when an experiment trains several runs), PNG figures and report.md.

Dimension legend: N examples, K classes, P pixels (784), L values of lambda.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.common import (
    RunDir,
    class_words,
    optimum_for,
    protocol_text,
    run_metrics,
    stability_text,
    task_name,
    train_one,
)
from experiments.tdt4265_config import Annealing, Binary, BinaryEarly, L2Path, Shuffling, Softmax
from jaxlr.data.splits import load_splits
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.config import TrainConfig
from jaxlr.engine.optim import make_schedule
from jaxlr.engine.step import schedule_numbers
from jaxlr.report import metrics as jmetrics
from jaxlr.report import plots, tables

log = logging.getLogger("jaxlr.experiments.tdt4265")

# ---------------------------------------------------------------------------------------------
# One run with its curves.


def _single_run(cfg, run: RunDir, key: str, title: str) -> dict:
    """Trains one run; writes history, loss and accuracy figures and the report."""
    data = load_splits(cfg.data).data
    result = train_one(cfg, data, run)
    m = run_metrics(result, cfg.train, len(data.y_train))
    tables.write_history(run.out / "history.jsonl", result.history)
    es = m.get("early_stopping")
    plots.plot_history(
        run.out / "loss.png", run.out / "accuracy.png", result.history, title, early_stopping=es
    )
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights)\n\n" + tables.runs_table({key: m}),
    ]
    if es:
        sections.append("## Early stopping\n\n" + _es_text(es, m["steps_per_epoch"]))
    sections.append(
        "## Figures\n\n"
        + tables.image_link("loss.png", "training and validation loss")
        + "\n\n"
        + tables.image_link("accuracy.png", "training and validation accuracy")
        + "\n\nHistory: `history.jsonl` (training loss per step; validation at checks)."
    )
    tables.write_report(run.out / "report.md", title, sections)
    return m


def _es_text(es: dict, m: int) -> str:
    if es["stopped"]:
        stop = (
            f"Early stopping fired after the check of step {es['step']} (epoch {es['epoch']}, "
            f"0-based; {m} steps per epoch)"
        )
    else:
        stop = "Early stopping did not fire before the last epoch"
    return (
        f"{stop}; the returned weights are those of the best check, step {es['best_step']} "
        f"(epoch {es['best_epoch']}), validation loss {es['best_val_loss']:.4f}."
    )


def task2(cfg: Binary, run: RunDir) -> dict:
    """Task 2b/2c: logistic regression 2 vs 3, lr 0.05, 50 epochs, no shuffle.

    Launch:  python -m experiments.main --experiment=tdt4265_task2 --workdir=runs/tdt4265_task2
    Runtime: about 6 s on 2 CPU cores (1,550 steps, 259 checks; 2 s of it training).
    Result:  validation accuracy 0.9789 (2,042 images), validation loss 0.0652; the
             validation curves show spikes every 186 steps (see tdt4265_task2e).
    """
    title = f"TDT4265 task 2, logistic regression {task_name(cfg.data)}"
    return _single_run(cfg, run, f"lr={cfg.hparams.lr:g}", title)


def task2d(cfg: BinaryEarly, run: RunDir) -> dict:
    """Task 2d: task 2 with early stopping (patience 10 checks), up to 500 epochs.

    Launch:  python -m experiments.main --experiment=tdt4265_task2d --workdir=runs/tdt4265_task2d
    Runtime: about 5 s on 2 CPU cores.
    Result:  stops after the check of step 1038 (epoch 33, 0-based); best check step 978
             (epoch 31), whose weights give validation accuracy 0.9789, loss 0.0657.
    """
    title = f"TDT4265 task 2d, early stopping, {task_name(cfg.data)}"
    return _single_run(cfg, run, "early stopping", title)


# ---------------------------------------------------------------------------------------------
# Task 2e: shuffling or not.


def _shuffle_text(m: dict) -> str:
    period = math.lcm(m["steps_per_epoch"], m["eval_every"])
    return (
        "Without shuffling every epoch presents the batches in the same order, so the "
        "weights go through the same cycle within every epoch: right after certain batches "
        "they are worse for the validation set. The checks (every "
        f"{m['eval_every']} steps, {m['steps_per_epoch']} steps per epoch) land on the same "
        f"position within an epoch only every lcm = {period} steps, so those dips show up as "
        f"spikes with a period of {period} steps. With shuffling the batch order changes every "
        "epoch and the pattern disappears; the curves are noisy, not periodic."
    )


def task2e(cfg: Shuffling, run: RunDir) -> dict:
    """Task 2e: with versus without shuffling every epoch, both with early stopping.

    Launch:  python -m experiments.main --experiment=tdt4265_task2e --workdir=runs/tdt4265_task2e
    Runtime: about 11 s on 2 CPU cores.
    Result:  without shuffling the validation loss spikes every lcm(31, 6) = 186 steps and
             the run stops at step 1038 (epoch 33); with shuffling the spikes are gone and
             it stops at step 900 (epoch 29); validation accuracy 0.9789 and 0.9785.
    """
    data = load_splits(cfg.data).data
    results, metrics, hists = {}, {}, {}
    for shuffle in (False, True):
        key = f"shuffle={str(shuffle).lower()}"
        results[key] = train_one(cfg, data, run, key, shuffle=shuffle)
        tcfg = dataclasses.replace(cfg.train, shuffle=shuffle)
        metrics[key] = run_metrics(results[key], tcfg, len(data.y_train))
        hists[key] = f"history_{tables.slug(key)}.jsonl"
        tables.write_history(run.out / hists[key], results[key].history)
    what = task_name(cfg.data)
    _validation_figure(
        run.out / "validation.png",
        {k: r.history for k, r in results.items()},
        {k: m.get("early_stopping") for k, m in metrics.items()},
        suptitle=f"TDT4265 task 2e, {what}: shuffling the training set every epoch or not",
    )
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights: best check)\n\n" + tables.runs_table(metrics),
        "## Early stopping\n\n"
        + "\n".join(
            f"- {k}: {_es_text(m['early_stopping'], m['steps_per_epoch'])}"
            for k, m in metrics.items()
        ),
        "## Figures\n\n"
        + tables.image_link("validation.png", "validation loss and accuracy, shuffled or not")
        + "\n\n"
        + _shuffle_text(metrics["shuffle=false"])
        + "\n\nHistory: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    tables.write_report(run.out / "report.md", f"TDT4265 task 2e: shuffling, {what}", sections)
    return metrics


def _validation_figure(
    path,
    histories: Mapping[str, Mapping[str, Any]],
    early_stopping: Mapping[str, Mapping[str, Any] | None],
    *,
    suptitle: str,
):
    """Task 2e's figure: validation loss and accuracy of runs side by side, early stops marked.

    Args:
      path: destination PNG.
      histories: run name -> history (one colour per run, in order).
      early_stopping: run name -> its `early_stopping` metrics (None: no marker).
      suptitle: title over both panels.
    """
    loss, acc, vlines, styles = {}, {}, {}, {}
    for i, (key, h) in enumerate(histories.items()):
        loss[f"validation loss, {key}"] = (h["check_step"], h["val_loss"])
        acc[f"validation accuracy, {key}"] = (h["check_step"], h["val_accuracy"])
        styles[f"validation loss, {key}"] = styles[f"validation accuracy, {key}"] = {
            "color": f"C{i}"
        }
        es = early_stopping.get(key)
        if es and es["stopped"]:
            vlines[f"early stop, {key} (step {es['step']})"] = {"x": es["step"], "color": f"C{i}"}
    hs = list(histories.values())
    return plots.plot_side_by_side(
        path,
        [
            dict(
                series=loss,
                xlabel="training step",
                ylabel="cross-entropy loss",
                title="validation loss",
                styles=styles,
                ylim=plots.robust_ylim([h["val_loss"] for h in hs], lo_q=0, hi_q=98, floor=0.0),
                vlines=vlines,
            ),
            dict(
                series=acc,
                xlabel="training step",
                ylabel="accuracy",
                title="validation accuracy",
                styles=styles,
                ylim=plots.robust_ylim(
                    [h["val_accuracy"] for h in hs], lo_q=2, hi_q=100, ceil=1.001
                ),
                vlines=vlines,
            ),
        ],
        suptitle=suptitle,
    )


# ---------------------------------------------------------------------------------------------
# Task 3: softmax regression on ten digits.


def task3(cfg: Softmax, run: RunDir) -> dict:
    """Task 3b-d: softmax regression on all ten digits, lr 0.01, 50 epochs, shuffle.

    Launch:  python -m experiments.main --experiment=tdt4265_task3 --workdir=runs/tdt4265_task3
    Runtime: about 16 s on 2 CPU cores (7,800 steps, 252 checks).
    Result:  validation accuracy 0.9164 (loss 0.2991), training accuracy 0.9233: a gap of
             0.007 that grows slowly through training.
    """
    data = load_splits(cfg.data).data
    result = train_one(cfg, data, run)
    m = run_metrics(result, cfg.train, len(data.y_train))
    tables.write_history(run.out / "history.jsonl", result.history)
    h = result.history
    m["accuracy_gap"] = m["train_accuracy"] - m["val_accuracy"]
    m["loss_gap"] = m["val_loss"] - m["train_loss"]
    title = f"TDT4265 task 3, softmax regression, {cfg.data.dataset}"
    plots.plot_history(run.out / "loss.png", run.out / "accuracy.png", h, title)
    gap = np.asarray(h["train_accuracy"]) - np.asarray(h["val_accuracy"])
    plots.plot_curves(
        run.out / "gap.png",
        {"training minus validation accuracy": (h["check_step"], gap)},
        xlabel="training step",
        ylabel="accuracy gap",
        title=f"{title}: generalisation gap",
    )
    n_weights = int(np.shape(data.x_train)[1]) * cfg.train.num_classes
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights)\n\n" + tables.runs_table({"softmax": m}),
        "## Training versus validation\n\n"
        f"Final training accuracy {m['train_accuracy']:.4f} against validation accuracy "
        f"{m['val_accuracy']:.4f}: a gap of {m['accuracy_gap']:+.4f}; the validation loss "
        f"exceeds the training loss by {m['loss_gap']:+.4f}. A linear model of {n_weights:,} "
        f"weights overfits {len(data.y_train):,} images only a little: the gap grows slowly "
        "as training goes on while the validation accuracy flattens.",
        "## Figures\n\n"
        + tables.image_link("loss.png", "training and validation loss")
        + "\n\n"
        + tables.image_link("accuracy.png", "training and validation accuracy")
        + "\n\n"
        + tables.image_link("gap.png", "training minus validation accuracy")
        + "\n\nHistory: `history.jsonl`.",
    ]
    tables.write_report(run.out / "report.md", title, sections)
    return m


# ---------------------------------------------------------------------------------------------
# Task 4: L2 regularisation.


def train_l2_runs(cfg: L2Path, data, run: RunDir, lambdas) -> dict:
    """Trains one run per L2 strength in one vmapped sweep (or resumable fits with checkpoints).

    Returns:
      lambda -> (params, history, metrics); `wall_seconds` is the whole sweep's.
    """
    out = {}
    if cfg.checkpoint:
        for lam in lambdas:
            key = f"lambda={lam:g}"
            r = train_one(cfg, data, run, key, l2=float(lam))
            out[float(lam)] = (r.params, r.history, run_metrics(r, cfg.train, len(data.y_train)))
        return out
    hp = cfg.hparams
    grid = jgrid.grid_from_points(
        [
            dict(learning_rate=hp.lr, momentum=hp.momentum, l2=float(lam), seed=hp.seed)
            for lam in lambdas
        ],
        dtype=np.asarray(data.x_train).dtype,
    )
    res = jsweep.run_sweep(
        cfg.train,
        grid,
        data,
        block_size=cfg.block_size,
        log_fn=lambda msg: log.info("[lambda sweep] %s", msg),
    )
    sched = schedule_numbers(cfg.train, len(data.y_train))
    for i, lam in enumerate(lambdas):
        m = res.point_metrics(i)
        m["steps_per_epoch"] = int(sched.batches_per_epoch)
        m["eval_every"] = int(sched.eval_every)
        m["wall_seconds"] = float(res.wall_seconds)
        out[float(lam)] = (res.point_params(i), res.histories[i], m)
    return out


def task4(cfg: L2Path, run: RunDir) -> dict:
    """Task 4b-e: L2 regularisation R(w) = sum w^2 of softmax regression, lambda 0 and `l2s`.

    Launch:  python -m experiments.main --experiment=tdt4265_task4 --workdir=runs/tdt4265_task4
    Runtime: about 75 s on 2 CPU cores (21-31 s with --nooptimum; the exact optima take ~29 s
             and their gradient-descent limits ~25 s).
    Result:  validation accuracy 0.9164 / 0.8008 / 0.8797 / 0.9096 / 0.9159 and ||w||_2
             4.89 / 0.60 / 1.66 / 3.30 / 4.62 for lambda 0 / 1 / 0.1 / 0.01 / 0.001; lambda 1
             gives smooth, digit-like weight images.
    """
    lambdas = [float(v) for v in cfg.l2s]
    # lambda 0 is always trained: it is the reference row of the weight images.
    grid = [0.0] + sorted(set(lambdas), reverse=True)
    splits = load_splits(cfg.data)
    data = splits.data
    runs = train_l2_runs(cfg, data, run, grid)
    l2_bias, bias_feature = cfg.train.l2_bias, cfg.data.bias_feature
    metrics, hists = {}, {}
    for lam, (params, history, m) in runs.items():
        key = f"lambda={lam:g}"
        m = dict(m, l2=lam, weight_norm=jmetrics.weight_norm(params, l2_bias))
        m["weight_norm_squared"] = m["weight_norm"] ** 2
        metrics[key] = m
        hists[key] = f"history_{tables.slug(key)}.jsonl"
        tables.write_history(run.out / hists[key], history)
    big = max(lambdas)
    words = class_words(cfg.data)
    plots.plot_weight_images(
        run.out / "weights.png",
        {
            f"lambda={lam:g}": jmetrics.pixel_weights_KP(runs[lam][0], bias_feature)
            for lam in (0.0, big)
        },
        col_labels=words.class_names,
        title=f"Softmax weights of each {words.noun} (bias dropped), each image scaled to its "
        "own range",
    )
    _l2_figures(
        run.out / "val_accuracy.png",
        run.out / "weight_norm.png",
        {lam: runs[lam][1] for lam in grid},
        {lam: metrics[f"lambda={lam:g}"]["weight_norm"] for lam in grid},
    )
    opt_text = _l2_optimum(cfg, splits, grid, metrics) if cfg.optimum else ""
    metrics["weight_norm_by_lambda"] = {
        f"{lam:g}": metrics[f"lambda={lam:g}"]["weight_norm"] for lam in grid
    }
    runs_only = {k: v for k, v in metrics.items() if k.startswith("lambda=")}
    norm_table = _norm_table(metrics, grid)
    sections = [
        protocol_text(cfg, data)
        + f" L2 convention `{cfg.train.l2_convention}` (R(w) = sum w^2 for `sum`), bias "
        f"regularised: {l2_bias}.",
        "## Final numbers (returned weights)\n\n" + tables.runs_table(runs_only),
        "## Weight norm against lambda\n\n" + norm_table,
        opt_text,
        "## Figures\n\n"
        + tables.image_link("weights.png", f"weight images, lambda 0 and {big:g}")
        + "\n\n"
        + tables.image_link("val_accuracy.png", "validation accuracy for each lambda")
        + "\n\n"
        + tables.image_link("weight_norm.png", "weight norm against lambda")
        + "\n\nA strong penalty keeps only the weights that many images agree on, so the "
        f"images turn smooth and resemble the {words.plural}, at the cost of validation "
        "accuracy: the linear model has little variance to remove.\n\nHistory: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    tables.write_report(
        run.out / "report.md", f"TDT4265 task 4: L2 regularisation, {cfg.data.dataset}", sections
    )
    return metrics


def _l2_optimum(cfg: L2Path, splits, grid: list, metrics: dict) -> str:
    """Adds each lambda's exact optimum and gap to its metrics; returns the report section."""
    keys = [f"lambda={lam:g}" for lam in grid]
    opt = optimum_for(
        cfg.train,
        cfg.data,
        splits,
        grid,
        [cfg.hparams.lr] * len(grid),
        [metrics[k]["train_objective"] for k in keys],
    )
    tables.merge_optimum(
        [metrics[k] for k in keys],
        opt.rows,
        extra={"optimum_converged": "converged", "no_finite_optimum": "no_finite_optimum"},
    )
    opt_text = "## Distance to the optimum\n\n" + _optimum_table(metrics, keys) + "\n\n"
    return (
        opt_text
        + stability_text(opt.rows, lambda i: keys[i])
        + (
            " The gap is the final training objective minus the exact optimum of the same "
            "objective (Newton-CG in float64); mini-batch SGD at a constant rate ends above it."
        )
    )


def _norm_table(metrics: dict, grid: list) -> str:
    """Validation accuracy and weight norm of each lambda of `grid`."""
    return tables.markdown_table(
        ["lambda", "val acc", "L2 norm of w"],
        [
            [
                f"{lam:g}",
                f"{metrics[f'lambda={lam:g}']['val_accuracy']:.4f}",
                f"{metrics[f'lambda={lam:g}']['weight_norm']:.4f}",
            ]
            for lam in grid
        ],
        align="rrr",
    )


def _optimum_table(metrics: dict, keys: list) -> str:
    rows = []
    for k in keys:
        m = metrics[k]
        status = "unstable" if m["unstable"] else "ok"
        if m["optimum_converged"]:
            opt, gap = f"{m['optimum_objective']:.5f}", f"{m['gap']:.3g}"
        elif m["no_finite_optimum"]:  # lambda 0: the infimum is approached as ||w|| -> inf
            opt, gap, status = "none (separable)", "-", "no optimum"
        else:
            opt, gap = f"{m['optimum_objective']:.5f} (not converged)", "-"
        rows.append(
            [k, f"{m['train_objective']:.5f}", opt, gap, f"{m['lr_limit']:.3g}",
             f"{m['lr_over_limit']:.2f}", status]
        )  # fmt: skip
    headers = ["run", "train objective", "optimum", "gap", "lr limit", "lr / limit", "status"]
    return tables.markdown_table(headers, rows, align="lrrrrrl")


def _l2_figures(
    accuracy_path,
    norm_path,
    histories: Mapping[float, Mapping[str, Any]],
    norms: Mapping[float, float],
):
    """Task 4's curves: validation accuracy of each L2 strength, the weight norm against lambda.

    Args:
      accuracy_path, norm_path: destination PNGs.
      histories: lambda -> history; lambda 0 (the reference) is drawn last, black, dotted.
      norms: lambda -> ||w||_2 of the final weights (lambda 0 drawn as a dashed level).
    """
    acc = {}
    for lam in [*(v for v in histories if v != 0.0), 0.0]:
        h = histories[lam]
        label = f"$\\lambda$ = {lam:g}" + (" (no penalty)" if lam == 0 else "")
        acc[label] = (h["check_step"], h["val_accuracy"])
    a = plots.plot_curves(
        accuracy_path,
        acc,
        xlabel="training step",
        ylabel="validation accuracy",
        title="Validation accuracy for each L2 strength $\\lambda$, $R(w) = \\sum w^2$",
        ylim=plots.robust_ylim([s[1] for s in acc.values()], lo_q=0, hi_q=100, ceil=1.001),
        styles={"$\\lambda$ = 0 (no penalty)": {"color": "black", "linestyle": ":"}},
    )
    pos = sorted(v for v in norms if v != 0.0)
    norm0 = norms[0.0]
    ref = f"$\\lambda$ = 0 (no penalty): {norm0:.2f}"
    b = plots.plot_curves(
        norm_path,
        {"final weights": (pos, [norms[v] for v in pos]), ref: ([pos[0], pos[-1]], [norm0, norm0])},
        xlabel="$\\lambda$ (log scale)",
        ylabel="$\\|w\\|_2$",
        title="L2 norm of the final weights against $\\lambda$",
        logx=True,
        marker="o",
        styles={ref: {"linestyle": "--", "marker": ""}},
    )
    return a, b


# ---------------------------------------------------------------------------------------------
# Learning-rate annealing.


def _learning_rates(tcfg: TrainConfig, lr: float, steps, total: int) -> np.ndarray:
    """The learning rate of `tcfg`'s schedule at every step in `steps` (host side)."""
    import jax.numpy as jnp

    steps = np.asarray(steps)
    rates = np.asarray(make_schedule(tcfg, lr, total)(jnp.asarray(steps)), np.float64)
    return np.broadcast_to(rates, steps.shape).copy()


def lr_annealing(cfg: Annealing, run: RunDir) -> dict:
    """Constant learning rate versus alpha_0 / (1 + t/T) on the 2 vs 3 task (task 2 protocol).

    Launch:  python -m experiments.main --experiment=lr_annealing --workdir=runs/lr_annealing
    Runtime: about 8 s on 2 CPU cores (two runs of 1,550 steps).
    Result:  with T = 1000 steps (rate 0.05 -> 0.0196) the validation loss jitters a third
             as much late in training (0.0012 vs 0.0036 per check) but ends a little higher:
             validation accuracy 0.9775 against 0.9789 for the constant rate.
    """
    data = load_splits(cfg.data).data
    lr = cfg.hparams.lr
    results, metrics, hists, rates = {}, {}, {}, {}
    for schedule in ("constant", "anneal"):
        key = f"schedule={schedule}"
        tcfg = dataclasses.replace(cfg.train, schedule=schedule)
        results[key] = train_one(cfg, data, run, key, schedule=schedule)
        m = metrics[key] = run_metrics(results[key], tcfg, len(data.y_train))
        total = m["steps_per_epoch"] * tcfg.num_epochs
        h = results[key].history
        m["final_learning_rate"] = float(
            _learning_rates(tcfg, lr, np.array([max(0, m["steps"] - 1)]), total)[0]
        )
        # How much the validation loss still jumps between checks late in training.
        m["late_val_loss_jitter"] = jmetrics.late_jitter(h["val_loss"])
        rates[key] = (h["step"], _learning_rates(tcfg, lr, h["step"], total))
        hists[key] = f"history_{tables.slug(key)}.jsonl"
        tables.write_history(run.out / hists[key], h)
    names = {
        "schedule=constant": f"constant $\\alpha$ = {lr:g}",
        "schedule=anneal": (
            f"$\\alpha_0 / (1 + t/T)$, $\\alpha_0$ = {lr:g}, T = {cfg.train.anneal_steps:g} steps"
        ),
    }
    what = task_name(cfg.data)
    _history_panels(
        run.out / "loss.png",
        run.out / "accuracy.png",
        {names[k]: r.history for k, r in results.items()},
        suptitle=f"Learning-rate annealing, {what}",
    )
    plots.plot_curves(
        run.out / "learning_rate.png",
        {names[k]: v for k, v in rates.items()},
        xlabel="training step",
        ylabel="learning rate",
        title="Learning rate per step",
        ylim=(0.0, 1.1 * lr),
    )
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights)\n\n" + tables.runs_table(metrics),
        "Final learning rate: "
        + ", ".join(f"{k}: {m['final_learning_rate']:.3g}" for k, m in metrics.items())
        + ". Jitter of the validation loss over the second half of training (mean absolute "
        "change between consecutive checks): "
        + ", ".join(f"{k}: {m['late_val_loss_jitter']:.4f}" for k, m in metrics.items())
        + ". The decaying rate damps the step-to-step jumps of the weights (and the "
        "periodic spikes of the unshuffled batch order), but it also slows the descent, so "
        "after the same number of steps the loss has not come down as far.",
        "## Figures\n\n"
        + tables.image_link("loss.png", "loss, constant versus annealed learning rate")
        + "\n\n"
        + tables.image_link("accuracy.png", "accuracy, constant versus annealed learning rate")
        + "\n\n"
        + tables.image_link("learning_rate.png", "learning rate per step")
        + "\n\nHistory: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    tables.write_report(run.out / "report.md", f"Learning-rate annealing, {what}", sections)
    return metrics


def _history_panels(
    loss_path,
    accuracy_path,
    histories: Mapping[str, Mapping[str, Any]],
    *,
    suptitle: str,
):
    """lr_annealing's loss and accuracy figures: one panel per run (titled with its name)."""
    hs = list(histories.values())
    loss_lim, acc_lim = plots.loss_ylim(*hs), plots.accuracy_ylim(*hs)
    a = plots.plot_side_by_side(
        loss_path,
        [
            dict(
                series=plots.loss_series(h),
                styles=plots.loss_styles(plots.loss_series(h)),
                xlabel="training step",
                ylabel="cross-entropy loss",
                title=name,
                ylim=loss_lim,
            )
            for name, h in histories.items()
        ],
        suptitle=f"{suptitle}: loss",
        sharey=True,
    )
    b = plots.plot_side_by_side(
        accuracy_path,
        [
            dict(
                series=plots.accuracy_series(h),
                xlabel="training step",
                ylabel="accuracy",
                title=name,
                ylim=acc_lim,
            )
            for name, h in histories.items()
        ],
        suptitle=f"{suptitle}: accuracy",
        sharey=True,
    )
    return a, b


# ---------------------------------------------------------------------------------------------
# Mean images versus weights.


def mean_images(cfg: Softmax, run: RunDir) -> dict:
    """The average training image of each digit above the softmax weight image of that digit.

    Launch:  python -m experiments.main --experiment=mean_images --workdir=runs/mean_images
    Runtime: about 11 s on 2 CPU cores (the task 3 protocol).
    Result:  validation accuracy 0.9164; every weight image correlates positively with its
             digit's mean image (Pearson 0.30 for 5 to 0.53 for 0).
    """
    data = load_splits(cfg.data).data
    result = train_one(cfg, data, run)
    m = run_metrics(result, cfg.train, len(data.y_train))
    tables.write_history(run.out / "history.jsonl", result.history)
    w_KP = jmetrics.pixel_weights_KP(result.params, cfg.data.bias_feature)
    k, p = w_KP.shape
    means_KP = jmetrics.class_mean_images_KP(data.x_train, data.y_train, k, p)
    corr_K = jmetrics.pearson_rows(means_KP, w_KP)
    m["mean_weight_correlation"] = {str(i): float(c) for i, c in enumerate(corr_K)}
    words = class_words(cfg.data)
    plots.plot_weight_images(
        run.out / "mean_images.png",
        {"mean image": means_KP, "weights": w_KP},
        col_labels=words.class_names,
        title=f"Average training image of each {words.noun} (top) and its softmax weights (bottom)",
    )
    table = tables.markdown_table(
        [words.noun, *words.class_names],
        [["correlation", *(f"{c:.3f}" for c in corr_K)]],
        align="l" + "r" * k,
    )
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights)\n\n" + tables.runs_table({"softmax": m}),
        f"## Mean image versus weights\n\nPearson correlation of each {words.noun}'s weight "
        "image with its mean training image:\n\n" + table,
        "## Figures\n\n"
        + tables.image_link("mean_images.png", "mean images and weight images")
        + f"\n\nThe weights of a {words.noun} are large where its images are bright and the "
        f"other {words.plural}' are not, so each weight image looks like a sharpened, "
        "contrasted mean image.\n\nHistory: `history.jsonl`.",
    ]
    tables.write_report(
        run.out / "report.md", f"Mean images and softmax weights, {cfg.data.dataset}", sections
    )
    return m
