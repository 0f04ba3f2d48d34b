"""A 32-lambda regularization path of 9 vs 4: jaxlr `solve_path` vs scikit-learn, side by side.

The problem is hw3_logreg_grid's: logistic regression 9 (label 1) vs 4 (label 0) among the
first 50,000 training images (N = 9,847), pixels / 255, a bias feature that is not
penalised, objective ``mean cross-entropy + lambda * sum w^2``, float64; 32 lambdas
log-spaced from 1 down to 1e-4. Measured, each the best of `--repeats` interleaved rounds:

  * jaxlr `solve_path` (Newton-CG on Hessian-vector products, vmapped over the 32 lambdas,
    one compiled call, every lambda started from zero), ``||grad||_2 <= tol``; compiled
    beforehand (the compile time is reported apart);
  * jaxlr, a host loop of `solve` calls, each warm-started from the previous lambda's
    solution (what vmapping buys over the same solver one lambda at a time);
  * scikit-learn `LogisticRegression(warm_start=True)` refitted over the lambdas, largest
    first (`benchmarks/sklearn_path.py`, run by the Python of its own environment,
    `--sklearn_python` or $SKLEARN_PYTHON, default /tmp/sklenv/bin/python), with solvers
    newton-cg (its fastest here), lbfgs and newton-cholesky as asked by `--solvers`; the
    same tolerance number, which scikit-learn applies to ``max |grad_i|`` (no stricter than
    jaxlr's Euclidean norm).

Checked in the same run: every lambda's optimum objective agrees to `--rtol` (default 1e-9)
relative between jaxlr and each scikit-learn solver (objectives recomputed in float64 by
each side from its own solution, with the same formula). Prints a Markdown table and
(with --out) writes JSON.

    python -m benchmarks.bench_regpath --data_dir=../shared/data [--repeats=3]
        [--solvers=newton-cg,lbfgs,newton-cholesky] [--tol=1e-10] [--out=FILE.json]

Set up the scikit-learn side once (not a jaxlr dependency):
    python -m venv /tmp/sklenv && /tmp/sklenv/bin/pip install scikit-learn numpy scipy

Dimension legend: N examples, D features (785 with the bias feature), L lambdas.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxlr.core import solver  # noqa: E402
from jaxlr.core.objective import make_model  # noqa: E402
from jaxlr.data import images as jimages  # noqa: E402
from jaxlr.data import registry as jregistry  # noqa: E402
from jaxlr.host.io import atomic_write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
LAMBDAS_L = np.logspace(0, -4, 32)


def load_9_vs_4(data_dir):
    """(x_ND, y_N) in float64 with the bias feature: the hw3_logreg_grid training set."""
    ds = jregistry.load_dataset("mnist", data_dir, download=False)
    x, y = jimages.binary_subset(ds.x_train[:50000], ds.y_train[:50000], positive=9, negative=4)
    return jimages.preprocess(x, scale="unit", bias=True, dtype=np.float64), np.asarray(y, np.int32)


class JaxlrPath:
    """The compiled `solve_path` of the problem and a warm-started loop of `solve` calls."""

    def __init__(self, x_ND, y_N, tol: float):
        self.model = make_model(
            "logistic",
            num_features=x_ND.shape[1],
            l2_convention="sum",
            l2_bias=False,
            dtype=jnp.float64,
        )
        self.x_ND, self.y_N, self.tol = jnp.asarray(x_ND), jnp.asarray(y_N), tol
        t0 = time.perf_counter()
        jax.block_until_ready(self.path())
        self.first_call_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(self.loop())
        self.loop_first_call_seconds = time.perf_counter() - t0

    def path(self):
        return solver.solve_path(self.model, self.x_ND, self.y_N, LAMBDAS_L, tol=self.tol)

    def loop(self):
        params, out = None, []
        for lam in LAMBDAS_L:
            r = solver.solve(self.model, params, self.x_ND, self.y_N, lam, tol=self.tol)
            params = r.params
            out.append(r)
        return out

    def timed(self, fn):
        t0 = time.perf_counter()
        res = jax.block_until_ready(fn())
        return time.perf_counter() - t0, res


def run_sklearn(python: str, data_dir, solver_name: str, tol: float) -> dict:
    cmd = [
        python,
        str(HERE / "sklearn_path.py"),
        f"--data_dir={data_dir or ''}",
        "--l2=" + ",".join(f"{v:.17g}" for v in LAMBDAS_L),
        f"--solver={solver_name}",
        f"--tol={tol}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--solvers", default="newton-cg,lbfgs,newton-cholesky")
    ap.add_argument(
        "--sklearn_python", default=os.environ.get("SKLEARN_PYTHON", "/tmp/sklenv/bin/python")
    )
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    solvers = [s for s in args.solvers.split(",") if s]

    x_ND, y_N = load_9_vs_4(args.data_dir)
    jx = JaxlrPath(x_ND, y_N, args.tol)
    best = {"jaxlr solve_path": float("inf"), "jaxlr loop of solve": float("inf")}
    best.update({f"sklearn {s}": float("inf") for s in solvers})
    sk_results, path, loop = {}, None, None
    loads = []
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        dt, path = jx.timed(jx.path)
        best["jaxlr solve_path"] = min(best["jaxlr solve_path"], dt)
        dt, loop = jx.timed(jx.loop)
        best["jaxlr loop of solve"] = min(best["jaxlr loop of solve"], dt)
        for s in solvers:
            r = run_sklearn(args.sklearn_python, args.data_dir, s, args.tol)
            best[f"sklearn {s}"] = min(best[f"sklearn {s}"], r["seconds"])
            sk_results[s] = r

    f_path_L = np.asarray(path.objective, np.float64)
    f_loop_L = np.array([float(r.objective) for r in loop])
    agree = {"jaxlr loop of solve": float(np.max(np.abs(f_loop_L - f_path_L) / f_path_L))}
    for s, r in sk_results.items():
        f_sk_L = np.array([p["objective"] for p in r["path"]])
        agree[f"sklearn {s}"] = float(np.max(np.abs(f_sk_L - f_path_L) / f_path_L))
    t_path = best["jaxlr solve_path"]
    print(
        f"N = {len(y_N)}, D = {x_ND.shape[1]}, L = {len(LAMBDAS_L)} lambdas "
        f"{LAMBDAS_L[0]:g} .. {LAMBDAS_L[-1]:g}, tol {args.tol:g}; best of {args.repeats} "
        f"interleaved rounds; load average at the rounds' starts {loads}"
    )
    print(
        f"jaxlr solve_path: first call (compile + run) {jx.first_call_seconds:.2f} s; "
        f"Newton iterations per lambda {int(np.min(path.iterations))}-"
        f"{int(np.max(path.iterations))}, HVPs {int(np.min(path.hvps))}-"
        f"{int(np.max(path.hvps))}, max grad norm {float(np.max(path.grad_norm)):.1e}, "
        f"all converged: {bool(np.all(path.converged))}"
    )
    print("\n| side | path (s) | jaxlr solve_path speed-up | max rel. objective difference |")
    print("|---|---:|---:|---:|")
    for name, t in best.items():
        diff = "-" if name == "jaxlr solve_path" else f"{agree[name]:.1e}"
        print(f"| {name} | {t:.3f} | {t / t_path:.2f}x | {diff} |")
    for s, r in sk_results.items():
        its = [p["iterations"] for p in r["path"]]
        warn = sum(p["convergence_warning"] for p in r["path"])
        gmax = max(p["grad_max_abs"] for p in r["path"])
        print(
            f"sklearn {s}: iterations per lambda {min(its)}-{max(its)} (total {sum(its)}), "
            f"max |grad_i| {gmax:.1e}, convergence warnings {warn}"
        )
    ok = all(v <= args.rtol for v in agree.values())
    print(f"objectives agree to {args.rtol:g} relative: {ok}")
    if args.out:
        atomic_write_json(
            args.out,
            dict(
                lambdas=LAMBDAS_L.tolist(),
                tol=args.tol,
                best_seconds=best,
                max_rel_objective_difference=agree,
                jaxlr_first_call_seconds=jx.first_call_seconds,
                jaxlr_iterations=np.asarray(path.iterations).tolist(),
                jaxlr_hvps=np.asarray(path.hvps).tolist(),
                jaxlr_objective=f_path_L.tolist(),
                sklearn=sk_results,
                loads=loads,
                python=sys.version.split()[0],
                jax=jax.__version__,
                machine=platform.machine(),
            ),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
