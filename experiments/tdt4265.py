"""TDT4265 Assignment 1: logistic and softmax regression on MNIST, every task as an experiment.

Course protocol (the defaults): images scaled to [-1, 1] plus the constant-1 bias feature,
weights initialised to zeros, train = the first 20,000 training images, validation = the
10,000 test images (for the binary tasks only the digits 2 (label 1) and 3 (label 0) of
both: 4,005 training and 2,042 validation images), batch 128, the last partial batch
dropped, validation every max(1, M // 5) steps with M batches per epoch.

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FLAG=V]

Every run writes config.json, metrics.json, its history as JSON lines (`history.jsonl`, or
`history_<run>.jsonl` when an experiment trains several runs), PNG figures and report.md.

Task 4 (L2 regularisation) is in `experiments.tdt4265_task4`, learning-rate annealing in
`experiments.tdt4265_annealing`; this module holds tasks 2, 2d, 2e, 3 and the mean images.

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
    protocol_text,
    run_metrics,
    task_name,
    train_one,
)
from experiments.tdt4265_config import Binary, BinaryEarly, Shuffling, Softmax
from jaxlr.data.splits import load_splits
from jaxlr.report import figures, history_plots, image_plots, tables
from jaxlr.report import metrics as jmetrics

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
    history_plots.plot_history(
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
    return figures.plot_side_by_side(
        path,
        [
            dict(
                series=loss,
                xlabel="training step",
                ylabel="cross-entropy loss",
                title="validation loss",
                styles=styles,
                ylim=figures.robust_ylim([h["val_loss"] for h in hs], lo_q=0, hi_q=98, floor=0.0),
                vlines=vlines,
            ),
            dict(
                series=acc,
                xlabel="training step",
                ylabel="accuracy",
                title="validation accuracy",
                styles=styles,
                ylim=figures.robust_ylim(
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
    history_plots.plot_history(run.out / "loss.png", run.out / "accuracy.png", h, title)
    gap = np.asarray(h["train_accuracy"]) - np.asarray(h["val_accuracy"])
    figures.plot_curves(
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
    image_plots.plot_weight_images(
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


__all__ = [
    "_validation_figure",
    "mean_images",
    "task2",
    "task2d",
    "task2e",
    "task3",
]
