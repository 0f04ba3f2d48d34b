"""The `sweep_merge` experiment: the shards of one sweep (`sweep --shard=I/N`) as one sweep.

Each shard's workdir holds its published `shard.npz` (its points' results, the shard and
the sweep's fingerprint) and `config.json`. The merge refuses, in one line, a workdir that
holds no finished shard, shards of different sweeps (config, grid or data), of different
counts N, a shard given twice, or missing shards; then it loads the data again (the exact
optimum is solved on it, and its digest must be the shards'), stitches the points into one
`SweepResult` and writes the same outputs as `sweep` (`experiments.sweep.write_sweep_outputs`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from experiments.common import RunDir
from experiments.config import config_from_flat
from experiments.sweep import (
    SHARD_FILE,
    fingerprint_config,
    grid_of,
    write_sweep_outputs,
)
from experiments.sweep_config import SweepMerge
from jaxlr.data.splits import load_splits
from jaxlr.engine import shards as jshards
from jaxlr.engine.config import ConfigError
from jaxlr.host import workdir_checks


def _load(workdir: str) -> tuple[jshards.ShardResult, dict]:
    """A shard workdir's published result and config.json (ShardError if unfinished)."""
    path = Path(workdir).expanduser()
    if not path.is_dir():
        raise jshards.ShardError(f"shard workdir {path} does not exist")
    run = workdir_checks.latest_run(path)
    if run is None:
        raise jshards.ShardError(
            f"shard workdir {path} has no finished run: the shard is still running, or was "
            "stopped before it finished (the same command, with the same --checkpoint, resumes it)"
        )
    if not (run / SHARD_FILE).exists():
        raise jshards.ShardError(
            f"shard workdir {path} holds a finished run that is no shard ({SHARD_FILE} missing): "
            "run the sweep with --shard=I/N"
        )
    shard = jshards.load_shard(run / SHARD_FILE)
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise jshards.ShardError(f"shard workdir {path}: config.json unreadable ({err})") from None
    return shard, config


def sweep_merge(cfg: SweepMerge, run: RunDir) -> dict:
    """The shards of one sweep (`--experiment=sweep --shard=I/N`) merged into one sweep.

    Launch:  python -m experiments.main --experiment=sweep_merge --workdir=runs/sweep \\
               --shards=runs/sweep_0,runs/sweep_1,runs/sweep_2,runs/sweep_3
    Runtime: seconds (loading the data, the exact optimum of each lambda, the figures).
    Result:  the outputs of the unsharded `sweep`: table.md / table.csv (the same rows as the
             unsharded sweep's), heatmap or search scatter, curves, histories, best point,
             report.md, metrics.json with every point and "shards" (each shard's workdir,
             points and time). A missing, unfinished, duplicate or mismatched shard: one line,
             exit 1, nothing written.
    """
    if not cfg.shards:
        raise ConfigError("shards", cfg.shards, "give the workdirs of every shard, W0,W1,...")
    names = [str(Path(w).expanduser()) for w in cfg.shards]
    resolved: dict[Path, str] = {}
    for name in names:
        key = Path(name).resolve()
        if key in resolved:
            raise jshards.ShardError(f"shard workdir {name} is given twice")
        resolved[key] = name
    loaded = [_load(name) for name in names]
    shards = [s for s, _ in loaded]
    jshards.check_shards(shards, names)
    sweep_cfg = config_from_flat("sweep", loaded[0][1])
    if cfg.data_dir:
        sweep_cfg = dataclasses.replace(
            sweep_cfg, data=dataclasses.replace(sweep_cfg.data, data_dir=cfg.data_dir)
        )
    if sweep_cfg.data.dtype == "float64":  # the launcher switches it on from --dtype only
        jax.config.update("jax_enable_x64", True)
    splits = load_splits(sweep_cfg.data)
    data = splits.data
    grid = grid_of(sweep_cfg, np.asarray(data.x_train).dtype)
    here = jshards.sweep_fingerprint(fingerprint_config(sweep_cfg), grid, data)
    if here != shards[0].fingerprint:
        raise jshards.ShardError(
            f"the sweep rebuilt from {names[0]} differs from what its shards ran: "
            f"{jshards.fingerprint_diff(shards[0].fingerprint, here)} (other data files?)"
        )
    order = sorted(range(len(shards)), key=lambda j: shards[j].shard.index)
    result = jshards.merge_shards([shards[j] for j in order], grid, sweep_cfg.train)
    count = shards[0].shard.count
    longest = max(s.meta["wall_seconds"] for s in shards)
    how = (
        f"trained in {count} shards (vmapped sweeps of their own), {result.wall_seconds:.1f} s "
        f"in all, the longest {longest:.1f} s"
    )
    metrics = write_sweep_outputs(sweep_cfg, run, splits, result, how=how)
    metrics["shards"] = [
        {
            "workdir": names[j],
            "shard": str(shards[j].shard),
            "points": [int(shards[j].indices[0]), int(shards[j].indices[-1])],
            "wall_seconds": float(shards[j].meta["wall_seconds"]),
            "point_steps": int(shards[j].meta["point_steps"]),
        }
        for j in order
    ]
    metrics["sweep_config"] = loaded[0][1]
    return metrics
