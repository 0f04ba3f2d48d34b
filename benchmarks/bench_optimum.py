"""The cost of tdt4265_task4's optimum columns: whole processes, and the solve / limit split.

Two parts (``--part``, default both):

  * ``process``: whole-process A/B, ``python -m experiments.main --experiment=tdt4265_task4
    --notensorboard`` with and without ``--nooptimum``, each into a fresh workdir,
    interleaved, ``--repeats`` rounds; prints every time, the min and the median of each side
    and their ratios (target: at most 1.5x). The compilation cache stays on (as a user runs
    it); the first round fills it. ``--trees=DIR,DIR`` runs each round in every checkout
    (e.g. ``git archive COMMIT | tar -x -C DIR``), interleaved, to compare before and after
    on the same machine at the same time (a whole process varies by 1.5x from hour to hour
    on a shared one).
  * ``split``: in one process, the optimum work of the task on its training set (the first
    20,000 MNIST training images, ten digits, [-1, 1] plus the bias feature, float64
    features rebuilt from the uint8 images, R = sum w^2 with the bias penalised, lambdas
    0, 1, 0.1, 0.01, 0.001): the Newton-CG path (``solve_path``: seconds, iterations and
    HVPs per lambda), then the gradient-descent limit 2 / lambda_max at each optimum by
    Lanczos (the default) and by power iteration (seconds, products per lambda, the two
    limits' relative difference), each the best of ``--repeats`` after one compiling call.

    python -m benchmarks.bench_optimum --data_dir=../shared/data [--part=split|process]
        [--repeats=3] [--trees=DIR,DIR] [--out=FILE.json]

The machine is shared: report the min of several rounds and say so.

Dimension legend: N examples, D features (785), K classes (10), L lambdas.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (0.0, 1.0, 0.1, 0.01, 0.001)


def _process_once(data_dir: str, extra: list[str], tree: Path = REPO) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_optimum_") as tmp:
        cmd = [sys.executable, "-m", "experiments.main", "--experiment=tdt4265_task4",
               f"--workdir={tmp}/w", "--notensorboard", *extra]  # fmt: skip
        if data_dir:
            cmd.append(f"--data_dir={data_dir}")
        env = dict(os.environ, PYTHONPATH=str(tree))  # that checkout's jaxlr, not the installed
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        return seconds


def part_process(data_dir: str, repeats: int, tree: Path = REPO) -> dict:
    return part_process_trees(data_dir, repeats, [tree])[str(tree)]


def part_process_trees(data_dir: str, repeats: int, trees: list[Path]) -> dict:
    times = {str(t): {"optimum": [], "nooptimum": []} for t in trees}
    for r in range(repeats):
        for tree in trees:
            for side, extra in (("optimum", []), ("nooptimum", ["--nooptimum"])):
                seconds = _process_once(data_dir, extra, tree)
                times[str(tree)][side].append(seconds)
                label = "" if len(trees) == 1 else f" {tree}"
                print(f"round {r}{label}: {side} {seconds:.1f} s", flush=True)
    return {t: _summary(v) for t, v in times.items()}


def _summary(times: dict) -> dict:
    best = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    return dict(
        seconds=times,
        best=best,
        median=median,
        ratio=best["optimum"] / best["nooptimum"],
        median_ratio=median["optimum"] / median["nooptimum"],
    )


def part_split(data_dir: str, repeats: int, hvp_dtypes, methods) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from jaxlr.core import curvature, solver
    from jaxlr.core.objective import make_model
    from jaxlr.data import images as jimages
    from jaxlr.data import registry as jregistry

    ds = jregistry.load_dataset("mnist", data_dir or None, download=False)
    x_ND = jnp.asarray(jimages.preprocess(ds.x_train[:20000], dtype=np.float64))
    y_N = jnp.asarray(np.asarray(ds.y_train[:20000], np.int32))
    model = make_model("softmax", num_features=785, num_classes=10, l2_convention="sum",
                       l2_bias=True, dtype=jnp.float64)  # fmt: skip
    lam_L = np.asarray(LAMBDAS)
    out, objectives, path = {}, {}, None
    for hvp_dtype in hvp_dtypes:
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            path = solver.solve_path(model, x_ND, y_N, lam_L, progress=False, hvp_dtype=hvp_dtype)
            jax.block_until_ready(path.params)
            secs.append(time.perf_counter() - t0)
        out[f"solve_{hvp_dtype}"] = dict(
            seconds=secs,
            iterations=[int(v) for v in path.iterations],
            hvps=[int(v) for v in path.hvps],
            objective=[float(v) for v in path.objective],
            grad_norm=[float(v) for v in path.grad_norm],
            converged=[bool(v) for v in path.converged],
        )
        objectives[hvp_dtype] = np.asarray(path.objective, np.float64)
    if len(objectives) == 2:
        a, b = objectives.values()
        out["solve_objective_max_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(b)))
    key = jax.random.PRNGKey(0)

    @jax.jit
    def eig(params, lam):
        def f(p):
            return model.loss(p, x_ND, y_N, lam)[0]

        p_P, unravel = ravel_pytree(params)
        _, matvec = jax.linearize(jax.grad(lambda q: f(unravel(q))), p_P)
        v0 = jax.random.normal(key, p_P.shape, p_P.dtype)
        return curvature.lanczos(matvec, v0), curvature.power_iteration(matvec, v0)

    for method in methods:
        secs, limits = [], []
        for i, lam in enumerate(LAMBDAS):
            p_i = jax.tree.map(lambda a, i=i: a[i], path.params)
            curvature.lr_limit(model, p_i, x_ND, y_N, lam, method=method).block_until_ready()
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                lim = curvature.lr_limit(model, p_i, x_ND, y_N, lam, method=method)
                lim.block_until_ready()
                best = min(best, time.perf_counter() - t0)
            secs.append(best)
            limits.append(float(lim))
        out[f"limit_{method}_seconds"] = secs
        out[f"limit_{method}"] = limits
    if "power" in methods and "lanczos" in methods:
        prods = []
        for i, lam in enumerate(LAMBDAS):
            p_i = jax.tree.map(lambda a, i=i: a[i], path.params)
            lz, pw = eig(p_i, lam)
            prods.append((int(lz.iterations), int(pw.iterations)))
        out["products_lanczos_power"] = prods
        out["limit_rel_diff"] = [
            abs(a - b) / b for a, b in zip(out["limit_lanczos"], out["limit_power"], strict=True)
        ]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", ""))
    ap.add_argument("--part", default="both", choices=("both", "split", "process"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hvp_dtypes", default="float32,float64", help="split: solve_path's")
    ap.add_argument("--methods", default="lanczos,power", help="split: eigenvalue methods")
    ap.add_argument("--trees", default=str(REPO), help="process: checkouts, comma-separated")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    result = dict(machine=platform.platform(), cpus=os.cpu_count(), load=os.getloadavg())
    if args.part in ("both", "split"):
        hvp_dtypes, methods = args.hvp_dtypes.split(","), args.methods.split(",")
        result["split"] = s = part_split(args.data_dir, args.repeats, hvp_dtypes, methods)
        for h in hvp_dtypes:
            r = s[f"solve_{h}"]
            total = sum(r["hvps"])
            print(f"solve_path, HVPs in {h}: best {min(r['seconds']):.1f} s of {r['seconds']}; "
                  f"iterations {r['iterations']}, HVPs {r['hvps']} (total {total})")  # fmt: skip
        if "solve_objective_max_rel_diff" in s:
            print(f"objectives, max rel diff between them: {s['solve_objective_max_rel_diff']:.2e}")
        for m in methods:
            secs = s[f"limit_{m}_seconds"]
            print(f"limits by {m}: {sum(secs):.1f} s ({', '.join(f'{v:.2f}' for v in secs)})")
        if "products_lanczos_power" in s:
            print(f"products (lanczos, power) per lambda: {s['products_lanczos_power']}; limits "
                  f"{s['limit_lanczos']}, max rel diff {max(s['limit_rel_diff']):.2e}")  # fmt: skip
    if args.part in ("both", "process"):
        trees = [Path(t).resolve() for t in args.trees.split(",")]
        result["process"] = by_tree = part_process_trees(args.data_dir, args.repeats, trees)
        for tree, p in by_tree.items():
            print(f"tdt4265_task4 whole process ({tree}): optimum {p['best']['optimum']:.1f} s, "
                  f"--nooptimum {p['best']['nooptimum']:.1f} s (min of {args.repeats}): "
                  f"{p['ratio']:.2f}x; medians {p['median']['optimum']:.1f} s and "
                  f"{p['median']['nooptimum']:.1f} s: {p['median_ratio']:.2f}x")  # fmt: skip
    result["load_after"] = os.getloadavg()
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
