"""Whole-process time of `tdt4265_task2`: JAX's persistent compilation cache off, cold, warm;
and of `--list` (which imports the experiments' configs only: no JAX, no matplotlib).

Runs each command as its own process, alternating, and reports the median and the minimum
wall time:

- `numpy`: the plain NumPy baseline script of the same protocol (`benchmarks.numpy_baseline`);
- `jaxlr, no cache`: `python -m experiments.main --experiment=tdt4265_task2 --nocompilation_cache`;
- `jaxlr, cache cold`: the cache on, in an empty cache folder (every run compiles and writes);
- `jaxlr, cache warm`: the cache on, in a folder a previous run filled (no compilation);
- `jaxlr --list`: `python -m experiments.main --list`;
- with `--old_tree=DIR` (a checkout of an earlier commit, e.g. `git archive <commit> | tar -x
  -C DIR`): the same experiment and `--list` launched from there, to compare before and after.

    python -m benchmarks.bench_startup --data_dir=../shared/data --repeats=5
    python -m benchmarks.bench_startup --only=list --repeats=5 --old_tree=DIR   # --list alone
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _time(cmd: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old_tree", default="", help="checkout of an earlier commit")
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    env = dict(os.environ, MPLBACKEND="Agg")
    py = sys.executable

    def jaxlr_cmd(workdir: str, *extra: str) -> list[str]:
        return [
            py,
            "-m",
            "experiments.main",
            "--experiment=tdt4265_task2",
            f"--workdir={tmp / workdir}",
            f"--data_dir={data_dir}",
            *extra,
        ]

    warm_cache = tmp / "warm_cache"
    cold_cache = tmp / "cold_cache"
    if not args.only or args.only in "jaxlr, cache warm":
        _time(jaxlr_cmd("prime"), dict(env, XDG_CACHE_HOME=str(warm_cache)), REPO)  # fill it
    cases = {
        "numpy baseline script": (
            [py, "-m", "benchmarks.numpy_baseline", f"--data_dir={data_dir}", "--task=task2"],
            env,
            REPO,
            None,
        ),
        "jaxlr, no cache": (jaxlr_cmd("nocache", "--nocompilation_cache"), env, REPO, None),
        "jaxlr, cache cold": (
            jaxlr_cmd("cold"),
            dict(env, XDG_CACHE_HOME=str(cold_cache)),
            REPO,
            cold_cache,
        ),
        "jaxlr, cache warm": (
            jaxlr_cmd("warm"),
            dict(env, XDG_CACHE_HOME=str(warm_cache)),
            REPO,
            None,
        ),
        "jaxlr --list": ([py, "-m", "experiments.main", "--list"], env, REPO, None),
    }
    if args.old_tree:
        old = Path(args.old_tree).resolve()
        cases["jaxlr before (old tree)"] = (
            [
                py,
                "-m",
                "experiments.main",
                "--experiment=tdt4265_task2",
                f"--workdir={tmp / 'old'}",
                f"--data_dir={data_dir}",
            ],
            dict(env, PYTHONPATH=str(old)),
            old,
            None,
        )
        cases["jaxlr --list (old tree)"] = (
            [py, "-m", "experiments.main", "--list"],
            dict(env, PYTHONPATH=str(old)),
            old,
            None,
        )
    cases = {k: v for k, v in cases.items() if args.only in k}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, (cmd, case_env, cwd, wipe) in cases.items():
            if wipe is not None:
                shutil.rmtree(wipe, ignore_errors=True)
            times[name].append(_time(cmd, case_env, cwd))
    print(f"whole-process wall time, median of {args.repeats} (min-max):")
    for name, ts in times.items():
        print(f"  {name:26s} {statistics.median(ts):6.2f} s  ({min(ts):.2f}-{max(ts):.2f})")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
