"""The exact optima and gradient-descent limits of the course protocols (issue 13's numbers).

For each convex protocol, solved in float64 with `jaxlr.core.solver` (Newton-CG, ||grad|| <= 1e-10):

  * hw3_logreg_grid: logistic regression 9 (label 1) vs 4 (label 0), pixels / 255, bias
    feature, penalty lambda * sum w^2 without the bias, training images = the first 50,000
    training images that are 4s or 9s, test = the first 1000 test 4s and 9s. For lambda 0.01,
    0.5 and 1: the optimum objective, the limit 2 / h_max at the optimum and at zero, the
    optimum's test accuracy; and for the 3 x 3 grid (lr 0.1, 0.5, 1) the objective that 1000
    full-batch gradient-descent steps from zero reach in float32 (the experiment's
    arithmetic, re-run here), its gap to the optimum and lr / limit.
  * tdt4265_task2: logistic 2 (label 1) vs 3 among the first 20,000 training images, pixels
    scaled to [-1, 1], bias feature, lambda 0 (and 0.01; penalty sum w^2 with the bias):
    whether a finite optimum exists (lambda 0 on separable data has none); at lambda 0.01 the
    gap of the engine's run (`jaxlr.engine.train.fit`, the task's SGD protocol) to the optimum.
  * tdt4265_task4: softmax regression, 10 classes, first 20,000 training images, [-1, 1],
    bias feature, penalty lambda * sum w^2 with the bias, lambda 0, 0.001, 0.01, 0.1, 1.

    python -m benchmarks.optimum_protocols --data_dir=../shared/data [--out=FILE.json]

Runtime ~1-3 min on the 2-core CPU. Prints Markdown tables and (with --out) writes JSON.

Dimension legend: N examples, D features (785 with the bias feature), K classes, L lambdas,
S grid points.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxlr.core import optimum, solver  # noqa: E402
from jaxlr.core.objective import make_model  # noqa: E402
from jaxlr.data import images as jimages  # noqa: E402
from jaxlr.data import registry as jregistry  # noqa: E402
from jaxlr.engine.config import TrainConfig, make_hparams  # noqa: E402
from jaxlr.engine.step import Data  # noqa: E402
from jaxlr.engine.train import fit  # noqa: E402
from jaxlr.host.io import atomic_write_json  # noqa: E402

F64 = jnp.float64


def hw3_data(data_dir):
    """(x_ND, y_N, x_test_ND, y_test_N) of the hw3_logreg_grid protocol, float64."""
    ds = jregistry.load_dataset("mnist", data_dir, download=False)
    xtr, ytr = jimages.binary_subset(ds.x_train[:50000], ds.y_train[:50000], positive=9, negative=4)
    xte, yte = jimages.binary_subset(ds.x_test, ds.y_test, positive=9, negative=4)
    prep = lambda x: jimages.preprocess(x, scale="unit", bias=True, dtype=np.float64)  # noqa: E731
    return prep(xtr), np.asarray(ytr, np.int32), prep(xte[:1000]), np.asarray(yte[:1000], np.int32)


def tdt4265_data(data_dir, digits):
    """First 20,000 training images ([-1, 1], bias feature); validation = the test set."""
    ds = jregistry.load_dataset("mnist", data_dir, download=False)
    xtr, ytr, xva, yva = ds.x_train[:20000], ds.y_train[:20000], ds.x_test, ds.y_test
    if digits:
        xtr, ytr = jimages.binary_subset(xtr, ytr, positive=digits[0], negative=digits[1])
        xva, yva = jimages.binary_subset(xva, yva, positive=digits[0], negative=digits[1])
    prep = lambda x: jimages.preprocess(x, scale="symmetric", bias=True, dtype=np.float64)  # noqa: E731
    return prep(xtr), np.asarray(ytr, np.int32), prep(xva), np.asarray(yva, np.int32)


def gd_final_objective(model, x_ND, y_N, l2, lr, steps):
    """Objective after `steps` full-batch GD steps from zero in float32, evaluated in float64."""
    x32 = jnp.asarray(x_ND, jnp.float32)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), model.init(jax.random.key(0)))

    @jax.jit
    def run(params, l2, lr):
        def f(p):
            return model.loss(p, x32, y_N, l2)[0]

        def step(p, _):
            return jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(f)(p)), None

        return jax.lax.scan(step, params, None, length=steps)[0]

    final = jax.tree.map(lambda a: a.astype(F64), run(params, jnp.float32(l2), jnp.float32(lr)))
    return float(model.loss(final, jnp.asarray(x_ND, F64), y_N, l2)[0])


def correct(model, params, x_ND, y_N) -> int:
    return int(round(float(model.accuracy(model.apply(params, x_ND), y_N)) * len(y_N)))


def hw3(data_dir) -> dict:
    x, y, xte, yte = hw3_data(data_dir)
    model = make_model("logistic", num_features=785, l2_convention="sum", l2_bias=False, dtype=F64)
    lams, lrs = (0.01, 0.5, 1.0), (0.1, 0.5, 1.0)
    grid = [(lam, lr) for lam in lams for lr in lrs]
    t0 = time.perf_counter()
    finals = [gd_final_objective(model, x, y, lam, lr, 1000) for lam, lr in grid]
    t_gd = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = optimum.optimum_report(
        model,
        x,
        y,
        [g[0] for g in grid],
        learning_rates=[g[1] for g in grid],
        final_objectives=finals,
        include_bias=False,
    )
    t_solve = time.perf_counter() - t0
    per_lambda = {}
    for i, lam in enumerate(rep.l2_L):
        p = jax.tree.map(lambda a, i=i: a[i], rep.path.params)
        per_lambda[f"{lam:g}"] = dict(
            test_correct=correct(model, p, xte, yte),
            train_accuracy=float(model.accuracy(model.apply(p, x), y)),
        )
    return dict(
        num_train=len(y),
        rows=rep.rows,
        per_lambda=per_lambda,
        seconds_solve=t_solve,
        seconds_gd_grid=t_gd,
    )


def one_class_features(x_ND, y_N) -> int:
    """Features (bias excluded) whose values above their minimum all come from one class.

    Such a feature j (values above the minimum c only in examples of class k) certifies that
    with lambda = 0 there is no finite optimum: raising w[j, k] by t and lowering class k's
    bias by t c changes no logit except the true-class logit of those examples, which rises,
    so the cross-entropy falls for every t > 0 (quasi-separation along one pixel).
    """
    above_ND = x_ND[:, :-1] > x_ND[:, :-1].min(axis=0)
    counts_KD = np.eye(int(y_N.max()) + 1)[y_N].T @ above_ND
    return int(np.sum((counts_KD > 0).sum(axis=0) == 1))


def lambda0(model, x, y, xva, yva, max_iter) -> dict:
    """Solve with lambda 0 (capped at max_iter) and the one-class-feature certificate."""
    t0 = time.perf_counter()
    r = solver.solve(model, None, x, y, 0.0, max_iter=max_iter)
    return dict(
        objective=float(r.objective),
        grad_norm=float(r.grad_norm),
        iterations=int(r.iterations),
        hvps=int(r.hvps),
        converged=bool(r.converged),
        separated=bool(r.separated),
        stalled=bool(r.stalled),
        weight_norm=float(jnp.linalg.norm(r.params["w"])),
        train_accuracy=float(model.accuracy(model.apply(r.params, x), y)),
        val_accuracy=float(model.accuracy(model.apply(r.params, xva), yva)),
        one_class_features=one_class_features(x, y),
        seconds=time.perf_counter() - t0,
    )


def task2(data_dir) -> dict:
    x, y, xva, yva = tdt4265_data(data_dir, (2, 3))
    model = make_model("logistic", num_features=785, l2_convention="sum", l2_bias=True, dtype=F64)
    out = {"num_train": len(y), "lambda=0": lambda0(model, x, y, xva, yva, 200)}
    t0 = time.perf_counter()
    r = solver.solve(model, None, x, y, 0.01)
    out["lambda=0.01"] = dict(
        objective=float(r.objective),
        cross_entropy=float(r.cross_entropy),
        grad_norm=float(r.grad_norm),
        iterations=int(r.iterations),
        converged=bool(r.converged),
        weight_norm=float(jnp.linalg.norm(r.params["w"])),
        train_accuracy=float(model.accuracy(model.apply(r.params, x), y)),
        val_accuracy=float(model.accuracy(model.apply(r.params, xva), yva)),
        seconds=time.perf_counter() - t0,
    )
    # The engine's run of the task 2 protocol at lambda 0.01 (float32, mini-batch SGD: batch
    # 128, lr 0.05, 50 epochs, no shuffling), its final objective evaluated in float64.
    cfg = TrainConfig(model="logistic", batch_size=128, num_epochs=50, l2_bias=True)
    data = Data(x.astype(np.float32), y, xva.astype(np.float32), yva)
    run = fit(cfg, make_hparams(0.05, l2=0.01, dtype=jnp.float32), data, log_fn=lambda _: None)
    final = jax.tree.map(lambda a: jnp.asarray(a, F64), run.params)
    f_final = float(model.loss(final, jnp.asarray(x), y, 0.01)[0])
    out["lambda=0.01"].update(
        engine_final_objective=f_final, engine_gap=f_final - out["lambda=0.01"]["objective"]
    )
    return out


def task4(data_dir) -> dict:
    x, y, xva, yva = tdt4265_data(data_dir, ())
    model = make_model("softmax", num_features=785, l2_convention="sum", l2_bias=True, dtype=F64)
    t0 = time.perf_counter()
    rep = optimum.optimum_report(model, x, y, [0.001, 0.01, 0.1, 1.0])
    seconds = time.perf_counter() - t0
    for i, row in enumerate(rep.rows):
        p = jax.tree.map(lambda a, i=i: a[i], rep.path.params)
        row["val_accuracy"] = float(model.accuracy(model.apply(p, xva), yva))
        row["hvps"] = int(rep.path.hvps[i])
    # lambda 0 apart (capped): it has no finite optimum, and under vmap every lambda would
    # run as long as the slowest.
    zero = lambda0(model, x, y, xva, yva, 15)
    return dict(num_train=len(y), rows=rep.rows, seconds=seconds, lambda0=zero)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    res = dict(hw3_logreg_grid=hw3(args.data_dir))
    print("hw3 done", json.dumps(res["hw3_logreg_grid"]), flush=True)
    res["tdt4265_task2"] = task2(args.data_dir)
    print("task2 done", json.dumps(res["tdt4265_task2"]), flush=True)
    res["tdt4265_task4"] = task4(args.data_dir)

    h = res["hw3_logreg_grid"]
    print(f"## hw3_logreg_grid (N = {h['num_train']}; solve + limits {h['seconds_solve']:.1f} s)")
    print(
        "| lambda | lr | optimum objective | after 1000 GD steps | gap | lr limit at optimum "
        "| at zero | lr / limit | Newton its |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in h["rows"]:
        print(
            f"| {r['l2']:g} | {r['lr']:g} | {r['optimum_objective']:.10f} | "
            f"{r['gap'] + r['optimum_objective']:.6f} | {r['gap']:.2e} | "
            f"{r['lr_limit']:.4f} | {r['lr_limit_init']:.4f} | {r['lr_over_limit']:.3f} | "
            f"{r['iterations']} |"
        )
    for lam, v in h["per_lambda"].items():
        print(
            f"lambda {lam}: optimum's test correct {v['test_correct']}/1000, "
            f"train accuracy {v['train_accuracy']:.4f}"
        )
    t2 = res["tdt4265_task2"]
    print(f"\n## tdt4265_task2 protocol (N = {t2['num_train']})")
    for k, v in t2.items():
        if k.startswith("lambda"):
            print(k, json.dumps(v))
    t4 = res["tdt4265_task4"]
    print(f"\n## tdt4265_task4 protocol (N = {t4['num_train']}; {t4['seconds']:.1f} s)")
    print(
        "| lambda | optimum objective | cross-entropy | grad norm | its | HVPs | lr limit at "
        "optimum | at zero | weight norm | val acc |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in t4["rows"]:
        print(
            f"| {r['l2']:g} | {r['optimum_objective']:.10f} | {r['optimum_cross_entropy']:.6f} "
            f"| {r['grad_norm']:.1e} | {r['iterations']} | {r['hvps']} | {r['lr_limit']:.5f} "
            f"| {r['lr_limit_init']:.5f} | {r['weight_norm']:.4f} | {r['val_accuracy']:.4f} |"
        )
    print("lambda=0", json.dumps(t4["lambda0"]))
    if args.out:
        atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
