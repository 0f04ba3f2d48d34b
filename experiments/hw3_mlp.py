"""Homework 3, `hw3_mlp`: the 784-3136-1568-10 ReLU network, plain SGD lr 0.1, batch 32,
6 epochs on all 60,000 training images, tested on the 10,000 test images (at least 98%
required); its figures (loss, accuracy, per-epoch history, confusion, per-class accuracy) and
report prose. Configs and registration, and the course's other experiments:
`experiments.hw3_config` (which describes the inputs every hw3 experiment uses).

Dimension legend: N training examples, V validation examples, M test examples, D features,
K classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.common import (
    RunDir,
    class_words,
    train_one,
)
from experiments.hw3_config import (
    Mlp,
)
from jaxlr.data.splits import load_splits
from jaxlr.engine.config import (
    TrainConfig,
)
from jaxlr.engine.step import schedule_numbers, train_eval_count
from jaxlr.engine.train import model_for
from jaxlr.report import figures, image_plots, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.hw3")


def net_name(d: int, tcfg: TrainConfig) -> str:
    """The network as its layer widths: "784-3136-1568-10"."""
    return "-".join(map(str, (d, *tcfg.hidden, tcfg.num_classes)))


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
        net_name(d, tcfg),
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
    title = f"{net_name(d, tcfg)} {tcfg.activation} ({tcfg.grad}), {cfg.data.dataset}"
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
    figures.plot_bar(
        run.out / "per_class_accuracy.png",
        list(words.class_names),
        per_class,
        xlabel="class",
        ylabel="test accuracy",
        title=f"{title}: per-class test accuracy (overall {metrics['test_accuracy']:.4f})",
        fmt="{:.3f}",
        ylim=(max(0.0, float(per_class.min()) - 0.03), 1.0),
    )
    image_plots.plot_confusion(
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
    a = figures.plot_curves(
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
    b = figures.plot_curves(
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
        f"Network {net_name(d, tcfg)}, {tcfg.activation} hidden units, softmax output, "
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
