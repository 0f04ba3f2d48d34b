"""Sweeps that scale: early stopping with compaction, and successive halving, timed as whole
processes side by side.

Cases (all `tdt4265_task2`'s protocol: logistic regression 2 vs 3 on the first 20,000 MNIST
training images, validated on the test set's 2s and 3s, batch 128, no shuffling, float32,
one seed; up to 500 epochs):

  * grid64_es / grid64_off: lr 16 values log-spaced over [1e-3, 1] x L2 (0, 1e-4, 1e-3,
    1e-2), early stopping (patience 10 checks) on / off;
  * grid256_es / grid256_off: lr 16 values x L2 16 values (0 and 15 log-spaced over
    [1e-4, 1e-2]);
  * grid64_es_fixed: grid64_es without compaction (today's fixed blocks; pair "compaction"
    checks that the numbers are the same);
  * random64 / random64_halving: 64 points drawn log-uniformly (lr [1e-3, 1], L2 [1e-4,
    1e-2], sampling seed 0), early stopping on; without pruning / with successive halving
    (`--rung_epochs`, `--keep_fraction`).

Each case runs in its own process (`--worker=CASE`; import, data loading, compilation and
training included, i.e. what a user waits for), the cases of a pair one right after the
other, the pairs repeated `--repeats` times in alternating order; the machine load (1-minute
load average) is recorded beside each run. The ratio of a pair is what counts on a shared
machine.

    python -m benchmarks.bench_sweep_scale --data_dir=../shared/data [--repeats=3]
        [--pairs=grid64,grid256,halving] [--out=sweep_scale.json]

Targets (issue 12): grid64_es <= 0.5 x grid64_off; grid256_es <= 0.4 x grid256_off;
random64_halving's best validation loss within 1% of random64's with <= 35% of its
point-steps.

Dimension legend: S sweep points.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PAIRS = {
    "grid64": ("grid64_es", "grid64_off"),
    "grid256": ("grid256_es", "grid256_off"),
    "halving": ("random64_halving", "random64"),
    # Compaction against fixed blocks (stopped points computed, frozen): same numbers?
    "compaction": ("grid64_es", "grid64_es_fixed"),
}


def load_task2(data_dir: str):
    """The tdt4265_task2 data (library calls only): Data of float32 arrays."""
    import numpy as np

    from jaxlr.data import images as jimages
    from jaxlr.data import registry as jregistry
    from jaxlr.data import splits as jsplits
    from jaxlr.engine.step import Data

    ds = jregistry.load_dataset("mnist", data_dir, download=False)
    sp = jsplits.tdt4265_split(ds, (2, 3))

    def prep(x):
        return jimages.preprocess(x, dtype=np.float32)

    return Data(
        prep(sp.x_train),
        np.asarray(sp.y_train, np.int32),
        prep(sp.x_val),
        np.asarray(sp.y_val, np.int32),
    )


def case_setup(case: str, args):
    """(TrainConfig, Grid, prune rule) of a case."""
    import numpy as np

    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import halving as jhalving
    from jaxlr.engine.config import TrainConfig

    es = not case.endswith("_off")
    case = case.removesuffix("_fixed")
    cfg = TrainConfig(
        model="logistic",
        batch_size=128,
        num_epochs=500,
        shuffle=False,
        early_stopping=es,
        patience=10,
    )
    lrs = tuple(np.geomspace(1e-3, 1.0, 16))
    prune = None
    if case.startswith("grid64"):
        grid = jgrid.make_grid(learning_rate=lrs, l2=(0.0, 1e-4, 1e-3, 1e-2), dtype=np.float32)
    elif case.startswith("grid256"):
        l2s = (0.0,) + tuple(np.geomspace(1e-4, 1e-2, 15))
        grid = jgrid.make_grid(learning_rate=lrs, l2=l2s, dtype=np.float32)
    elif case.startswith("random64"):
        grid = jgrid.random_points(64, (1e-3, 1.0), (1e-4, 1e-2), seed=0, dtype=np.float32)
        if case.endswith("halving"):
            prune = jhalving.Halving(args.rung_epochs, args.keep_fraction)
    else:
        raise ValueError(f"unknown case {case!r}")
    return cfg, grid, prune


def worker(case: str, args) -> dict:
    """One case in this process; returns its numbers."""
    t_start = time.perf_counter()
    import numpy as np

    from jaxlr.engine import blocks as jblocks
    from jaxlr.engine import sweep as jsweep
    from jaxlr.report import tables

    if args.ladder:
        jblocks.LADDER_STEPS_PER_OCTAVE = args.ladder
    data = load_task2(args.data_dir)
    cfg, grid, prune = case_setup(case, args)
    t0 = time.perf_counter()
    compact = not case.endswith("_fixed")
    res = jsweep.run_sweep(cfg, grid, data, prune=prune, compact=compact, log_fn=lambda m: None)
    best = res.best_index("val_loss")
    return {
        "case": case,
        "points": grid.size,
        "sweep_seconds": time.perf_counter() - t0,
        "train_seconds": res.wall_seconds,
        "process_seconds_inside": time.perf_counter() - t_start,
        "point_steps": res.point_steps,
        "computed_point_steps": res.computed_point_steps,
        "full_point_steps": grid.size * cfg.num_epochs * res.num_batches,
        "best_index": best,
        "best_val_loss": float(res.metrics["val_loss"][best]),
        "best_val_accuracy": float(res.metrics["val_accuracy"][best]),
        "best_point": grid.point(best),
        "num_stopped": int(res.early_stopping["stopped"].sum()),
        "num_pruned": int((res.pruned_rung >= 0).sum()) if res.pruned_rung is not None else 0,
        "table_csv": tables.sweep_csv(res),
        "mean_steps": float(np.mean(res.metrics["steps"])),
    }


def compare_tables(csv_a: str, csv_b: str) -> dict:
    """How two result tables of one grid differ: identical text, identical stopping and
    best steps, the largest relative difference of the metric columns."""
    import csv
    import io

    rows_a = list(csv.DictReader(io.StringIO(csv_a)))
    rows_b = list(csv.DictReader(io.StringIO(csv_b)))
    steps_equal, worst = len(rows_a) == len(rows_b), 0.0
    for ra, rb in zip(rows_a, rows_b, strict=False):
        for k in ("steps", "stop_step", "best_step", "diverged"):
            steps_equal &= ra[k] == rb[k]
        for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            x, y = float(ra[k]), float(rb[k])
            worst = max(worst, abs(x - y) / max(abs(y), 1e-30))
    return {
        "tables_identical": csv_a == csv_b,
        "steps_and_stopping_identical": bool(steps_equal),
        "max_metric_rel_diff": worst,
    }


def run_case(case: str, args) -> dict:
    """Runs one case in a fresh process and times the whole process."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_sweep_scale",
        f"--worker={case}",
        f"--data_dir={args.data_dir}",
        f"--rung_epochs={args.rung_epochs}",
        f"--keep_fraction={args.keep_fraction}",
        f"--ladder={args.ladder}",
    ]
    load = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(
        process_seconds=wall, cpu_seconds=cpu, load_before=load, load_after=os.getloadavg()[0]
    )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", default="grid64,grid256,halving")
    parser.add_argument("--rung_epochs", type=int, default=5)
    parser.add_argument("--keep_fraction", type=float, default=1 / 3)
    parser.add_argument("--ladder", type=int, default=0, help="block sizes per octave (1, 2)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = sorted(set(pairs) - set(PAIRS))
    if unknown:
        raise ValueError(f"--pairs: unknown {unknown}; valid: {sorted(PAIRS)}")
    runs = {p: [] for p in pairs}
    for r in range(args.repeats):
        for p in pairs:
            a, b = PAIRS[p]
            order = (a, b) if r % 2 == 0 else (b, a)
            res = {c: run_case(c, args) for c in order}
            runs[p].append(res)
            ra, rb = res[a], res[b]
            print(
                f"{p} round {r + 1}: {a} {ra['process_seconds']:.2f} s "
                f"(cpu {ra['cpu_seconds']:.1f}, sweep {ra['sweep_seconds']:.2f}, "
                f"{ra['point_steps']:,} point-steps, "
                f"computed {ra['computed_point_steps']:,}, load {ra['load_before']:.1f}) | "
                f"{b} {rb['process_seconds']:.2f} s (cpu {rb['cpu_seconds']:.1f}, "
                f"sweep {rb['sweep_seconds']:.2f}, "
                f"{rb['point_steps']:,} point-steps, load {rb['load_before']:.1f}) | "
                f"ratio {ra['process_seconds'] / rb['process_seconds']:.3f} "
                f"(sweeps {ra['sweep_seconds'] / rb['sweep_seconds']:.3f}); best val loss "
                f"{ra['best_val_loss']:.5f} vs {rb['best_val_loss']:.5f}",
                flush=True,
            )
    summary = {}
    for p in pairs:
        a, b = PAIRS[p]
        ratios = [x[a]["process_seconds"] / x[b]["process_seconds"] for x in runs[p]]
        sweeps = [x[a]["sweep_seconds"] / x[b]["sweep_seconds"] for x in runs[p]]
        cpus = [x[a]["cpu_seconds"] / x[b]["cpu_seconds"] for x in runs[p]]
        first = runs[p][0]
        summary[p] = {
            "process_ratio_median": statistics.median(ratios),
            "process_ratios": ratios,
            "sweep_ratio_median": statistics.median(sweeps),
            "cpu_ratio_median": statistics.median(cpus),
            "cpu_ratios": cpus,
            "point_steps": first[a]["point_steps"],
            "reference_point_steps": first[b]["point_steps"],
            "point_step_ratio": first[a]["point_steps"] / first[b]["point_steps"],
            "best_val_loss": first[a]["best_val_loss"],
            "reference_best_val_loss": first[b]["best_val_loss"],
            "best_val_loss_rel_gap": first[a]["best_val_loss"] / first[b]["best_val_loss"] - 1,
        }
        if p == "compaction":
            summary[p].update(compare_tables(first[a]["table_csv"], first[b]["table_csv"]))
        print(f"{p}: " + json.dumps(summary[p]), flush=True)
    if args.out:
        from jaxlr.host.io import atomic_write_json

        atomic_write_json(args.out, {"summary": summary, "runs": runs, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
