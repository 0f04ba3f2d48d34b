"""TDT4265 Assignment 1, task 4: L2 regularisation of softmax regression, one run per lambda in
one vmapped sweep; weight norms, the optimum over lambda, its figures and report prose. The
course protocol and the other tasks: `experiments.tdt4265`; configs and registration:
`experiments.tdt4265_config`.

Dimension legend: N examples, K classes, P pixels (784), L values of lambda.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.common import (
    RunDir,
    class_words,
    optimum_ahead,
    optimum_for,
    protocol_text,
    run_metrics,
    stability_text,
    train_one,
)
from experiments.tdt4265_config import L2Path
from jaxlr.data.splits import load_splits
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.step import schedule_numbers
from jaxlr.report import figures, image_plots, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.tdt4265")


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
    Runtime: 40-55 s on 2 shared CPU cores, 1.35-1.45x the run with --nooptimum (22-49 s on the
             same machine from day to day); the exact optima take ~8 s and their gradient-descent
             limits ~2 s after training, the data-only part of the optimum (features, Gram
             eigenbasis) is done while the runs train (`python -m benchmarks.bench_optimum
             --part=process`, 2026-12-07: 39.8-43.9 s against 28.3-32.9 s, WORKSPACE.md).
    Result:  validation accuracy 0.9164 / 0.8008 / 0.8797 / 0.9096 / 0.9159 and ||w||_2
             4.89 / 0.60 / 1.66 / 3.30 / 4.62 for lambda 0 / 1 / 0.1 / 0.01 / 0.001; lambda 1
             gives smooth, digit-like weight images.
    """
    lambdas = [float(v) for v in cfg.l2s]
    # lambda 0 is always trained: it is the reference row of the weight images.
    grid = [0.0] + sorted(set(lambdas), reverse=True)
    splits = load_splits(cfg.data)
    data = splits.data
    # The optimum's programs and data-only work run on a thread while the runs train.
    ahead = optimum_ahead(cfg.train, splits, grid, cfg.data) if cfg.optimum else None
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
    image_plots.plot_weight_images(
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
    opt_text = _l2_optimum(cfg, splits, grid, metrics, ahead) if cfg.optimum else ""
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


def _l2_optimum(cfg: L2Path, splits, grid: list, metrics: dict, ahead=None) -> str:
    """Adds each lambda's exact optimum and gap to its metrics; returns the report section."""
    keys = [f"lambda={lam:g}" for lam in grid]
    opt = optimum_for(
        cfg.train,
        cfg.data,
        splits,
        grid,
        [cfg.hparams.lr] * len(grid),
        [metrics[k]["train_objective"] for k in keys],
        ahead=ahead,
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
    a = figures.plot_curves(
        accuracy_path,
        acc,
        xlabel="training step",
        ylabel="validation accuracy",
        title="Validation accuracy for each L2 strength $\\lambda$, $R(w) = \\sum w^2$",
        ylim=figures.robust_ylim([s[1] for s in acc.values()], lo_q=0, hi_q=100, ceil=1.001),
        styles={"$\\lambda$ = 0 (no penalty)": {"color": "black", "linestyle": ":"}},
    )
    pos = sorted(v for v in norms if v != 0.0)
    norm0 = norms[0.0]
    ref = f"$\\lambda$ = 0 (no penalty): {norm0:.2f}"
    b = figures.plot_curves(
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
