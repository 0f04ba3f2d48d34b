"""Homework 3, `hw3_misclassified`: the 20 most confidently misclassified of the first 1000
4/9 test images, from the checkpoint that `hw3_logreg_grid` wrote, into its own workdir.
Configs, registration and the course: `experiments.hw3_config`.

Dimension legend: M test examples, D features.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from experiments.common import (
    RunDir,
    class_words,
    task_name,
)
from experiments.hw3_config import (
    CHECKPOINT_KIND,
    GRID_COMMAND,
    Misclassified,
)
from jaxlr.data.splits import float_dtype, test_subset
from jaxlr.engine.config import (
    TrainConfig,
)
from jaxlr.engine.train import model_for
from jaxlr.host import checkpoint as ckpt
from jaxlr.report import image_plots, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.hw3")


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
        image_plots.plot_image_grid(
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
