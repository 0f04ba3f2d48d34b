"""Homework 3, `hw3_logreg_grid`: 9 (label 1) vs 4 (label 0), a lambda x lr grid of full-batch
gradient descent in one vmapped sweep; the best point is checkpointed, read back and tested on
the first 1000 test images of 4s and 9s (read again by `experiments.hw3_misclassified`). Its
figures, table and report prose. Configs, registration and the course:
`experiments.hw3_config`.

Dimension legend: N training examples, V validation examples, M test examples, D features,
S grid points.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np

from experiments.common import (
    RunDir,
    RunFailed,
    class_words,
    optimum_ahead,
    optimum_for,
    optimum_params,
    stability_text,
    task_name,
)
from experiments.hw3_config import (
    CHECKPOINT_KIND,
    CHECKPOINT_NAME,
    LogregGrid,
)
from jaxlr.data.splits import features, load_splits, test_subset
from jaxlr.engine.config import (
    TrainConfig,
)
from jaxlr.engine.grid import make_grid
from jaxlr.engine.sweep import run_sweep
from jaxlr.engine.train import model_for
from jaxlr.host import checkpoint as ckpt
from jaxlr.report import figures, image_plots, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.hw3")


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
    # The optimum's programs and data-only work run on a thread while the grid trains.
    ahead = optimum_ahead(tcfg, splits, hp.l2, cfg.data) if cfg.optimum else None
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
        optimum_test = _grid_optimum(cfg, tcfg, splits, points, hp.l2, images, y_test, ahead)
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
                  y_test, ahead=None) -> dict:  # fmt: skip
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
        ahead=ahead,
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
    image_plots.plot_heatmap(
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
    image_plots.plot_heatmap(
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
    figures.plot_side_by_side(
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
