"""Times vmapped sweeps of K grid points against K sequential runs (jaxlr and plain NumPy).

For K in {1, 4, 16, 64, 256} points of the `tdt4265_task2` protocol (logistic regression,
2 vs 3, 50 epochs, no shuffling) and of `tdt4265_task3` (softmax, ten digits, shuffling; a few
epochs, `--task3_epochs`), every point a different learning rate and L2 lambda, one seed:

  * sweep first call: `jaxlr.engine.sweep.run_sweep` with empty compilation caches (compilation,
    training, evaluation and the per-point histories: what a user waits for);
  * sweep steady state: `run_sweep` on a new grid of the same size (no recompilation),
    every K of a task timed in interleaved rounds in one process (`steady_worker`: the same
    load from other processes for every K, so the time per point compares across K), the
    best of `--repeats` rounds; "train" is the training loop alone
    (`SweepResult.wall_seconds`);
  * K sequential `jaxlr.engine.train.fit` runs (each call compiles: `fit` builds its jitted
    functions per call) and K sequential runs of the engine compiled once
    (`jit(engine.run)` on the whole run, called once per point);
  * K sequential runs of the plain NumPy baseline (`benchmarks/numpy_baseline.py`, float32
    like jaxlr), with the default BLAS threads and with one (`OPENBLAS_NUM_THREADS=1`); the
    faster counts ("(1 thr)" in the table): on a machine shared with other processes a
    two-thread BLAS spin-waits for a descheduled thread and can be ten times slower;
  * the floor: the matrix-product FLOPs of the sweep (forward and weight gradient of every
    step, the validation and training-set forward passes of every check, the final
    evaluation; element-wise work ignored) divided by the peak float32 matmul rate measured
    through JAX (the best of large square products);
  * peak memory: the resident-set high-water mark (`getrusage` maxrss) of the worker process
    after the sweeps, and before them (data and JAX runtime only).

Every time is the fastest of its repetitions (the sweep's steady state: `--repeats` new
grids; a sequential loop: the fastest run times K), the number least disturbed by other
processes on a shared machine. Sequential loops longer than `--max_seq_seconds` are
measured on fewer runs and extrapolated linearly (the runs cost the same); such numbers are
marked `*`. The floor uses the best peak; the "in-situ floor" uses the matmul rate sustained
between the interleaved rounds, i.e. under the same load from other processes.
Every (task, K) runs in fresh worker processes (one with JAX, one for NumPy without JAX, so
that no JAX thread pool competes with NumPy), so that the memory high-water marks and the
compilation caches are their own. A sanity check compares the sweep's first point with the
NumPy baseline's run of the same hyper-parameters (same batch order).

    python -m benchmarks.bench_sweep --data_dir=../shared/data [--ks=1,4,16,64,256]
        [--tasks=task2,task3] [--task3_epochs=3] [--repeats=3] [--out=sweep_bench.json]

The rows of sweeps that scale (early stopping with compaction vs early stopping off, the
256-point grid, successive halving vs unpruned random search; whole processes side by side):

    python -m benchmarks.bench_sweep --data_dir=../shared/data --scale=grid64,grid256,halving

Dimension legend: K (= S) grid points, N training and V validation examples, D features,
C classes (1 output for logistic regression), T steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

TASKS = {"task2": "tdt4265_task2", "task3": "tdt4265_task3"}
DEFAULT_KS = (1, 4, 16, 64, 256)


def _maxrss_mib() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_matmul_flops(sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
    """Best float32 FLOP/s of square matrix products through `jax.jit(jnp.dot)`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    best = 0.0
    f = jax.jit(jnp.dot)
    for n in sizes:
        a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
        f(a, a).block_until_ready()
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, a).block_until_ready()
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    return best


def sustained_matmul_flops(seconds: float = 2.0, n: int = 2048) -> float:
    """Float32 FLOP/s of back-to-back square products over `seconds` (the machine as it is
    now, other processes included)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    f = jax.jit(jnp.dot)
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f(a, a).block_until_ready()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f(a, a).block_until_ready()
        count += 1
    return 2.0 * n**3 * count / (time.perf_counter() - t0)


def sweep_flops(tcfg, num_train: int, num_val: int, num_features: int) -> float:
    """Matrix-product FLOPs of one point of a linear model's full run (see module doc)."""
    from jaxlr.engine.step import schedule_numbers

    k = 1 if tcfg.model == "logistic" else tcfg.num_classes
    m, e, steps = schedule_numbers(tcfg, num_train)
    checks = -(-steps // e)
    n_eval = min(tcfg.train_eval_size or num_train, num_train)
    per_step = 2 * 2 * tcfg.batch_size * num_features * k
    per_check = 2 * (num_val + n_eval) * num_features * k
    final = 2 * (num_train + num_val) * num_features * k
    return float(steps * per_step + checks * per_check + final)


def grid_points(k: int, task: str, offset: float = 0.0) -> list[dict]:
    """K points: learning rates spread log-evenly around the protocol's, four lambdas."""
    import numpy as np

    lo, hi = (0.005, 0.5) if task == "task2" else (0.001, 0.1)
    lrs = np.geomspace(lo, hi, k) if k > 1 else np.asarray([0.05 if task == "task2" else 0.01])
    l2s = (0.0, 1e-4, 1e-3, 1e-2)
    return [
        dict(learning_rate=float(lr) * (1.0 + offset), l2=l2s[i % 4], seed=0)
        for i, lr in enumerate(lrs)
    ]


def _timed_loop(fn, k: int, budget_s: float, min_runs: int = 3) -> tuple[float, int]:
    """Seconds per run of fn(i), i = 0, 1, ..., k - 1 (cycled), for the loop of k runs.

    Runs until `budget_s` is spent and at least `min_runs` runs were timed (points cycle when
    k < min_runs), at most k runs otherwise.

    Returns:
      (fastest run's seconds, number of distinct points run): the least disturbed by other
      processes on a shared machine (the runs of one loop cost the same).
    """
    times = []
    i = 0
    while True:
        t0 = time.perf_counter()
        fn(i % k)
        times.append(time.perf_counter() - t0)
        i += 1
        if len(times) >= min_runs and (i >= k or sum(times) >= budget_s):
            break
    return min(times), min(i, k)


def worker(task: str, k: int, args) -> dict:
    """One (task, K) measurement in this process; returns the numbers as a dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments import registry  # noqa: F401  (registers the experiments)
    from experiments.config import make_config
    from jaxlr.data.splits import load_splits
    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import sweep as jsweep
    from jaxlr.engine.batches import epoch_batches
    from jaxlr.engine.config import make_hparams
    from jaxlr.engine.step import keys_for
    from jaxlr.engine.train import fit, make_engine

    overrides = {"data_dir": args.data_dir, "dtype": "float32"}
    if task == "task3":
        overrides["num_epochs"] = args.task3_epochs
    cfg = make_config(TASKS[task], overrides)
    data = load_splits(cfg.data).data
    tcfg = cfg.train
    n, d = data.x_train.shape
    v = data.x_val.shape[0]
    jnp.zeros(()).block_until_ready()  # start the runtime before the baseline memory
    rss_before = _maxrss_mib()
    quiet = lambda msg: None  # noqa: E731
    out = {"task": task, "K": k, "num_train": n, "num_val": v, "epochs": tcfg.num_epochs}

    # Sweep: first call with empty caches, then new grids of the same size.
    jax.clear_caches()
    jsweep.sweep_functions.cache_clear()
    jsweep.default_model.cache_clear()
    grid_a = jgrid.grid_from_points(grid_points(k, task), dtype=np.float32)
    t0 = time.perf_counter()
    res = jsweep.run_sweep(tcfg, grid_a, data, log_fn=quiet)
    out["sweep_first_s"] = time.perf_counter() - t0
    steady, train = [], []
    for r in range(args.repeats):
        grid_b = jgrid.grid_from_points(grid_points(k, task, 0.01 * (r + 1)), dtype=np.float32)
        t0 = time.perf_counter()
        res_b = jsweep.run_sweep(tcfg, grid_b, data, log_fn=quiet)
        steady.append(time.perf_counter() - t0)
        train.append(res_b.wall_seconds)
    out["sweep_steady_s"] = min(steady)
    out["sweep_train_s"] = min(train)
    out["rss_before_mib"] = rss_before
    out["rss_peak_mib"] = _maxrss_mib()
    # Matmul rates right after the sweeps (after the memory reading: they allocate too).
    out["sustained_flops"] = sustained_matmul_flops()
    out["peak_flops"] = peak_matmul_flops()
    out["diverged"] = int(res.diverged.sum())

    # The first point's numbers and batch order, for the NumPy worker's sanity check.
    out["check_val_accuracy_sweep"] = float(res.metrics["val_accuracy"][0])
    out["check_val_loss_sweep"] = float(res.metrics["val_loss"][0])
    if tcfg.shuffle and args.orders_file:
        _, data_key = keys_for(grid_a.point(0)["seed"])
        orders = []
        for epoch in range(tcfg.num_epochs):
            idx, _ = epoch_batches(
                jax.random.fold_in(data_key, epoch), n, tcfg.batch_size, shuffle=True
            )
            orders.append(np.asarray(idx).reshape(-1))
        np.save(args.orders_file, np.stack(orders))

    # K sequential fits (each compiles) and K runs of one compiled engine.
    def fit_run(i: int):
        p = grid_a.point(i)
        hp = make_hparams(p["learning_rate"], p["l2"], seed=p["seed"], dtype=jnp.float32)
        fit(tcfg, hp, data, log_fn=quiet)

    per, runs = _timed_loop(fit_run, k, args.max_seq_seconds)
    out.update(fit_per_run_s=per, fit_runs=runs, fit_loop_s=per * k)

    model = jsweep.default_model(tcfg, d, np.dtype(np.float32))
    engine = make_engine(tcfg, model, n)
    jdata = type(data)(*(jnp.asarray(a) for a in data))
    hp0 = make_hparams(0.01, 0.0, dtype=jnp.float32)
    t0 = time.perf_counter()
    run_c = (
        jax.jit(engine.run, static_argnums=4)
        .lower(engine.init(hp0), hp0, jdata, 0, tcfg.num_epochs)
        .compile()
    )
    out["engine_compile_s"] = time.perf_counter() - t0

    def engine_run(i: int):
        p = grid_a.point(i)
        hp = make_hparams(p["learning_rate"], p["l2"], seed=p["seed"], dtype=jnp.float32)
        jax.block_until_ready(run_c(engine.init(hp), hp, jdata, 0))

    per, runs = _timed_loop(engine_run, k, args.max_seq_seconds)
    out.update(engine_per_run_s=per, engine_runs=runs, engine_loop_s=per * k)

    out["flops"] = sweep_flops(tcfg, n, v, d) * k
    return out


def steady_worker(task: str, ks: list[int], args) -> dict:
    """Steady-state sweeps of every K, timed in interleaved rounds (the best of each K).

    Interleaving puts every K under the same load from other processes, so the time per
    point can be compared across K; separate processes at separate times cannot.
    """
    import numpy as np

    from experiments import registry  # noqa: F401  (registers the experiments)
    from experiments.config import make_config
    from jaxlr.data.splits import load_splits
    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import sweep as jsweep

    overrides = {"data_dir": args.data_dir, "dtype": "float32"}
    if task == "task3":
        overrides["num_epochs"] = args.task3_epochs
    cfg = make_config(TASKS[task], overrides)
    data = load_splits(cfg.data).data
    tcfg = cfg.train
    quiet = lambda msg: None  # noqa: E731

    def grid(k: int, offset: float):
        return jgrid.grid_from_points(grid_points(k, task, offset), dtype=np.float32)

    for k in ks:
        jsweep.run_sweep(tcfg, grid(k, 0.0), data, log_fn=quiet)  # compile
    best = {k: (float("inf"), float("inf")) for k in ks}
    rates = []
    for r in range(args.repeats):
        for k in ks:
            t0 = time.perf_counter()
            res = jsweep.run_sweep(tcfg, grid(k, 0.01 * (r + 1)), data, log_fn=quiet)
            wall = time.perf_counter() - t0
            best[k] = min(best[k], (wall, res.wall_seconds))
        rates.append(sustained_matmul_flops(1.0))
    return {
        "steady": {str(k): {"wall": w, "train": t} for k, (w, t) in best.items()},
        "sustained_flops": float(np.mean(rates)),
    }


def numpy_worker(task: str, k: int, args) -> dict:
    """K sequential NumPy-baseline runs in a process without JAX (no thread pool to share)."""
    import numpy as np

    from benchmarks import numpy_baseline as nb

    proto = dict(nb.PROTOCOLS[task])
    epochs = args.task3_epochs if task == "task3" else proto["num_epochs"]
    mnist = nb.load_mnist(os.path.join(args.data_dir, "mnist"))
    xtr, ytr, xva, yva = nb.tdt4265_data(mnist, proto["digits"], dtype=np.float32)
    points = grid_points(k, task)

    def run(i: int, orders=None):
        p = points[i]
        return nb.train(
            proto["model"],
            xtr,
            ytr,
            xva,
            yva,
            learning_rate=p["learning_rate"],
            num_epochs=epochs,
            batch_size=128,
            l2=p["l2"],
            shuffle=proto["shuffle"],
            seed=i,
            orders=orders,
        )

    orders = None
    if proto["shuffle"] and args.orders_file and os.path.exists(args.orders_file):
        orders = list(np.load(args.orders_file))
    ref = run(0, orders)
    per, runs = _timed_loop(run, k, args.max_seq_seconds)
    return {
        "numpy_per_run_s": per,
        "numpy_runs": runs,
        "numpy_loop_s": per * k,
        "check_val_accuracy_numpy": float(ref["final_val_accuracy"]),
        "check_val_loss_numpy": float(ref["final_val_loss"]),
        "numpy_rss_peak_mib": _maxrss_mib(),
    }


def _fmt_s(x: float, extrapolated: bool = False) -> str:
    s = f"{x:.3g}" if x < 100 else f"{x:.0f}"
    return s + ("*" if extrapolated else "")


def table(rows: list[dict], peak: float) -> str:
    """Markdown table of the measurements of one task."""
    head = (
        "| K | sweep first (s) | sweep steady (s) | train loop (s) | per point (ms) | "
        "K fits (s) | K engine runs (s) | K NumPy runs (s) | NumPy / sweep | floor (s) | "
        "steady / floor | steady / in-situ floor | peak RSS (MiB) |\n|" + "---:|" * 13
    )
    lines = [head]
    for r in rows:
        floor = r["flops"] / peak
        lines.append(
            f"| {r['K']} | {_fmt_s(r['sweep_first_s'])} | {_fmt_s(r['sweep_steady_s'])} | "
            f"{_fmt_s(r['sweep_train_s'])} | {1e3 * r['sweep_steady_s'] / r['K']:.1f} | "
            f"{_fmt_s(r['fit_loop_s'], r['fit_runs'] < r['K'])} | "
            f"{_fmt_s(r['engine_loop_s'], r['engine_runs'] < r['K'])} | "
            f"{_fmt_s(r['numpy_loop_s'], r['numpy_runs'] < r['K'])}"
            f"{'' if r['numpy_blas_threads'] == 'default' else ' (1 thr)'} | "
            f"{r['numpy_loop_s'] / r['sweep_steady_s']:.1f}x | {_fmt_s(floor)} | "
            f"{r['sweep_steady_s'] / floor:.2f}x | "
            f"{r['sweep_steady_s'] * r['sustained_flops'] / r['flops']:.2f}x | "
            f"{r['rss_peak_mib']:.0f} "
            f"({r['rss_before_mib']:.0f} before) |"
        )
    return "\n".join(lines)


def targets(rows_by_task: dict, peak: float) -> list[str]:
    """The issue's targets, each with its verdict."""
    lines = []
    for task, rows in rows_by_task.items():
        by_k = {r["K"]: r for r in rows}
        if 64 in by_k:
            r = by_k[64]
            ratio = r["numpy_loop_s"] / r["sweep_steady_s"]
            lines.append(
                f"{task}: K=64 steady sweep {ratio:.1f}x faster than the NumPy loop "
                f"(target >= 5x): {'MET' if ratio >= 5 else 'MISSED'}"
            )
        if 256 in by_k:
            r = by_k[256]
            ratio = r["sweep_steady_s"] / (r["flops"] / peak)
            lines.append(
                f"{task}: K=256 steady sweep {ratio:.2f}x the floor (target <= 2.5x): "
                f"{'MET' if ratio <= 2.5 else 'MISSED'}"
            )
        ks = sorted(by_k)
        per = [by_k[k]["sweep_steady_s"] / k for k in ks]
        falling = all(b < a for a, b in zip(per, per[1:], strict=False))
        lines.append(
            f"{task}: steady time per point (ms) "
            + ", ".join(f"K={k}: {1e3 * p:.1f}" for k, p in zip(ks, per, strict=True))
            + f" -- falls at every step: {'MET' if falling else 'MISSED'}"
        )
    return lines


def _run_worker(
    kind: str, task: str, k, args, orders_file: str = "", blas_threads: int | None = None
) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_sweep", f"--worker={kind}:{task}:{k}"]
    cmd += [f"--data_dir={args.data_dir}", f"--task3_epochs={args.task3_epochs}"]
    cmd += [f"--repeats={args.repeats}", f"--max_seq_seconds={args.max_seq_seconds}"]
    cmd += [f"--orders_file={orders_file}"]
    env = dict(os.environ)
    if blas_threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(blas_threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind}:{task}:{k} failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR"))
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)))
    parser.add_argument("--tasks", default="task2,task3")
    parser.add_argument("--task3_epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_seq_seconds", type=float, default=8.0)
    parser.add_argument("--out", default="")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--orders_file", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--scale",
        default="",
        help="instead: the early-stopping / halving rows of benchmarks/bench_sweep_scale.py "
        "for these pairs (grid64,grid256,halving)",
    )
    args = parser.parse_args()
    if args.scale:
        from benchmarks import bench_sweep_scale

        extra = [f"--out={args.out}"] if args.out else []
        return bench_sweep_scale.main(
            [f"--data_dir={args.data_dir}", f"--pairs={args.scale}", f"--repeats={args.repeats}"]
            + extra
        )
    if args.worker:
        kind, task, k = args.worker.split(":")
        if kind == "steady":
            result = steady_worker(task, [int(x) for x in k.split(",")], args)
        else:
            result = (worker if kind == "jax" else numpy_worker)(task, int(k), args)
        print("RESULT" + json.dumps(result), flush=True)
        return 0

    import jax

    peak_before = peak_matmul_flops()
    print(
        f"# jaxlr sweep benchmark\n\n{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, backend {jax.default_backend()}; "
        f"peak float32 matmul through JAX {peak_before / 1e9:.1f} GFLOP/s.",
        flush=True,
    )
    rows_by_task: dict[str, list] = {}
    ks = [int(x) for x in args.ks.split(",")]
    for task in args.tasks.split(","):
        rows_by_task[task] = []
        for k in ks:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                row = {}
                orders = os.path.join(tmp, "o.npy")
                row.update(_run_worker("jax", task, k, args, orders))
                # NumPy with its default BLAS threads and with one thread: a multi-threaded
                # BLAS on a machine shared with other processes can be ten times slower.
                # The faster counts.
                np_rows = [
                    _run_worker("numpy", task, k, args, orders, blas_threads=t) for t in (None, 1)
                ]
                best = min(np_rows, key=lambda r: r["numpy_per_run_s"])
                best["numpy_blas_threads"] = "default" if best is np_rows[0] else "1"
                best["numpy_loop_s_other"] = [r["numpy_loop_s"] for r in np_rows]
                row.update(best)
            rows_by_task[task].append(row)
            print(
                f"{task} K={k}: steady {row['sweep_steady_s']:.2f} s, NumPy loop "
                f"{row['numpy_loop_s']:.1f} s ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    for task, rows in rows_by_task.items():
        # Steady states again, all K interleaved in one process (see `steady_worker`).
        st = _run_worker("steady", task, ",".join(map(str, ks)), args)
        for row in rows:
            row["sweep_steady_isolated_s"] = row["sweep_steady_s"]
            row["sweep_steady_s"] = st["steady"][str(row["K"])]["wall"]
            row["sweep_train_s"] = st["steady"][str(row["K"])]["train"]
            row["sustained_flops"] = st["sustained_flops"]
    peak = max(
        [peak_before, peak_matmul_flops()]
        + [r["peak_flops"] for rs in rows_by_task.values() for r in rs]
    )
    print(
        f"\nFloor at {peak / 1e9:.1f} GFLOP/s: the best float32 matmul rate measured through JAX "
        "(square products of 1024 to 3072, before, after and inside every worker)."
    )
    for task, rows in rows_by_task.items():
        r0 = rows[0]
        print(
            f"\n## {task} ({TASKS[task]}): {r0['num_train']} training / {r0['num_val']} "
            f"validation examples, {r0['epochs']} epochs\n"
        )
        print(table(rows, peak) + "\n")
        for chk in rows:
            rel = abs(chk["check_val_loss_sweep"] - chk["check_val_loss_numpy"]) / abs(
                chk["check_val_loss_numpy"]
            )
            print(
                f"- sanity, K={chk['K']}, point 0: val accuracy sweep "
                f"{chk['check_val_accuracy_sweep']:.4f} vs NumPy "
                f"{chk['check_val_accuracy_numpy']:.4f}, val loss relative difference {rel:.1e}."
            )
    print("\n`*`: measured on fewer runs and extrapolated linearly to K runs.\n")
    for line in targets(rows_by_task, peak):
        print("- " + line)
    if args.out:
        from jaxlr.host.io import atomic_write_json

        atomic_write_json(args.out, {"peak_flops": peak, "rows": rows_by_task})
    return 0


if __name__ == "__main__":
    sys.exit(main())
