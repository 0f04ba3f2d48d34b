"""The 256-point lambda x learning-rate grid of the Task-2 protocol, side by side, whole processes.

The grid: 16 learning rates log-spaced over [1e-3, 1] x 16 L2 lambdas (0 and 15 log-spaced
over [1e-4, 1e-2]), logistic regression 2 vs 3 with the `tdt4265_task2` protocol (50 epochs,
batch 128, five checks an epoch on the validation set and the whole training set), one seed.
Sides, each a fresh process timed from its start to its exit (what a user waits for):

  * `jaxlr`: the launcher as a user types it, defaults included (TensorBoard, the exact
    optimum beside every point, every output written):
    `python -m experiments.main --experiment=sweep --model=logistic --lr=<16> --l2=<16>`;
    twice per round in one compilation-cache folder made for the round: `cold` (empty
    cache: every program compiles) then `warm` (a repeated sweep);
  * `jaxlr_bare`: the same with `--notensorboard --nooptimum` (warm cache): the sweep and
    its table, figures and histories;
  * `numpy`: 256 sequential runs of the plain NumPy baseline (`benchmarks/numpy_baseline.py`,
    float32, same protocol and grid) in one process without JAX, with the default BLAS
    threads and with one (`OPENBLAS_NUM_THREADS=1`); the faster is the reference (on a
    shared machine a two-thread BLAS can spin-wait for a descheduled thread);
  * `plain`: the same 256 points as a plain `jit(vmap(engine.run))` of the same engine with
    no groups (`make_engine(group=None)`: XLA sees one [G, D] batch), 50 epochs in one
    compiled call, then the final evaluation: no host loop, no files;
  * the FLOP floor: the matrix products' floating-point work of the 256 points (forward and
    weight gradient of every step, the validation- and training-set products of every
    check, the final evaluation; `bench_sweep.sweep_flops`) at the best float32 matmul rate
    measured through JAX (square products, in its own process, every round).

Rounds are interleaved (every side once per round), each time is the best of `--repeats`
rounds. Targets (issue 29): `jaxlr` end to end >= 3x the NumPy loop; the training part (the
sweep's `wall_seconds` in metrics.json: the compiled chunks and the host loop between
them) within 2x of the floor.

    python -m benchmarks.bench_grid --data_dir=../shared/data [--repeats=2]
        [--sides=jaxlr,jaxlr_bare,numpy,plain] [--out=grid.json]

Dimension legend: S grid points, N training and V validation examples, D features.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

S_LR, S_L2 = 16, 16
EPOCHS = 50


def grid_values() -> tuple[list[float], list[float]]:
    """The 16 learning rates and 16 lambdas of the grid (as the command line spells them)."""
    lrs = [float(f"{v:.4g}") for v in np.logspace(-3, 0, S_LR)]
    l2s = [0.0] + [float(f"{v:.4g}") for v in np.logspace(-4, -2, S_L2 - 1)]
    return lrs, l2s


def launcher_command(workdir: str, data_dir: str, bare: bool) -> list[str]:
    lrs, l2s = grid_values()
    cmd = [sys.executable, "-m", "experiments.main", "--experiment=sweep", "--model=logistic"]
    cmd += [f"--lr={','.join(map(str, lrs))}", f"--l2={','.join(map(str, l2s))}"]
    cmd += [f"--workdir={workdir}", f"--data_dir={data_dir}"]
    return cmd + (["--notensorboard", "--nooptimum"] if bare else [])


def _timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return wall, proc


def _result(proc: subprocess.CompletedProcess) -> dict:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process).


def numpy_worker(data_dir: str) -> dict:
    """256 sequential NumPy runs of the grid (no JAX in this process)."""
    from benchmarks import numpy_baseline as nb

    t0 = time.perf_counter()
    mnist = nb.load_mnist(os.path.join(data_dir, "mnist"))
    xtr, ytr, xva, yva = nb.tdt4265_data(mnist, (2, 3), dtype=np.float32)
    lrs, l2s = grid_values()
    t_train = time.perf_counter()
    first = None
    for lr in lrs:
        for l2 in l2s:
            out = nb.train("logistic", xtr, ytr, xva, yva, learning_rate=lr, num_epochs=EPOCHS,
                           batch_size=128, l2=l2)  # fmt: skip
            if first is None:
                first = out
    return {
        "load_s": t_train - t0,
        "train_s": time.perf_counter() - t_train,
        "first_val_loss": float(first["final_val_loss"]),
        "first_val_accuracy": float(first["final_val_accuracy"]),
    }


def plain_worker(data_dir: str) -> dict:
    """The grid as one plain `jit(vmap(engine.run))` call (no groups, no host loop)."""
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    from jaxlr.data.config import DataConfig
    from jaxlr.data.splits import load_splits
    from jaxlr.engine.config import TrainConfig, make_hparams
    from jaxlr.engine.train import make_engine, model_for

    data = load_splits(DataConfig(digits=(2, 3), data_dir=data_dir)).data
    cfg = TrainConfig(model="logistic", num_epochs=EPOCHS)
    model = model_for(cfg, data.x_train.shape[1], jnp.float32)
    engine = make_engine(cfg, model, data.x_train.shape[0], group=None)
    lrs, l2s = grid_values()
    lr_S = np.repeat(np.asarray(lrs, np.float32), len(l2s))
    l2_S = np.tile(np.asarray(l2s, np.float32), len(lrs))
    hp = make_hparams(lr_S, l2=l2_S, momentum=np.zeros_like(lr_S), seed=0, dtype=jnp.float32)
    hp = hp._replace(seed=jnp.asarray(0, jnp.int32))  # one seed: the data order is shared
    axes = type(hp)(0, 0, 0, None)
    dev = type(data)(*(jnp.asarray(a) for a in data))

    def train(hp, d):
        state = jax.vmap(engine.init, in_axes=(axes,))(hp)
        state, logs = jax.vmap(lambda s, h: engine.run(s, h, d, 0, EPOCHS), in_axes=(0, axes))(
            state, hp
        )
        params = state.params
        final = jax.vmap(lambda p, h: engine.evaluate(p, h, d), in_axes=(0, axes))(params, hp)
        return final, logs

    run = jax.jit(train)
    t_compile = time.perf_counter()
    compiled = run.lower(hp, dev).compile()
    t_train = time.perf_counter()
    final, logs = jax.block_until_ready(compiled(hp, dev))
    t_end = time.perf_counter()
    return {
        "load_s": t_compile - t0,
        "compile_s": t_train - t_compile,
        "train_s": t_end - t_train,
        "first_val_loss": float(final["val_loss"][0]),
        "first_val_accuracy": float(final["val_accuracy"][0]),
    }


def floor_worker(data_dir: str) -> dict:
    """The grid's matrix-product FLOPs and the best matmul rate through JAX, in this process."""
    import jax.numpy as jnp

    from benchmarks.bench_sweep import peak_matmul_flops, sweep_flops
    from jaxlr.data.config import DataConfig
    from jaxlr.data.splits import load_splits
    from jaxlr.engine.config import TrainConfig

    data = load_splits(DataConfig(digits=(2, 3), data_dir=data_dir)).data
    n, d = data.x_train.shape
    cfg = TrainConfig(model="logistic", num_epochs=EPOCHS)
    flops = S_LR * S_L2 * sweep_flops(cfg, n, data.x_val.shape[0], d)
    del jnp
    return {"flops": flops, "peak_flops": peak_matmul_flops(), "num_train": n,
            "num_val": int(data.x_val.shape[0])}  # fmt: skip


# ---------------------------------------------------------------------------------------------


def _worker_cmd(kind: str, data_dir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.bench_grid",
        f"--worker={kind}",
        f"--data_dir={data_dir}",
    ]


def one_round(args, sides: list[str]) -> dict:
    out: dict = {}
    base_env = dict(os.environ, MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory(prefix="bench_grid_") as tmp:
        cache_env = dict(base_env, XDG_CACHE_HOME=os.path.join(tmp, "xdg"))
        if "jaxlr" in sides:
            for kind in ("cold", "warm"):
                wd = os.path.join(tmp, f"sweep_{kind}")
                wall, _ = _timed(launcher_command(wd, args.data_dir, False), cache_env)
                with open(os.path.join(wd, "metrics.json")) as f:
                    m = json.load(f)
                out[f"jaxlr_{kind}"] = {
                    "process_s": wall,
                    "train_s": m["wall_seconds"],
                    "best_val_loss": m["best_by_val_loss"]["val_loss"],
                }
        if "jaxlr_bare" in sides:
            wd = os.path.join(tmp, "sweep_bare")
            if "jaxlr" not in sides:  # warm the cache first
                _timed(launcher_command(wd + "0", args.data_dir, True), cache_env)
            wall, _ = _timed(launcher_command(wd, args.data_dir, True), cache_env)
            with open(os.path.join(wd, "metrics.json")) as f:
                m = json.load(f)
            out["jaxlr_bare"] = {"process_s": wall, "train_s": m["wall_seconds"]}
        if "numpy" in sides:
            for name, threads in (("numpy", None), ("numpy_1thread", "1")):
                env = dict(base_env)
                if threads:
                    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                        env[var] = threads
                wall, proc = _timed(_worker_cmd("numpy", args.data_dir), env)
                out[name] = {"process_s": wall, **_result(proc)}
        if "plain" in sides:
            wall, proc = _timed(_worker_cmd("plain", args.data_dir), cache_env)
            out["plain"] = {"process_s": wall, **_result(proc)}
        wall, proc = _timed(_worker_cmd("floor", args.data_dir), base_env)
        out["floor"] = _result(proc)
    return out


def best_of(rounds: list[dict]) -> dict:
    best: dict = {}
    for r in rounds:
        for side, row in r.items():
            key = "peak_flops" if side == "floor" else "process_s"
            cur = best.get(side)
            if cur is None or (row[key] > cur[key] if side == "floor" else row[key] < cur[key]):
                best[side] = row
    return best


def report(best: dict, rounds: list[dict]) -> list[str]:
    fl = best["floor"]
    floor_s = fl["flops"] / fl["peak_flops"]
    lines = [
        f"Grid: {S_LR * S_L2} points, N={fl['num_train']} training / V={fl['num_val']} "
        f"validation examples, {EPOCHS} epochs; {fl['flops'] / 1e9:.0f} GFLOP of products; "
        f"peak {fl['peak_flops'] / 1e9:.0f} GFLOP/s; floor {floor_s:.2f} s.",
        "",
        "| side | whole process (s), best | rounds (s) | training part (s) | x floor (training) |",
        "|---|---:|---|---:|---:|",
    ]
    for side in ("jaxlr_cold", "jaxlr_warm", "jaxlr_bare", "plain", "numpy", "numpy_1thread"):
        if side not in best:
            continue
        row = best[side]
        each = " / ".join(f"{r[side]['process_s']:.1f}" for r in rounds if side in r)
        train = row.get("train_s")
        lines.append(
            f"| {side} | {row['process_s']:.2f} | {each} | {train:.2f} | {train / floor_s:.2f} |"
        )
    if any(k.startswith("numpy") for k in best):
        ref = min(best[k]["process_s"] for k in best if k.startswith("numpy"))
        lines.append("")
        for side in ("jaxlr_cold", "jaxlr_warm", "jaxlr_bare", "plain"):
            if side in best:
                lines.append(
                    f"- {side}: {ref / best[side]['process_s']:.2f}x the faster NumPy loop "
                    "end to end (target for jaxlr >= 3x)"
                )
    for side in ("jaxlr_warm", "jaxlr_cold"):
        if side in best:
            lines.append(
                f"- {side} training part: {best[side]['train_s'] / floor_s:.2f}x the floor "
                "(target <= 2x)"
            )
    if "plain" in best and "numpy" in best:
        lines.append(
            "- sanity, point 0 (lr 0.001, lambda 0): val loss plain "
            f"{best['plain']['first_val_loss']:.6f} vs NumPy {best['numpy']['first_val_loss']:.6f}"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", ""))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sides", default="jaxlr,jaxlr_bare,numpy,plain")
    parser.add_argument("--out", default="")
    parser.add_argument("--report", default="", help="print the table of a saved --out file")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            rounds = json.load(f)["rounds"]
        print("\n".join(report(best_of(rounds), rounds)))
        return 0
    if not args.data_dir:
        parser.error("--data_dir (or JAXLR_DATA_DIR) is needed: the folder holding mnist/")
    args.data_dir = os.path.abspath(args.data_dir)
    if args.worker:
        fn = {"numpy": numpy_worker, "plain": plain_worker, "floor": floor_worker}[args.worker]
        print("RESULT" + json.dumps(fn(args.data_dir)), flush=True)
        return 0
    sides = args.sides.split(",")
    rounds = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        rounds.append(one_round(args, sides))
        print(f"round {i + 1}/{args.repeats} in {time.perf_counter() - t0:.0f} s: "
              + json.dumps({k: round(v.get("process_s", 0), 2) for k, v in rounds[-1].items()}),
              file=sys.stderr, flush=True)  # fmt: skip
    if args.out:  # first: a failing report loses no measurement
        from jaxlr.host.io import atomic_write_json

        atomic_write_json(args.out, {"rounds": rounds})
    print("\n".join(report(best_of(rounds), rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
