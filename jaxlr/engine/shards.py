"""Shards of a sweep: independent tasks (SLURM job arrays) that each train a fixed slice.

A sweep of S points is cut into N contiguous slices of near-equal size (`shard_indices`,
`numpy.array_split` semantics: the first S mod N slices hold one point more). Shard I of N
trains slice I as a sweep of its own (`run_shard`): each point keeps its own seed, the seed
is batched whenever it is in the whole grid, and on CPU a point's steps and checks are
computed in groups of a fixed number of points (`jaxlr.engine.step.points_in_groups`), so
its numbers are the same bits in a shard's blocks as in the whole sweep's, whatever their
widths. Resumable from its own checkpoint. Which slice a task trains depends only on
(I, N, S): not on the machine, the device count or the order in which tasks run.

Each shard's result is saved without pickle (`save_shard`: one `.npz` of arrays and a JSON
entry with the shard, its point indices and the sweep's fingerprint, see
`jaxlr.host.checkpoint`). `merge_shards` checks that a set of shards is complete and of one
sweep, and stitches them into one `SweepResult` of the whole grid.

Dimension legend: S sweep points (the whole grid), P points of one shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlr.engine.grid import Grid
from jaxlr.engine.sweep_result import SweepResult
from jaxlr.host import checkpoint as ckpt

SHARD_KIND = "sweep_shard"
SHARD_FORMAT = 1
_FORM = "I/N with whole numbers 0 <= I < N (e.g. 3/8)"
# Per-point arrays of a SweepResult that a shard file holds (prefix -> attribute).
_HIST_STEP_KEYS = ("step", "epoch", "train_loss")
_HIST_CHECK_KEYS = ("check_step", "check_epoch", "val_loss", "val_accuracy", "train_accuracy")


class ShardError(ValueError):
    """Shards that cannot be merged (missing, unfinished, duplicate, of another sweep): one line."""


class Shard(NamedTuple):
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """ "I/N" as a `Shard`.

    Raises:
      ValueError: one line naming the text and the allowed form.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not {_FORM}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError(f"{text!r}: N must be >= 1 ({_FORM})")
    if not index < count:
        raise ValueError(f"{text!r}: I must be in [0, {count}) ({_FORM})")
    return Shard(index, count)


_SLURM_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
)


def shard_from_env(environ: Mapping[str, str]) -> Shard | None:
    """The shard of a SLURM array task, from its environment (None outside a job array).

    SLURM sets SLURM_ARRAY_TASK_ID (this task's id) and SLURM_ARRAY_TASK_COUNT, MIN, MAX and
    STEP of the array. Ids MIN..MAX map to shards 0..N-1 (`--array=1-8` is shards 0/8 to
    7/8). Arrays with a step other than 1 (`--array=0-15:4`) or a list of ids (`--array=1,5`)
    do not map onto contiguous shards and are refused.

    Args:
      environ: the environment (e.g. `os.environ`).
    Raises:
      ValueError: one line naming the variables and what is wrong.
    """
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    values = {}
    for name in _SLURM_VARS:
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a whole number") from None
    task = values["SLURM_ARRAY_TASK_ID"]
    lo = values.get("SLURM_ARRAY_TASK_MIN", 0)
    step = values.get("SLURM_ARRAY_TASK_STEP", 1)
    if "SLURM_ARRAY_TASK_COUNT" not in values and "SLURM_ARRAY_TASK_MAX" not in values:
        raise ValueError(
            "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
            "SLURM_ARRAY_TASK_MAX: give --shard=I/N"
        )
    count = values.get("SLURM_ARRAY_TASK_COUNT")
    hi = values.get("SLURM_ARRAY_TASK_MAX")
    if step != 1:
        raise ValueError(
            f"SLURM_ARRAY_TASK_STEP={step}: a job array for shards needs consecutive ids "
            "(--array=0-N-1, step 1); give --shard=I/N"
        )
    if count is None:
        count = hi - lo + 1
    if hi is None:
        hi = lo + count - 1
    if count < 1 or hi - lo + 1 != count:
        raise ValueError(
            f"SLURM_ARRAY_TASK_COUNT={count} does not match SLURM_ARRAY_TASK_MIN={lo} .. "
            f"SLURM_ARRAY_TASK_MAX={hi}: the array's ids are not consecutive (--array=1,5 or "
            "a throttled range?); give --shard=I/N"
        )
    if not lo <= task <= hi:
        raise ValueError(
            f"SLURM_ARRAY_TASK_ID={task} is outside SLURM_ARRAY_TASK_MIN={lo} .. "
            f"SLURM_ARRAY_TASK_MAX={hi}; give --shard=I/N"
        )
    return Shard(task - lo, count)


def shard_indices(num_points: int, shard: Shard) -> np.ndarray:
    """The indices [P] of the points of the whole grid that `shard` trains.

    Contiguous, near-equal slices (`numpy.array_split`): the first S mod N shards hold
    ceil(S / N) points, the others floor(S / N); with N > S the last shards are empty
    (`run_shard` refuses them).
    """
    s, n, i = int(num_points), int(shard.count), int(shard.index)
    if s < 0 or n < 1 or not 0 <= i < n:
        raise ValueError(f"shard_indices: bad shard {shard} of {num_points} points")
    base, extra = divmod(s, n)
    start = i * base + min(i, extra)
    return np.arange(start, start + base + (i < extra), dtype=np.int64)


def array_digest(arrays: Sequence) -> str:
    """A short sha256 of arrays' shapes, dtypes and bytes (in order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def sweep_fingerprint(config: Mapping[str, Any], grid: Grid, data) -> dict:
    """What every shard of one sweep records and the merge compares.

    Args:
      config: the sweep's settings that decide its results, JSON-ready (without the
        task-local ones: the shard, checkpoint folder, block size, data folder).
      grid: the whole grid (every point, not the shard's).
      data: the preprocessed arrays (`jaxlr.engine.step.Data`).
    """
    return {
        "config": json.loads(json.dumps(config, sort_keys=True)),
        "grid": {
            "points": grid.size,
            "axes": list(grid.axes),
            "shape": list(grid.shape),
            "digest": array_digest(grid.hparams),
        },
        "data": {
            "shapes": [list(np.shape(a)) for a in data],
            "digest": array_digest(data),
        },
    }


def fingerprint_diff(a: Mapping, b: Mapping) -> str:
    """One phrase naming what differs between two fingerprints (up to 3 fields per part)."""
    parts = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            fields = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            parts.append(
                f"{key} " + ", ".join(f"{k} {x.get(k)!r} vs {y.get(k)!r}" for k in fields[:3])
            )
        else:
            parts.append(f"{key} {x!r} vs {y!r}")
    return "; ".join(parts)


def run_shard(config, grid: Grid, data, shard: Shard, **kwargs) -> SweepResult:
    """Trains the points of `shard` of `grid` with `jaxlr.engine.sweep.run_sweep`.

    Every point keeps its own hyper-parameters and seed; the seed is batched exactly when it
    is in the whole grid's sweep, the smallest block is the whole sweep's (two points per
    device), and on CPU the points are computed in groups of the whole sweep's width
    (`jaxlr.engine.sweep.group_for` of the whole grid). A shard's blocks are narrower than
    the whole sweep's; on CPU that changes no bit of a point's numbers (see `merge_shards`).

    Args:
      config: `TrainConfig`.
      grid: the whole grid.
      data: preprocessed arrays.
      shard: which slice (`shard_indices`).
      **kwargs: passed to `run_sweep` (block_size, log_fn, checkpoint_dir, devices, ...).
    Returns:
      The shard's `SweepResult` over its P points (grid: `grid.select(indices)`).
    """
    from jaxlr.engine.sweep import default_model, group_for, run_sweep

    idx = shard_indices(grid.size, shard)
    if not len(idx):
        raise ValueError(f"run_shard: shard {shard} of {grid.size} points is empty")
    seeds = np.asarray(grid.hparams.seed)
    devices = tuple(kwargs.get("devices") or jax.devices())
    x = np.asarray(data.x_train)
    model = kwargs.get("model") or default_model(config, x.shape[1], x.dtype)
    return run_sweep(
        config,
        grid.select(idx),
        data,
        shared_seed=bool(np.all(seeds == seeds[0])),
        min_block=min(2 * len(devices), grid.size),
        group=group_for(config, model, grid.size, kwargs.get("prune"), devices),
        **kwargs,
    )


class ShardResult(NamedTuple):
    """One shard as saved: its place in the sweep and its points' results.

    Attributes:
      shard: the `Shard`.
      indices: [P] the points' indices in the whole grid.
      fingerprint: `sweep_fingerprint` of the sweep.
      arrays: name -> [P, ...]: "metrics/<name>", "early_stopping/<name>", "diverged",
        "diverge_step", "pruned_rung" (optional).
      histories: P history dicts.
      meta: the rest (num_batches, wall_seconds, point_steps, computed_point_steps, ...).
    """

    shard: Shard
    indices: np.ndarray
    fingerprint: dict
    arrays: dict
    histories: list
    meta: dict


def _pack_histories(histories: Sequence[dict]) -> dict:
    out = {}
    for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
        out[name] = np.asarray([len(h[keys[0]]) for h in histories], np.int64)
        for k in keys:
            parts = [np.asarray(h[k]) for h in histories]
            out[k] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def _unpack_histories(flat: dict, num: int) -> list[dict]:
    out, offs = [], {"step_len": 0, "check_len": 0}
    for i in range(num):
        h = {}
        for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
            n = int(flat[f"history/{name}"][i])
            for k in keys:
                h[k] = flat[f"history/{k}"][offs[name] : offs[name] + n]
            offs[name] += n
        out.append(h)
    return out


def save_shard(
    path: str | os.PathLike,
    result: SweepResult,
    shard: Shard,
    indices,
    fingerprint: dict,
    meta: dict | None = None,
) -> Path:
    """Writes a shard's result (no parameters) atomically as an `.npz` with a JSON entry.

    Args:
      path: the file.
      result: the shard's `SweepResult` (P points).
      shard: which shard.
      indices: [P] its points' indices in the whole grid.
      fingerprint: `sweep_fingerprint` of the whole sweep.
      meta: further JSON-ready information.
    """
    indices = np.asarray(indices, np.int64)
    if len(indices) != result.grid.size:
        raise ValueError(f"save_shard: {len(indices)} indices for {result.grid.size} points")
    tree = {
        "indices": indices,
        "metrics": dict(result.metrics),
        "early_stopping": dict(result.early_stopping),
        "diverged": np.asarray(result.diverged),
        "diverge_step": np.asarray(result.diverge_step),
        "history": _pack_histories(result.histories),
    }
    if result.pruned_rung is not None:
        tree["pruned_rung"] = np.asarray(result.pruned_rung)
    info = {
        **(meta or {}),
        "kind": SHARD_KIND,
        "shard_format": SHARD_FORMAT,
        "shard": [shard.index, shard.count],
        "fingerprint": fingerprint,
        "num_batches": int(result.num_batches),
        "wall_seconds": float(result.wall_seconds),
        "point_steps": int(result.point_steps),
        "computed_point_steps": int(result.computed_point_steps),
        "prune": result.prune.to_dict() if result.prune is not None else None,
    }
    return ckpt.save_checkpoint(path, tree, step=0, meta=info)


def load_shard(path: str | os.PathLike) -> ShardResult:
    """Reads what `save_shard` wrote.

    Raises:
      ShardError: missing, corrupt, or not a shard file (one line).
    """
    try:
        flat, meta = ckpt.load_flat(path)
    except ckpt.CheckpointError as err:
        raise ShardError(str(err)) from None
    if meta.get("kind") != SHARD_KIND or meta.get("shard_format") != SHARD_FORMAT:
        raise ShardError(f"{path} is not a sweep shard result (kind {meta.get('kind')!r})")
    idx = np.asarray(flat["indices"], np.int64)
    arrays = {k: v for k, v in flat.items() if not k.startswith("history/") and k != "indices"}
    return ShardResult(
        Shard(*meta["shard"]),
        idx,
        meta["fingerprint"],
        arrays,
        _unpack_histories(flat, len(idx)),
        meta,
    )


def check_shards(shards: Sequence[ShardResult], names: Sequence[str]) -> None:
    """Refuses, in one line, shards that do not make up one whole sweep.

    Args:
      shards: the loaded shards.
      names: what to call each in messages (its workdir).
    Raises:
      ShardError: of different sweeps (naming what differs), of different counts N, a shard
        index given twice, or shards missing.
    """
    if not shards:
        raise ShardError("no shards given")
    first, name0 = shards[0], names[0]
    seen: dict[int, str] = {}
    for sh, name in zip(shards, names):
        if sh.fingerprint != first.fingerprint:
            raise ShardError(
                f"shard {name} ({sh.shard}) is of another sweep than {name0} ({first.shard}): "
                f"{fingerprint_diff(first.fingerprint, sh.fingerprint)}"
            )
        if sh.shard.count != first.shard.count:
            raise ShardError(
                f"shard {name} is {sh.shard} but {name0} is {first.shard}: the shards were cut "
                "into different numbers of tasks"
            )
        if sh.shard.index in seen:
            raise ShardError(f"shard {sh.shard} is given twice: {seen[sh.shard.index]} and {name}")
        seen[sh.shard.index] = name
        want = shard_indices(int(sh.fingerprint["grid"]["points"]), sh.shard)
        if not np.array_equal(want, sh.indices):
            raise ShardError(f"shard {name} ({sh.shard}) holds points other than its slice")
    missing = sorted(set(range(first.shard.count)) - set(seen))
    if missing:
        shown = ", ".join(f"{i}/{first.shard.count}" for i in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ShardError(
            f"{len(missing)} of {first.shard.count} shards missing: {shown}{more}; "
            "give the workdir of every shard"
        )


def merge_shards(shards: Sequence[ShardResult], grid: Grid, config=None, prune=None) -> SweepResult:
    """One `SweepResult` of the whole `grid` from its shards (checked with `check_shards`).

    Parameters are not kept (shard files do not hold them): `params` is None. `wall_seconds`
    is the sum of the shards' (the compute time); `computed_point_steps` too.

    A point's numbers are those its shard computed. On CPU they equal the whole sweep's bit
    for bit: the steps and checks of a sweep are computed in fixed groups of points
    (`jaxlr.engine.step.points_in_groups`), so they do not depend on the width of the
    block (tested: 36 points in 4 shards give the unsharded table.csv byte for byte). On
    other backends the plain vmap is kept, and blocks of other widths may round differently
    in the last bits (float32: about 1e-7), so compare GPU shards with a tolerance of rounding.

    Raises:
      ShardError: see `check_shards`; or `grid` is not the sweep's grid.
    """
    shards = list(shards)
    fp = shards[0].fingerprint["grid"]
    if fp["digest"] != array_digest(grid.hparams) or fp["points"] != grid.size:
        raise ShardError(
            f"the grid ({grid.size} points) is not the shards' ({fp['points']} points)"
        )
    s = grid.size
    keys = sorted({k for sh in shards for k in sh.arrays})
    full: dict[str, np.ndarray] = {}
    histories: list = [None] * s
    for key in keys:
        ref = next(sh.arrays[key] for sh in shards if key in sh.arrays)
        full[key] = np.zeros((s,) + ref.shape[1:], ref.dtype)
    for sh in shards:
        for key in keys:
            full[key][sh.indices] = sh.arrays[key]
        for j, i in enumerate(sh.indices):
            histories[int(i)] = sh.histories[j]
    sub = lambda p: {k[len(p) + 1 :]: v for k, v in full.items() if k.startswith(p + "/")}  # noqa: E731
    m = {int(sh.meta["num_batches"]) for sh in shards}
    return SweepResult(
        grid=grid,
        params=None,
        metrics=sub("metrics"),
        early_stopping=sub("early_stopping"),
        diverged=full["diverged"],
        diverge_step=full["diverge_step"],
        histories=histories,
        wall_seconds=float(sum(sh.meta["wall_seconds"] for sh in shards)),
        config=config,
        num_batches=m.pop() if len(m) == 1 else 0,
        point_steps=int(sum(sh.meta["point_steps"] for sh in shards)),
        computed_point_steps=int(sum(sh.meta["computed_point_steps"] for sh in shards)),
        pruned_rung=full.get("pruned_rung"),
        prune=prune,
    )


__all__ = [
    "Shard",
    "ShardError",
    "ShardResult",
    "array_digest",
    "check_shards",
    "fingerprint_diff",
    "load_shard",
    "merge_shards",
    "parse_shard",
    "run_shard",
    "save_shard",
    "shard_from_env",
    "shard_indices",
    "sweep_fingerprint",
]
