"""Softmax regression on Fashion-MNIST with the TDT4265 task 3 protocol.

The task 3 protocol, unchanged, on the ten Fashion-MNIST classes: images scaled to [-1, 1]
plus the constant-1 bias feature, weights initialised to zeros, train = the first 20,000
training images, validation = the 10,000 test images, batch 128, lr 0.01, 50 epochs,
shuffled every epoch, validation every M // 5 steps.

    python -m experiments.main --experiment=fashion_softmax --workdir=DIR [--FLAG=V]

Besides the curves of `tdt4265_task3`: the accuracy of each class on the validation images
(the experiment's own figure), their confusion matrix and the weights of each class as
images, every class named as the data-set registry names it.

Dimension legend: N examples, K classes, P pixels (784).
"""

from __future__ import annotations

import numpy as np

from experiments.common import RunDir, class_words, protocol_text, run_metrics, train_one
from experiments.fashion_config import FashionSoftmax
from jaxlr.data.splits import load_splits
from jaxlr.engine.train import model_for
from jaxlr.report import figures, history_plots, image_plots, tables
from jaxlr.report import metrics as jmetrics


def _per_class_figure(path, names, acc_K, overall: float, title: str) -> None:
    """Bars of each class's validation accuracy, lowest first, the overall accuracy dashed."""
    order = np.argsort(acc_K, kind="stable")
    figures.plot_bar(
        path,
        [names[k] for k in order],
        acc_K[order],
        ylabel="validation accuracy",
        title=f"{title}: accuracy of each class (overall {overall:.4f})",
        ylim=(max(0.0, float(acc_K.min()) - 0.05), 1.05),
    )


def fashion_softmax(cfg: FashionSoftmax, run: RunDir) -> dict:
    """Softmax regression on the ten Fashion-MNIST classes, task 3 protocol (lr 0.01, 50 epochs).

    Launch:  python -m experiments.main --experiment=fashion_softmax --workdir=runs/fashion_softmax
    Runtime: about 1 min of training (7,800 steps, 252 checks) on 2 CPU cores shared with
             other jobs; 104 s in all, 2 min 12 s for the whole process.
    Result:  validation accuracy 0.8306 (loss 0.4745) on the 10,000 test images, training
             accuracy 0.8548; Shirt is the worst class (0.602), Trouser the best (0.948); most
             confusions: Pullover as Coat (153), T-shirt/top as Shirt (139), Pullover as Shirt.
    """
    data = load_splits(cfg.data).data
    result = train_one(cfg, data, run)
    m = run_metrics(result, cfg.train, len(data.y_train))
    tables.write_history(run.out / "history.jsonl", result.history)
    words = class_words(cfg.data)
    names = words.class_names
    model = model_for(cfg.train, np.shape(data.x_train)[1], np.asarray(data.x_train).dtype)
    val = jmetrics.evaluate(model, result.params, data.x_val, data.y_val)
    cm_KK = jmetrics.confusion_matrix(data.y_val, val.predictions, len(names))
    acc_K = jmetrics.per_class_accuracy(cm_KK)
    worst = int(np.argmin(acc_K))
    m["per_class_val_accuracy"] = {names[k]: float(a) for k, a in enumerate(acc_K)}
    m["confusion_matrix"] = cm_KK.tolist()
    m["worst_class"], m["worst_class_accuracy"] = names[worst], float(acc_K[worst])

    title = f"Softmax regression, {cfg.data.dataset}"
    history_plots.plot_history(
        run.out / "loss.png", run.out / "accuracy.png", result.history, title
    )
    _per_class_figure(run.out / "per_class_accuracy.png", names, acc_K, val.accuracy, title)
    image_plots.plot_confusion(
        run.out / "confusion_matrix.png",
        cm_KK,
        f"{title}: validation confusion matrix ({val.total} images)",
        class_names=names,
        noun=words.noun,
    )
    image_plots.plot_weight_images(
        run.out / "weights.png",
        {"weights": jmetrics.pixel_weights_KP(result.params, cfg.data.bias_feature)},
        col_labels=names,
        title=f"Softmax weights of each {words.noun} (bias dropped)",
    )
    confusions = ", ".join(
        f"{names[t]} as {names[p]} ({c})" for t, p, c in jmetrics.top_confusions(cm_KK, 3)
    )
    per_class = tables.markdown_table(
        [words.noun, "validation accuracy"],
        [[names[k], f"{acc_K[k]:.4f}"] for k in np.argsort(acc_K, kind="stable")],
        align="lr",
    )
    figures = {
        "loss.png": "training and validation loss",
        "accuracy.png": "training and validation accuracy",
        "per_class_accuracy.png": f"validation accuracy of each {words.noun}",
        "confusion_matrix.png": "validation confusion matrix",
        "weights.png": f"weights of each {words.noun}",
    }
    sections = [
        protocol_text(cfg, data),
        "## Final numbers (returned weights)\n\n" + tables.runs_table({"softmax": m}),
        f"## Each {words.noun}\n\nValidation accuracy of each {words.noun}, lowest first "
        f"({val.correct} of {val.total} right in all):\n\n{per_class}\n\n"
        f"Most frequent confusions (true as predicted): {confusions or 'none'}.",
        "## Figures\n\n"
        + "\n\n".join(tables.image_link(name, text) for name, text in figures.items())
        + "\n\nHistory: `history.jsonl`.",
    ]
    tables.write_report(run.out / "report.md", title, sections)
    return m
