"""The 4-vs-9 regularization path with scikit-learn: the side of `bench_regpath.py` to compare with.

Runs in its own environment (scikit-learn is not a dependency of jaxlr), so it imports
neither jax nor jaxlr: it reads the MNIST IDX files itself, with numpy.

    /tmp/sklenv/bin/python benchmarks/sklearn_path.py --data_dir=../shared/data
        --l2=1,0.5,... [--solver=newton-cg] [--tol=1e-10] [--repeats=1]
        [--jaxlr_metrics=W/metrics.json]

With ``--jaxlr_metrics`` (the metrics.json of a `regularization_path` run of the same
protocol, e.g. ``python -m experiments.main --experiment=regularization_path --workdir=W
--l2=0.01,0.5,1``) it also prints, per lambda, jaxlr's optimum objective and its relative
difference to scikit-learn's (``(jaxlr - sklearn) / sklearn``: negative when jaxlr's is
lower), and adds them to the JSON (``agreement``).

Protocol (jaxlr's hw3_logreg_grid): digits 9 (label 1) vs 4 (label 0) among the first 50,000
training images, pixels / 255 (784 features), an unpenalised intercept, float64. jaxlr's
objective ``mean cross-entropy + lambda * sum w^2`` is scikit-learn's
``mean log-loss + ||w||^2 / (2 C N)`` with ``C = 1 / (2 lambda N)``. The path is a loop of
`LogisticRegression(warm_start=True).fit` calls over the lambdas in the given order (largest
first: each fit starts from the previous solution); its wall time is the best of
`--repeats`. Prints one JSON object: per lambda the objective (computed here, in numpy,
as jaxlr defines it), iterations and the max-abs gradient; seconds; versions.

Dimension legend: N examples, D features (784).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz"}


def find_mnist(data_dir: str | None) -> Path:
    """The folder holding the MNIST training files: data_dir, data_dir/mnist or $JAXLR_DATA_DIR."""
    roots = [r for r in (data_dir, os.environ.get("JAXLR_DATA_DIR")) if r]
    for root in roots:
        for folder in (Path(root) / "mnist", Path(root)):
            if all((folder / f).exists() for f in FILES.values()):
                return folder
    raise FileNotFoundError(f"MNIST files {sorted(FILES.values())} not found under {roots}")


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array from a gzip file."""
    raw = gzip.decompress(path.read_bytes())
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_9_vs_4(data_dir: str | None):
    """(x_ND, y_N): 9 -> 1, 4 -> 0 among the first 50,000 training images, pixels / 255."""
    folder = find_mnist(data_dir)
    x = read_idx(folder / FILES["x_train"])[:50000]
    y = read_idx(folder / FILES["y_train"])[:50000]
    keep = (y == 9) | (y == 4)
    x_ND = x[keep].reshape(int(keep.sum()), -1).astype(np.float64) / 255.0
    return x_ND, (y[keep] == 9).astype(np.float64)


def objective(w_D, b, x_ND, y_N, lam):
    """jaxlr's objective: mean binary cross-entropy + lambda * sum w^2 (intercept excluded)."""
    z_N = x_ND @ w_D + b
    return float(np.mean(np.logaddexp(0.0, z_N) - y_N * z_N) + lam * np.sum(w_D * w_D))


def gradient_max_abs(w_D, b, x_ND, y_N, lam):
    """max |d objective / d (w, b)|, the quantity scikit-learn's newton-cg stops on."""
    z_N = x_ND @ w_D + b
    r_N = 0.5 * (1.0 + np.tanh(0.5 * z_N)) - y_N  # sigmoid(z) - y, without overflow
    g_D = x_ND.T @ r_N / len(y_N) + 2 * lam * w_D
    return float(max(np.max(np.abs(g_D)), abs(np.mean(r_N))))


def run_path(x_ND, y_N, lambdas, solver: str, tol: float, max_iter: int):
    """One warm-started path; returns (seconds, per-lambda results)."""
    n = len(y_N)
    clf = LogisticRegression(C=1.0, solver=solver, tol=tol, max_iter=max_iter, warm_start=True)
    fits, warned = [], []
    t0 = time.perf_counter()
    for lam in lambdas:
        clf.set_params(C=1.0 / (2.0 * lam * n))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x_ND, y_N)
        warned.append(any(issubclass(c.category, ConvergenceWarning) for c in caught))
        fits.append((clf.coef_[0].copy(), float(clf.intercept_[0]), int(np.max(clf.n_iter_))))
    seconds = time.perf_counter() - t0
    out = []
    for lam, (w, b, its), warn in zip(lambdas, fits, warned, strict=True):
        out.append(
            dict(
                l2=lam,
                objective=objective(w, b, x_ND, y_N, lam),
                grad_max_abs=gradient_max_abs(w, b, x_ND, y_N, lam),
                iterations=its,
                convergence_warning=warn,
            )
        )
    return seconds, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--l2", required=True, help="comma-separated lambdas, in path order")
    ap.add_argument("--solver", default="newton-cg")
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--max_iter", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--jaxlr_metrics", default=None, help="a regularization_path metrics.json")
    args = ap.parse_args(argv)
    lambdas = [float(v) for v in args.l2.split(",")]
    x_ND, y_N = load_9_vs_4(args.data_dir)
    times, results = [], None
    for _ in range(args.repeats):
        seconds, results = run_path(x_ND, y_N, lambdas, args.solver, args.tol, args.max_iter)
        times.append(seconds)
    agreement = None
    if args.jaxlr_metrics:
        jm = json.loads(Path(args.jaxlr_metrics).read_text())
        agreement = []
        for r in results:
            e = jm.get(f"lambda={r['l2']:g}")
            if e is None:
                continue
            rel = (e["objective"] - r["objective"]) / r["objective"]
            agreement.append(
                dict(l2=r["l2"], jaxlr=e["objective"], sklearn=r["objective"], rel=rel)
            )
            print(f"lambda {r['l2']:g}: jaxlr {e['objective']:.15g}, scikit-learn "
                  f"{r['objective']:.15g}, relative difference {rel:.2e}")  # fmt: skip
    print(
        json.dumps(
            dict(
                agreement=agreement,
                solver=args.solver,
                tol=args.tol,
                num_train=len(y_N),
                seconds=min(times),
                seconds_all=times,
                path=results,
                sklearn=sklearn.__version__,
                scipy=scipy.__version__,
                numpy=np.__version__,
            )
        )
    )


if __name__ == "__main__":
    main()
