"""Every experiment's `--smoke` run as a whole process: wall time against a budget.

`--smoke` promises "a seconds-long run". This check runs, for every registered experiment,
`python -m experiments.main --experiment=NAME --workdir=... --smoke --notensorboard` (the
experiments that read another run's output after it: `hw3_misclassified` on the grid's
checkpoint, `sweep_merge` on two shards of the smoke sweep), prints one row per run (wall
seconds, exit code) and exits 1 when a run failed or took longer than `--budget` seconds.
It is a check run on demand, never a unit test (timings belong in benchmarks).

    python -m benchmarks.bench_smoke --data_dir=../shared/data [--budget=60] [--only=a,b]
        [--compilation_cache] [--out=smoke.json]

It needs the real data (`--data_dir`, or `JAXLR_DATA_DIR`): smoke runs are what a user
starts first, on the real files. By default each run compiles from scratch
(`--nocompilation_cache`): what a first run costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs that need another's output, and what they add to the command line; {w} is the
# folder of every workdir of this check.
AFTER = {
    "hw3_misclassified": (
        "hw3_logreg_grid",
        ["--grid_checkpoint={w}/hw3_logreg_grid/logreg_best.npz"],
    ),
    "sweep_merge": ("sweep", ["--shards={w}/shard0,{w}/shard1"]),
}


def _experiments() -> list[str]:
    sys.path.insert(0, str(REPO))
    from experiments import registry  # noqa: F401  (registers every experiment)
    from experiments.config import EXPERIMENTS

    names = sorted(EXPERIMENTS)
    # Dependencies first: the runs whose outputs others read.
    first = [dep for dep, _ in AFTER.values()]
    return first + [n for n in names if n not in first]


def _run(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env())
    return time.perf_counter() - t0, r.returncode, r.stderr


def _env() -> dict:
    return dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", ""))
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--only", default="", help="comma-separated experiment names")
    parser.add_argument("--compilation_cache", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("give --data_dir (or set JAXLR_DATA_DIR): the smoke runs use the real data")
    only = [n for n in args.only.split(",") if n]
    names = _experiments()
    if only:
        names = [n for n in names if n in only or any(AFTER.get(o, ("",))[0] == n for o in only)]
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="bench_smoke_") as tmp:
        w = Path(tmp)
        for name in names:
            data = [f"--data_dir={args.data_dir}"]
            cache = [] if args.compilation_cache else ["--nocompilation_cache"]
            base = [sys.executable, "-m", "experiments.main", f"--experiment={name}", "--smoke",
                    "--notensorboard", *cache]  # fmt: skip
            extra = [a.format(w=w) for a in AFTER.get(name, ("", []))[1]]
            if name == "sweep":  # its two shards too, for sweep_merge
                for i in range(2):
                    _run([*base, f"--workdir={w}/shard{i}", f"--shard={i}/2", *data])
            seconds, code, err = _run([*base, f"--workdir={w}/{name}", *data, *extra])
            over = seconds > args.budget
            failed |= code != 0 or over
            status = "ok" if code == 0 and not over else ("over budget" if code == 0 else "failed")
            rows.append({"experiment": name, "seconds": round(seconds, 2), "exit": code,
                         "status": status})  # fmt: skip
            print(f"{name:26s} {seconds:7.1f} s  exit {code}  {status}", flush=True)
            if code != 0:
                print("   " + (err.strip().splitlines() or [""])[-1][:300], flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'all':26s} {total:7.1f} s  budget {args.budget:g} s per run: "
          f"{'FAILED' if failed else 'met'}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "budget": args.budget}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
