"""The `regularization_path` experiment: the exact optimum of a convex linear model per lambda.

Every lambda of the path is solved to its optimum (float64 Newton-CG on Hessian-vector
products, `jaxlr.core.solver`) in one compiled, vmapped call; beside each optimum: its weight norm,
training / validation / test accuracy, gradient norm, iterations, and the largest learning
rate at which gradient descent can settle there (2 / lambda_max of the Hessian).

Dimension legend: L values of lambda.
"""

from __future__ import annotations

import logging
import time

import jax
import numpy as np

from experiments.common import RunDir, data_text, task_name
from experiments.regpath_config import RegPath
from jaxlr.core import optimum
from jaxlr.data.splits import features, load_splits, optimum_features
from jaxlr.engine.train import model_for
from jaxlr.report import figures, tables
from jaxlr.report import metrics as jmetrics

log = logging.getLogger("jaxlr.experiments.regpath")


def _accuracy(model, params_L, x, y, num: int) -> list[float]:
    """Accuracy of each of the L optima on (x, y), in float64."""
    return [
        jmetrics.evaluate(
            model, jax.tree.map(lambda a, i=i: np.asarray(a)[i], params_L), x, y, float64=True
        ).accuracy
        for i in range(num)
    ]


def regularization_path(cfg: RegPath, run: RunDir) -> dict:
    """The exact optimum for each lambda of a path, solved in one vmapped call (9 vs 4).

    Launch:  python -m experiments.main --experiment=regularization_path
             --workdir=runs/regularization_path   (--l2=0.01,0.5,1 or --num_l2=32
             --l2_range=1e-4,10; --model=softmax for the ten digits)
    Runtime: about 20 s on 2 CPU cores for the default 16 lambdas (9,847 images).
    Result:  table.md, path.png and metrics.json with one entry per lambda (l2, objective,
             grad_norm, iterations, lr_limit, weight norm, accuracies); the validation
             accuracy peaks at small lambda and the GD limit 2 / lambda_max falls with lambda.
    """
    splits = load_splits(cfg.data)
    data = splits.data
    # The optimum of the images: float64 features rebuilt from the uint8 training images,
    # whatever --dtype; the accuracies likewise on float64 validation and test features.
    x, y = optimum_features(cfg.data, splits), np.asarray(data.y_train)
    x_val = features(cfg.data, splits.images_val, np.float64)
    x_test = x_val if splits.test_is_val else features(cfg.data, splits.images_test, np.float64)
    model = model_for(cfg.train, x.shape[1], x.dtype)
    lambdas = cfg.lambdas
    t0 = time.perf_counter()
    rep = optimum.optimum_report(
        model, x, y, lambdas, include_bias=cfg.train.l2_bias, tol=cfg.tol, max_iter=cfg.max_iter
    )
    seconds = time.perf_counter() - t0
    path = rep.path
    num = len(lambdas)
    acc = {
        "train": _accuracy(model, path.params, x, y, num),
        "val": _accuracy(model, path.params, x_val, data.y_val, num),
        "test": _accuracy(model, path.params, x_test, splits.y_test, num),
    }
    per_lambda = _path_entries(lambdas, rep.rows, acc)
    metrics = {f"lambda={e['l2']:g}": e for e in per_lambda}
    entries = list(metrics.values())
    table = _path_table(per_lambda)
    from jaxlr.host.io import atomic_write_text

    atomic_write_text(run.out / "table.md", table + "\n")
    _path_figure(run.out / "path.png", cfg, lambdas, entries)
    n_conv = sum(e["converged"] for e in entries)
    sections = [
        f"{data_text(cfg.data, data)} Objective: mean cross-entropy + lambda R(w), R = "
        f"{'sum' if cfg.train.l2_convention == 'sum' else 'half the sum'} of squared weights, "
        f"bias {'penalised' if cfg.train.l2_bias else 'not penalised'}. Each of the {num} "
        f"lambdas was solved to a gradient norm below "
        f"{cfg.tol:g} (float64 Newton-CG, one vmapped call, "
        f"{seconds:.1f} s with compilation); {n_conv} of {num} converged.",
        "## Path\n\n" + table,
        "## Figures\n\n![regularization path](path.png)\n\nThe learning-rate limit is "
        "2 / lambda_max of the Hessian of the objective (Lanczos on Hessian-vector "
        "products): gradient descent with a larger constant rate cannot settle at the optimum.",
    ]
    tables.write_report(
        run.out / "report.md", f"Regularization path, {cfg.train.model} {_what(cfg)}", sections
    )
    metrics["num_l2"] = num
    metrics["solve_seconds"] = seconds
    return metrics


def _path_entries(lambdas, rows: list[dict], acc: dict) -> list[dict]:
    """The optimum's numbers for each lambda, from the solver's rows and the accuracies."""
    return [
        {
            "l2": lam,
            "objective": row["optimum_objective"],
            "cross_entropy": row["optimum_cross_entropy"],
            "grad_norm": row["grad_norm"],
            "iterations": row["iterations"],
            "converged": row["converged"],
            "separated": row["separated"],
            "no_finite_optimum": row["no_finite_optimum"],
            "lr_limit": row["lr_limit"],
            "lr_limit_init": row["lr_limit_init"],
            "weight_norm": row["weight_norm"],
            "train_accuracy": acc["train"][i],
            "val_accuracy": acc["val"][i],
            "test_accuracy": acc["test"][i],
        }
        for i, (lam, row) in enumerate(zip(lambdas, rows))
    ]


def _path_table(entries: list[dict]) -> str:
    """The path as a markdown table, one row per lambda."""
    rows = [
        [f"{e['l2']:g}", f"{e['objective']:.6f}", f"{e['weight_norm']:.4g}",
         f"{e['train_accuracy']:.4f}", f"{e['val_accuracy']:.4f}",
         f"{e['test_accuracy']:.4f}", f"{e['grad_norm']:.1e}",
         str(e["iterations"]), f"{e['lr_limit']:.4g}",
         "yes" if e["converged"] else ("no finite optimum" if e["no_finite_optimum"] else "no")]
        for e in entries
    ]  # fmt: skip
    return tables.markdown_table(
        ["lambda", "objective", "norm of w", "train acc", "val acc", "test acc", "grad norm",
         "iterations", "lr limit", "converged"],
        rows,
        align="rrrrrrrrrl",
    )  # fmt: skip


def _path_figure(path, cfg: RegPath, lambdas, entries: list[dict]) -> None:
    """Objective, accuracies and GD learning-rate limit against lambda (log scale, lambda > 0)."""
    lam = np.asarray(lambdas, np.float64)
    pos = lam > 0

    def series(key):
        return (lam[pos], np.asarray([e[key] for e in entries], np.float64)[pos])

    figures.plot_side_by_side(
        path,
        [
            {"series": {"optimum objective": series("objective"),
                        "its cross-entropy": series("cross_entropy")},
             "xlabel": "lambda (log scale)", "ylabel": "objective", "logx": True,
             "title": "objective at the optimum", "marker": "o"},
            {"series": {"train": series("train_accuracy"), "validation": series("val_accuracy"),
                        "test": series("test_accuracy")},
             "xlabel": "lambda (log scale)", "ylabel": "accuracy", "logx": True,
             "title": "accuracy of the optimum", "marker": "o"},
            {"series": {"at the optimum": series("lr_limit"),
                        "at zero weights": series("lr_limit_init")},
             "xlabel": "lambda (log scale)", "ylabel": "2 / lambda_max(H)", "logx": True,
             "logy": True, "title": "largest stable GD learning rate", "marker": "o"},
        ],
        suptitle=f"Regularization path of {cfg.train.model} regression, {_what(cfg)}",
    )  # fmt: skip


def _what(cfg: RegPath) -> str:
    d = cfg.data
    return task_name(d) if d.binary else f"{task_name(d)} of {d.dataset}"
