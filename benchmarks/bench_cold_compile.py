"""First runs and repeats: the 64-point early-stopping grid against the same grid without early
stopping, as whole processes through the launcher, JAX's compilation cache empty and filled.

The grid: `python -m experiments.main --experiment=sweep` with the `tdt4265_task2` protocol
(logistic regression 2 vs 3, batch 128, no shuffling, float32, one seed), 16 learning rates
log-spaced over [1e-3, 1] x L2 (0, 1e-4, 1e-3, 1e-2), up to 500 epochs, `--nooptimum`:

  * es: `--early_stopping --patience=10`;
  * off: `--noearly_stopping`.

Each round gives every case a fresh cache folder (`XDG_CACHE_HOME` of its own: the launcher
keeps JAX's persistent compilation cache under `$XDG_CACHE_HOME/jaxlr/xla`), runs it there
once (cold: every program compiles) and once more (warm: the programs come from the cache),
cases in alternating order from round to round. Whole-process wall time (import, data, compile,
training, histories, figures: what a user waits for), the children's CPU seconds and the
1-minute load are recorded; the ratios es / off of the same round and temperature are what
count on a shared machine.

    python -m benchmarks.bench_cold_compile --data_dir=../shared/data [--repeats=3]
        [--grid=64] [--extra=--block_size=64] [--tree=DIR] [--out=cold.json]

`--tree=DIR` launches the experiments from another checkout (e.g. `git archive COMMIT | tar -x
-C DIR`), to compare before and after.

Target (issue "Defaults that are fast and honest"): cold es <= 0.5 x cold off.

`--sizes=2,4,8,16,32,64` instead times, in this process, each block size's program of the
early-stopping grid alone: lowering and compiling (wall and CPU seconds), then one epoch
(median and best of `--epochs`, wall and CPU): where a smaller block stops being cheaper
(`jaxlr.engine.blocks.smallest_block`).

Dimension legend: S sweep points.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("es", "off")


def grid_flags(points: int) -> list[str]:
    """--lr/--l2 of the benchmark grid: 64 points (16 x 4) or 256 (16 x 16)."""
    lrs = np.geomspace(1e-3, 1.0, 16)
    if points == 64:
        l2s = [0.0, 1e-4, 1e-3, 1e-2]
    elif points == 256:
        l2s = [0.0, *np.geomspace(1e-4, 1e-2, 15)]
    else:
        raise ValueError(f"--grid must be 64 or 256, got {points}")
    return [
        "--lr=" + ",".join(f"{v:.6g}" for v in lrs),
        "--l2=" + ",".join(f"{v:.6g}" for v in l2s),
    ]


def command(case: str, workdir: Path, args) -> list[str]:
    stop = ["--early_stopping", "--patience=10"] if case == "es" else ["--noearly_stopping"]
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--experiment=sweep",
        f"--workdir={workdir}",
        f"--data_dir={args.data_dir}",
        *grid_flags(args.grid),
        "--num_epochs=500",
        *stop,
        "--nooptimum",
        *[a for a in args.extra.split() if a],
    ]


def run_one(cmd: list[str], cache: Path, tree: Path = REPO) -> dict:
    """Runs one launcher process with its own cache folder; wall, CPU, load, sweep seconds."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), MPLBACKEND="Agg", PYTHONPATH=str(tree))
    env.pop("JAXLR_COMPILATION_CACHE", None)
    load = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    workdir = Path(next(a for a in cmd if a.startswith("--workdir=")).split("=", 1)[1])
    metrics = json.loads((workdir / "metrics.json").read_text())
    return {
        "wall": wall,
        "cpu": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "load": load,
        "sweep_seconds": metrics["wall_seconds"],
        "point_steps": metrics["point_steps"],
        "best_val_loss": metrics["best_by_val_loss"]["val_loss"],
    }


def time_sizes(args) -> None:
    """Compile and per-epoch times of each block size of the early-stopping grid's program."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from benchmarks.bench_sweep_scale import load_task2
    from jaxlr.engine import sweep as jsweep
    from jaxlr.engine.config import HParams, TrainConfig
    from jaxlr.engine.step import Data

    data = load_task2(args.data_dir)
    cfg = TrainConfig(
        model="logistic",
        batch_size=128,
        num_epochs=500,
        shuffle=False,
        early_stopping=True,
        patience=10,
    )
    n, d = data.x_train.shape
    model = jsweep.default_model(cfg, d, np.dtype(np.float32))
    fns = jsweep.sweep_functions(cfg, model, n, tuple(jax.devices()), False)
    repl, sweep_sh = NamedSharding(fns.mesh, P()), NamedSharding(fns.mesh, P("sweep"))
    data_dev = Data(*(jsweep._put(np.asarray(a), repl) for a in data))
    print(f"load {os.getloadavg()[0]:.1f}; one epoch = {fns.engine.num_batches} steps")
    print("| block | lower s (CPU) | compile s (CPU) | epoch ms, median (best) | CPU ms / epoch |")
    print("|---:|---:|---:|---:|---:|")
    for g in (int(v) for v in args.sizes.split(",")):
        hp = HParams(
            np.full(g, 0.01, np.float32),
            np.zeros(g, np.float32),
            np.zeros(g, np.float32),
            np.arange(g, dtype=np.int32),
        )
        hp = HParams(*(jsweep._put(v, sweep_sh) for v in hp))
        state = fns.init(hp)
        t0, c0 = time.perf_counter(), time.process_time()
        lowered = fns.run.lower(state, hp, data_dev, 0, 1)
        t1, c1 = time.perf_counter(), time.process_time()
        program = lowered.compile()
        t2, c2 = time.perf_counter(), time.process_time()
        state, _ = jax.block_until_ready(program(state, hp, data_dev, 0))
        walls, cpus = [], []
        for e in range(1, args.epochs + 1):
            a, b = time.perf_counter(), time.process_time()
            state, _ = jax.block_until_ready(program(state, hp, data_dev, e))
            walls.append(1e3 * (time.perf_counter() - a))
            cpus.append(1e3 * (time.process_time() - b))
        print(
            f"| {g} | {t1 - t0:.2f} ({c1 - c0:.2f}) | {t2 - t1:.2f} ({c2 - c1:.2f}) | "
            f"{statistics.median(walls):.1f} ({min(walls):.1f}) | {statistics.median(cpus):.1f} |",
            flush=True,
        )


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", type=int, default=64, help="64 or 256 points")
    parser.add_argument("--extra", default="", help="more launcher flags for both cases")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tree", default=str(REPO), help="checkout to launch from")
    parser.add_argument("--sizes", default="", help="time these block sizes' programs instead")
    parser.add_argument("--epochs", type=int, default=15, help="timed epochs per size (--sizes)")
    args = parser.parse_args(argv)
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.sizes:
        time_sizes(args)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_cold_"))
    runs: list[dict] = []
    try:
        for r in range(args.repeats):
            order = CASES if r % 2 == 0 else CASES[::-1]
            row = {}
            for case in order:
                cache = tmp / f"cache_{r}_{case}"
                for temp in ("cold", "warm"):
                    workdir = tmp / f"w_{r}_{case}_{temp}"
                    row[f"{case}_{temp}"] = run_one(
                        command(case, workdir, args), cache, Path(args.tree).resolve()
                    )
                shutil.rmtree(cache, ignore_errors=True)
            runs.append(row)
            print(
                f"round {r + 1}: "
                + "  ".join(
                    f"{k} {v['wall']:.2f} s (cpu {v['cpu']:.1f}, sweep {v['sweep_seconds']:.2f}, "
                    f"load {v['load']:.1f})"
                    for k, v in row.items()
                )
                + f"  | ratio cold {row['es_cold']['wall'] / row['off_cold']['wall']:.3f}"
                f"  warm {row['es_warm']['wall'] / row['off_warm']['wall']:.3f}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.grid}-point grid, {args.repeats} round(s), tree {args.tree}; whole processes, "
        "median (min, max)"
    )
    print("| case | wall s | CPU s | sweep s | load |")
    print("|---|---|---|---|---|")
    for key in ("es_cold", "es_warm", "off_cold", "off_warm"):
        col = {f: [x[key][f] for x in runs] for f in ("wall", "cpu", "sweep_seconds", "load")}
        print(
            f"| {key} | {_stats(col['wall'])} | {_stats(col['cpu'])} | "
            f"{_stats(col['sweep_seconds'])} | {min(col['load']):.1f}-{max(col['load']):.1f} |"
        )
    summary = {}
    for temp in ("cold", "warm"):
        for unit in ("wall", "cpu"):
            ratios = [x[f"es_{temp}"][unit] / x[f"off_{temp}"][unit] for x in runs]
            summary[f"ratio_{temp}_{unit}"] = ratios
            print(f"ratio es / off, {temp}, {unit}: {_stats(ratios)}")
    same = {x[f"es_{t}"]["best_val_loss"] for x in runs for t in ("cold", "warm")}
    print(f"best val loss of es (every run): {sorted(same)}")
    if args.out:
        from jaxlr.host.io import atomic_write_json

        atomic_write_json(args.out, {"summary": summary, "runs": runs, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
