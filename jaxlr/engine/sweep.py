"""Hyper-parameter sweeps: a whole grid trained in one compiled call, blocked and sharded.

A grid of learning rates, L2 strengths, momenta and seeds is flattened to one sweep axis of
S points. `run_sweep` trains every point with `jit(vmap(engine.run))` of the training engine
(`jaxlr.engine.train`): the state and the hyper-parameters are batched over S, the data and the
global step are not. The learning rate and lambda are array arguments, so a new grid of the
same size reuses the compiled program. Each point keeps its own early-stopping counter, best
weights and stopping step; a point that stops (early or on a non-finite loss) is frozen by
the engine's `active` flag and never changes again, and the host loop ends as soon as no
point is active.

Large grids run in blocks of points (`block_size`, default from a memory estimate), and the
sweep axis of every block is sharded over a `Mesh` of all devices
(`NamedSharding(mesh, P("sweep"))`; the data is replicated), the block padded to a multiple of
the device count with copies of its own points (dropped from the results). Points never
interact, so results do not depend on the block size or the number of devices.

Dimensions: S sweep points (flattened grid), G points of one block, T steps, N training
examples, V validation examples, D features, K outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlr.core.objective import Model
from jaxlr.engine import resources
from jaxlr.engine.config import HParams, TrainConfig
from jaxlr.engine.grid import Grid
from jaxlr.engine.halving import prune_rung
from jaxlr.engine.step import Data, StepLog, TrainState
from jaxlr.engine.train import (
    concat_histories,
    early_stopping_summary,
    history_from_logs,
    make_engine,
    model_for,
    returned_params,
)
from jaxlr.host import checkpoint as ckpt

log = logging.getLogger("jaxlr.sweep")

SWEEP_AXIS = "sweep"

# Memory a block may use when the caller gives no budget: a quarter of the host's memory
# (at most 4 GiB) on CPU, half of an accelerator's memory.
_CPU_BUDGET_CAP = 4 << 30
# Block sizes per octave of the compaction ladder (see `block_ladder`): 2 wastes less on
# padding, 1 compiles half as many programs. Each program costs about 1.2 CPU-seconds to
# compile for tdt4265_task2, more than the padding it saves: on the 64-point early-stopping
# grid 1 took 21.5 CPU-s and 2 took 29.1 CPU-s (benchmarks/bench_sweep_scale.py --ladder).
LADDER_STEPS_PER_OCTAVE = 1


# ---------------------------------------------------------------------------------------------
# Grids.


# ---------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class SweepResult:
    """What `run_sweep` returns (host-side numpy values, point i of the flattened grid).

    Attributes:
      grid: the grid.
      params: returned parameters of every point (the best check's with early stopping),
        leaves stacked [S, ...].
      metrics: name -> [S]: final numbers of the returned parameters ("train_loss",
        "val_loss", "train_accuracy", "val_accuracy" and their "_cross_entropy" /
        "_objective" variants, see `Engine.evaluate`), plus "steps" (steps trained).
      early_stopping: name -> [S]: "stopped" (bool), "step", "epoch" (-1 when not
        stopped), "best_step", "best_epoch" (-1 before the first check), "best_val_loss".
      diverged: [S] bool, the point produced a non-finite loss or parameter.
      diverge_step: [S] the step that did (-1 if none).
      histories: one history dict per point (the keys of `jaxlr.engine.train.history_from_logs`).
      wall_seconds: host time of the training loops (compilation included).
      config: the static config.
      num_batches: M, batches per epoch.
      point_steps: steps the points actually ran, summed over points (= metrics["steps"]).
      computed_point_steps: steps the compiled blocks computed, summed over block slots
        (stopped points and padding included; point_steps of a perfect compaction).
      pruned_rung: [S] the successive-halving rung (1, 2, ...) at which the point was
        stopped, -1 if it was not; None when no pruning rule was used.
      prune: the pruning rule (`jaxlr.engine.halving.Halving`) or None.
    """

    grid: Grid
    params: Any
    metrics: dict[str, np.ndarray]
    early_stopping: dict[str, np.ndarray]
    diverged: np.ndarray
    diverge_step: np.ndarray
    histories: list[dict]
    wall_seconds: float
    config: TrainConfig | None = None
    num_batches: int = 0
    point_steps: int = 0
    computed_point_steps: int = 0
    pruned_rung: np.ndarray | None = None
    prune: Any = None

    def best_index(self, by: str = "val_loss", then: str | None = None) -> int:
        """Index of the best point that did not diverge (the one best-point rule).

        Args:
          by: a key of `metrics`; losses are minimised, accuracies maximised.
          then: a second key that breaks ties of `by` (same sense rule); further ties go to
            the lower index.
        Returns:
          The point's index in the flattened grid.
        Raises:
          ValueError: unknown metric, or every point diverged.
        """
        for key in (by, then):
            if key is not None and key not in self.metrics:
                raise ValueError(
                    f"best_index: unknown metric {key!r}; valid: {sorted(self.metrics)}"
                )
        values = np.asarray(self.metrics[by], np.float64)
        ok = ~np.asarray(self.diverged) & np.isfinite(values)
        if not ok.any():
            raise ValueError("best_index: every point diverged (no finite metric)")

        def ranked(key):
            sign = -1.0 if "accuracy" in key else 1.0
            v = sign * np.asarray(self.metrics[key], np.float64)
            return np.where(ok & np.isfinite(v), v, np.inf)

        keys = (ranked(then), ranked(by)) if then is not None else (ranked(by),)
        return int(np.lexsort(keys)[0])

    def reshape(self, values_S) -> np.ndarray:
        """Per-point values [S, ...] reshaped to the grid: grid.shape + trailing dims."""
        values = np.asarray(values_S)
        return values.reshape(tuple(self.grid.shape) + values.shape[1:])

    def point_params(self, i: int):
        """The returned parameters of point `i`."""
        return jax.tree.map(lambda a: a[i], self.params)

    def point_metrics(self, i: int) -> dict:
        """Point `i`'s numbers in the form of `jaxlr.engine.train.fit`'s `TrainResult.metrics`.

        Final metrics (floats), "steps", "epochs" (epochs in which it trained) and, with
        early stopping, "early_stopping" as `jaxlr.engine.train.early_stopping_summary` gives it.
        """
        out = {k: py_scalar(v[i]) for k, v in self.metrics.items()}
        steps = int(self.metrics["steps"][i])
        out["epochs"] = -(-steps // self.num_batches) if self.num_batches else 0
        if self.config is not None and self.config.early_stopping:
            es = {k: py_scalar(v[i]) for k, v in self.early_stopping.items()}
            for k in ("step", "epoch", "best_epoch"):
                if es[k] < 0:
                    es[k] = None
            out["early_stopping"] = es
        return out

    def records(self) -> list[dict]:
        """One JSON-ready dict per point: hyper-parameters, metrics, stopping, divergence."""
        out = []
        for i in range(self.grid.size):
            rec = {"index": i, **self.grid.point(i)}
            rec.update({k: py_scalar(v[i]) for k, v in self.metrics.items()})
            rec["diverged"] = bool(self.diverged[i])
            rec["diverge_step"] = int(self.diverge_step[i])
            rec["early_stopping"] = {k: py_scalar(v[i]) for k, v in self.early_stopping.items()}
            if self.pruned_rung is not None:
                rec["pruned_rung"] = int(self.pruned_rung[i])
            out.append(rec)
        return out

    def work(self) -> dict:
        """The sweep's cost for metrics.json: point_steps, computed_point_steps,
        wall_seconds, and with a pruning rule the rule and the number of points it stopped."""
        out = {
            "point_steps": int(self.point_steps),
            "computed_point_steps": int(self.computed_point_steps),
            "wall_seconds": float(self.wall_seconds),
        }
        if self.prune is not None:
            out["prune"] = self.prune.to_dict()
            out["num_pruned"] = int((np.asarray(self.pruned_rung) >= 0).sum())
        return out


def py_scalar(x):
    x = np.asarray(x)
    if x.dtype == bool:
        return bool(x)
    if np.issubdtype(x.dtype, np.integer):
        return int(x)
    return float(x)


def mean_over(result: SweepResult, values_S, axes: Sequence[str] = ("seed",)) -> np.ndarray:
    """Per-point values reshaped to the grid and averaged over the named axes.

    Diverged points count as NaN (a cell with any diverged seed is NaN).

    Args:
      result: a sweep result.
      values_S: [S] values.
      axes: grid axes to average over (absent ones are ignored).
    Returns:
      Array over the remaining axes of `result.grid.axes`, in their order.
    """
    v = np.where(result.diverged, np.nan, np.asarray(values_S, np.float64))
    grid_v = result.reshape(v)
    drop = tuple(result.grid.axes.index(a) for a in axes if a in result.grid.axes)
    return grid_v.mean(axis=drop) if drop else grid_v


# ---------------------------------------------------------------------------------------------
# Compiled functions.


class SweepFns(NamedTuple):
    """The jitted, vmapped and sharded functions of a sweep over G points.

    Attributes:
      init: hparams [G] -> TrainState [G].
      run: (state [G], hparams [G], data, start_epoch, num_epochs) -> (state, StepLog [G, T]).
      evaluate: (params [G], hparams [G], data) -> dict of [G].
      engine: the engine of one run.
      mesh: the device mesh (axis "sweep").
    """

    init: Callable
    run: Callable
    evaluate: Callable
    engine: Any
    mesh: Mesh


def _mesh(devices) -> Mesh:
    return Mesh(np.asarray(list(devices)), (SWEEP_AXIS,))


@functools.lru_cache(maxsize=64)
def sweep_functions(
    config: TrainConfig,
    model: Model,
    num_train: int,
    devices: tuple = (),
    shared_seed: bool = False,
) -> SweepFns:
    """Builds (and caches) the compiled sweep functions.

    Cached on its arguments, so a new grid of the same size and config reuses the compiled
    programs (a bound `Model` compares by the identity of its functions).

    Args:
      config: static config.
      model: the bound model.
      num_train: N.
      devices: devices of the mesh (default: all of `jax.devices()`).
      shared_seed: every point has the same seed; it is then passed unbatched, so the
        data order and the mini-batch gather are shared by all points (one matrix product
        [B, D] x [D, G K] instead of G products).
    Returns:
      `SweepFns`.
    """
    engine = make_engine(config, model, num_train)
    mesh = _mesh(devices or jax.devices())
    sweep = NamedSharding(mesh, P(SWEEP_AXIS))
    hp_axes = HParams(0, 0, 0, None if shared_seed else 0)

    def init(hparams):
        return jax.vmap(engine.init, in_axes=(hp_axes,))(hparams)

    def run(state, hparams, data, start_epoch, num_epochs):
        def one(s, h):
            return engine.run(s, h, data, start_epoch, num_epochs)

        return jax.vmap(one, in_axes=(0, hp_axes))(state, hparams)

    def evaluate(params, hparams, data):
        return jax.vmap(lambda p, h: engine.evaluate(p, h, data), in_axes=(0, hp_axes))(
            params, hparams
        )

    return SweepFns(
        init=jax.jit(init, out_shardings=sweep),
        run=jax.jit(run, static_argnums=4, out_shardings=sweep),
        evaluate=jax.jit(evaluate, out_shardings=sweep),
        engine=engine,
        mesh=mesh,
    )


@functools.lru_cache(maxsize=64)
def _default_model(config: TrainConfig, num_features: int, dtype: np.dtype) -> Model:
    # Cached so that repeated sweeps get the same Model object, hence the same compiled code.
    return model_for(config, num_features, dtype)


def _put(x, sharding: NamedSharding):
    """A global array with `sharding` from a host array present on every process."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _to_host(tree):
    """Host numpy copies of (possibly multi-process) global arrays."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(a, "is_fully_addressable", True) for a in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


# ---------------------------------------------------------------------------------------------
# Block size.


def param_count(model: Model) -> int:
    """Number of scalar parameters of `model` (from shapes only, nothing is computed)."""
    return resources.num_params(model)


def bytes_per_point(config: TrainConfig, model: Model, data_shape: tuple, itemsize: int) -> int:
    """A rough upper estimate of the device memory one sweep point needs.

    The `per_point` part of `jaxlr.engine.resources.estimate_run_bytes`: the state (parameters, new
    parameters, gradients, optimizer slots, best parameters), one step's activations, a
    validation check's activations and one chunk of step logs.

    Args:
      config: static config.
      model: the bound model.
      data_shape: (N, V, D): training and validation examples and features.
      itemsize: bytes per float.
    Returns:
      Bytes.
    """
    return int(resources.estimate_run_bytes(config, model, data_shape, itemsize).per_point)


def memory_budget(device=None) -> int:
    """Bytes a block of sweep points may use on `device` (default: this process's first)."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (CPU and some backends do not report memory)
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) // 2
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        host = 8 << 30
    return int(min(_CPU_BUDGET_CAP, host // 4))


def default_block_size(
    config: TrainConfig,
    model: Model,
    data_shape: tuple,
    itemsize: int,
    num_points: int,
    num_devices: int = 1,
    budget_bytes: int | None = None,
) -> int:
    """Points per block: as many as fit in the memory budget of every device.

    Args:
      config, model, data_shape, itemsize: see `bytes_per_point`.
      num_points: S.
      num_devices: devices the block is sharded over (each holds G / num_devices points).
      budget_bytes: per-device budget (default `memory_budget()`).
    Returns:
      A multiple of `num_devices`, at least `num_devices`, at most S rounded up to one.
    """
    budget = memory_budget() if budget_bytes is None else budget_bytes
    data_bytes = itemsize * (data_shape[0] + data_shape[1]) * data_shape[2]
    per_point = bytes_per_point(config, model, data_shape, itemsize)
    per_device = max(1, (budget - data_bytes) // max(per_point, 1))
    whole = -(-num_points // num_devices)
    return int(num_devices * max(1, min(per_device, whole)))


# ---------------------------------------------------------------------------------------------
# The sweep.


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    mnt, s = divmod(rem, 60)
    return f"{h}:{mnt:02d}:{s:02d}" if h else f"{mnt:d}:{s:02d}"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pad_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """`indices` padded to `size` with copies of its own points (cycled)."""
    if len(indices) >= size:
        return indices
    return np.concatenate([indices, np.resize(indices, size - len(indices))])


def block_ladder(cap: int, num_devices: int = 1, steps_per_octave: int = 1) -> tuple[int, ...]:
    """The block sizes a compacting sweep may use: a fixed geometric ladder up to `cap`.

    With `steps_per_octave=1` (default) the sizes are num_devices * 2^j below `cap`, then
    `cap`: a block is at most half padding, and there are about log2(cap) compiled programs.
    With 2: num_devices * (2, 3, 4, 6, 8, 12, 16, 24, ...), at most a third of padding and
    twice the programs (`run_sweep` uses `LADDER_STEPS_PER_OCTAVE`). The smallest size is
    2 * num_devices (when `cap` allows): with a single point per device XLA drops the batch
    dimension and picks other kernels, whose rounding differs; with two or more a point's
    numbers are the same bits in blocks of any size (per-point seeds).

    Args:
      cap: the largest block (a multiple of `num_devices`).
      num_devices: devices the sweep axis is sharded over.
      steps_per_octave: 1 (powers of two) or 2 (powers of two and 1.5 times them).
    Returns:
      Increasing sizes, each a multiple of `num_devices`; one compiled program each.
    """
    if cap < num_devices or cap % num_devices:
        raise ValueError(
            f"block_ladder: cap must be a positive multiple of num_devices={num_devices}, got {cap}"
        )
    if steps_per_octave not in (1, 2):
        raise ValueError(f"block_ladder: steps_per_octave must be 1 or 2, got {steps_per_octave}")
    sizes, g = [], 2
    while g * num_devices < cap:
        sizes.append(g * num_devices)
        if steps_per_octave == 2 and 3 * g // 2 * num_devices < cap:
            sizes.append(3 * g // 2 * num_devices)
        g *= 2
    return tuple(sizes) + (cap,)


def plan_blocks(indices, cap: int, ladder: Sequence[int] | None = None) -> list[np.ndarray]:
    """Cuts point indices into the fewest blocks of at most `cap`, each padded to one size.

    Args:
      indices: [A] indices of the points to run.
      cap: the most points per block.
      ladder: allowed block sizes (increasing, last == cap); None: the balanced size
        (a multiple of ladder-free `cap`'s device count is the caller's business).
    Returns:
      Index arrays, each padded with copies of its own points to the block size: the
      smallest ladder size that holds ceil(A / blocks) points.
    """
    indices = np.asarray(indices, np.int64)
    a = len(indices)
    if a == 0:
        return []
    nblocks = _ceil_div(a, cap)
    per = _ceil_div(a, nblocks)
    g = next(s for s in ladder if s >= per) if ladder else per
    return [_pad_indices(indices[i : i + per], g) for i in range(0, a, per)]


class _Programs:
    """Compiled `run` programs per (block size, epochs per chunk), optionally compiled ahead
    of need on one background thread."""

    def __init__(self, fns, host, hp_all, data_dev, sweep_sh, repl, shared_seed, background):
        self._fns, self._data = fns, data_dev
        self._sweep, self._repl, self._shared = sweep_sh, repl, shared_seed
        self._host = jax.tree.map(lambda a: (a.shape[1:], a.dtype), host)
        self._hp = hp_all
        self._lock = threading.Lock()
        self._done: dict = {}
        self._pool = ThreadPoolExecutor(1, "jaxlr-sweep-compile") if background else None

    def _compile(self, g: int, k: int):
        def spec(shape_dtype, sharding):
            shape, dtype = shape_dtype
            return jax.ShapeDtypeStruct((g,) + tuple(shape), dtype, sharding=sharding)

        is_leaf = lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], np.dtype)  # noqa: E731
        state = jax.tree.map(lambda sd: spec(sd, self._sweep), self._host, is_leaf=is_leaf)
        hp = [jax.ShapeDtypeStruct((g,), v.dtype, sharding=self._sweep) for v in self._hp]
        if self._shared:
            hp[3] = jax.ShapeDtypeStruct((), self._hp.seed.dtype, sharding=self._repl)
        return self._fns.run.lower(state, HParams(*hp), self._data, 0, k).compile()

    def prefetch(self, g: int, k: int) -> None:
        """Starts compiling (g, k) in the background (no-op without a background thread)."""
        with self._lock:
            if self._pool is None or (g, k) in self._done:
                return
            self._done[(g, k)] = self._pool.submit(self._compile, g, k)

    def get(self, g: int, k: int):
        """The compiled program of (g, k): (state, hparams, data, start_epoch) -> (state, logs)."""
        with self._lock:
            item = self._done.get((g, k))
        if item is None:
            item = self._compile(g, k)
            with self._lock:
                self._done[(g, k)] = item
        elif isinstance(item, Future):
            item = item.result()
            with self._lock:
                self._done[(g, k)] = item
        return item

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Block(NamedTuple):
    """One compiled block resident on the devices between chunks."""

    idx: np.ndarray  # [G] point indices (padded with copies)
    real: int  # the first `real` entries are distinct points
    state: TrainState  # device arrays [G, ...]
    hp: HParams  # device arrays [G] (seed unbatched with a shared seed)


def _take(tree, idx):
    return jax.tree.map(lambda a: np.asarray(a)[idx], tree)


def _scatter(host, idx, values):
    """host[idx] = values, leaf by leaf (host leaves are writable numpy arrays)."""

    def one(h, v):
        h[idx] = np.asarray(v)

    jax.tree.map(one, host, values)


def _fingerprint(config, grid, data, prune) -> dict:
    """What a sweep checkpoint must match to be resumed."""
    h = hashlib.sha256()
    for a in data:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    g = hashlib.sha256()
    for v in grid.hparams:
        v = np.ascontiguousarray(v)
        g.update(f"{v.shape}{v.dtype}".encode())
        g.update(v.tobytes())
    return {
        "config": config.to_dict(),
        "grid": {"points": grid.size, "axes": list(grid.axes), "digest": g.hexdigest()[:16]},
        "data": {
            "shapes": [list(np.shape(a)) for a in data],
            "dtype": str(np.asarray(data.x_train).dtype),
            "digest": h.hexdigest()[:16],
        },
        "prune": prune.to_dict() if prune is not None else None,
    }


def _fingerprint_diff(saved: dict, now: dict) -> str:
    """One phrase naming what changed between two fingerprints."""
    parts = []
    for key in ("config", "grid", "data", "prune"):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in fields[:3])
            parts.append(f"{key} ({shown})")
        else:
            parts.append(f"{key} ({a!r} -> {b!r})")
    return "; ".join(parts)


_CKPT_NAME = "sweep.npz"
_HIST_STEP_KEYS = ("step", "epoch", "train_loss")
_HIST_CHECK_KEYS = ("check_step", "check_epoch", "val_loss", "val_accuracy", "train_accuracy")


def _history(done: dict | None, pending: list, m: int, dtype=None) -> dict | None:
    """One point's history: `done` (a history dict or None) followed by `pending` chunks.

    `pending` holds (start_step, StepLog of 1-D arrays) per chunk the point ran in. Returns
    None when there is nothing and no `dtype` to build an empty history with.
    """
    if not pending:
        if done is not None or dtype is None:
            return done
        z = np.zeros(0, dtype)
        return history_from_logs(StepLog(z.astype(bool), z, z.astype(bool), z, z, z), m)
    logs = StepLog(*(np.concatenate([np.asarray(p[1][j]) for p in pending]) for j in range(6)))
    steps = np.concatenate([s0 + np.arange(len(p.ran)) for s0, p in pending])
    ran, chk = logs.ran.astype(bool), logs.is_check.astype(bool)
    new = {
        "step": steps[ran],
        "epoch": steps[ran] // m,
        "train_loss": logs.train_loss[ran],
        "check_step": steps[chk],
        "check_epoch": steps[chk] // m,
        "val_loss": logs.val_loss[chk],
        "val_accuracy": logs.val_accuracy[chk],
        "train_accuracy": logs.train_accuracy[chk],
    }
    return new if done is None else concat_histories([done, new])


def _save_sweep(path, state, histories, pruned_rung, meta) -> None:
    """The whole sweep state, atomically (histories concatenated over points)."""
    hist = {}
    for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
        lens = np.asarray([len(h[keys[0]]) if h else 0 for h in histories], np.int64)
        hist[name] = lens
        for k in keys:
            parts = [np.asarray(h[k]) for h in histories if h]
            hist[k] = np.concatenate(parts) if parts else np.zeros(0)
    tree = {"state": state, "pruned_rung": np.asarray(pruned_rung), "history": hist}
    ckpt.save_checkpoint(path, tree, step=int(meta["epoch"]), meta=meta)


def _load_sweep(path, template_state, num_points):
    flat, meta = ckpt.load_flat(path)
    state = ckpt.restore_tree(
        {k: v for k, v in flat.items() if k.startswith("state/")},
        template_state,
        prefix="state",
        path=path,
    )
    state = jax.tree.map(np.array, state)  # writable copies
    pruned = np.array(flat["pruned_rung"])
    histories = []
    offs = {"step_len": 0, "check_len": 0}
    for i in range(num_points):
        h = {}
        for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
            n = int(flat[f"history/{name}"][i])
            for k in keys:
                h[k] = flat[f"history/{k}"][offs[name] : offs[name] + n]
            offs[name] += n
        histories.append(h if len(h["step"]) else None)
    return state, histories, pruned, meta


def _agree(values: Sequence[int], what: str) -> None:
    """Raises unless every process holds the same integers (no-op in one process)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.asarray(values, np.int64)
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not (every == mine[None]).all():
        raise RuntimeError(
            f"sweep: the processes disagree on {what}: {every.tolist()} (one process per row); "
            "every process must see the same data and checkpoint folder"
        )


def run_sweep(
    config: TrainConfig,
    grid: Grid,
    data: Data,
    *,
    model: Model | None = None,
    block_size: int | None = None,
    devices: Sequence | None = None,
    log_fn: Callable[[str], None] | None = None,
    compact: bool = True,
    prune=None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> SweepResult:
    """Trains every point of `grid`: compiled, vmapped chunks of epochs over blocks of points.

    All points advance together, one chunk (`config.epochs_per_call` epochs, cut at rung
    ends) at a time. With `compact`, before each chunk the points still active are gathered
    into the fewest blocks of at most `block_size` points, each padded (with copies of its
    own points, whose results are dropped) to the smallest size of `block_ladder`: stopped
    points cost nothing, and the number of compiled programs stays bounded. A point's
    numbers do not depend on the block it ran in (bit for bit when every point has its own
    seed; with one shared seed the batch product of all points may round differently).

    Args:
      config: static config (shared by every point).
      grid: the points (`make_grid`, `grid_from_points`, `jaxlr.engine.grid.random_points`).
      data: preprocessed arrays; their float dtype is the compute dtype.
      model: a bound model (default: built from `config` and the data's shape and dtype).
      block_size: the most points per block (rounded up to a multiple of the device count);
        default from `default_block_size`.
      devices: devices to shard the sweep axis over (default: all of `jax.devices()`,
        across every process after `jax.distributed.initialize()`).
      log_fn: where progress lines go (default: the "jaxlr.sweep" logger at INFO).
      compact: gather active points into smaller blocks between chunks (False: fixed
        blocks that compute stopped points too, frozen).
      prune: None, or a `jaxlr.engine.halving.Halving` rule applied at the end of every rung.
      checkpoint_dir: save the whole sweep state to `checkpoint_dir/sweep.npz` after every
        chunk (atomically; process 0 writes); an existing checkpoint of the same sweep is
        resumed, one of another sweep is refused.
    Returns:
      `SweepResult` (diverged points are flagged, not raised).
    Raises:
      ValueError: bad arguments; `jaxlr.host.checkpoint.CheckpointError` (a ValueError) when
        `checkpoint_dir` holds a checkpoint of another sweep (config, grid, data or rule).
    """
    log_fn = log_fn or log.info
    x_train = np.asarray(data.x_train)
    dtype = x_train.dtype
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"run_sweep: x_train must be floating point, got {dtype}")
    data = Data(
        x_train,
        np.asarray(data.y_train, np.int32),
        np.asarray(data.x_val, dtype),
        np.asarray(data.y_val, np.int32),
    )
    if prune is not None and not hasattr(prune, "rung_epochs"):
        raise ValueError(
            f"run_sweep: prune must be None or a jaxlr.engine.halving.Halving, got {prune!r}"
        )
    n, d = x_train.shape
    if model is None:
        model = _default_model(config, d, np.dtype(dtype))
    devices = tuple(devices) if devices else tuple(jax.devices())
    nd = len(devices)
    s = grid.size
    hp_all = HParams(
        *(np.asarray(v, dtype) for v in grid.hparams[:3]), np.asarray(grid.hparams.seed, np.int32)
    )
    if hp_all.learning_rate.shape != (s,):
        raise ValueError(f"grid.hparams must be arrays [{s}], got {hp_all.learning_rate.shape}")
    shape = (n, data.x_val.shape[0], d)
    if block_size is None:
        block_size = default_block_size(config, model, shape, dtype.itemsize, s, nd)
    if int(block_size) < 1:
        raise ValueError(f"run_sweep: block_size must be >= 1 or None, got {block_size!r}")
    cap = nd * _ceil_div(int(block_size), nd)
    # Balanced blocks: as few as the cap allows, of equal size (padding < one point per
    # device and block); the cap itself is the top of the ladder.
    g_full = nd * _ceil_div(_ceil_div(s, _ceil_div(s, cap)), nd)
    ladder = block_ladder(g_full, nd, LADDER_STEPS_PER_OCTAVE)
    shared_seed = bool(np.all(hp_all.seed == hp_all.seed[0]))
    # Refuse, in one line and before anything is allocated, a block that cannot fit.
    per_device = max(1, g_full // nd)
    resources.check_fits(
        resources.estimate_run_bytes(config, model, shape, dtype.itemsize, points=per_device),
        what=f"sweep block of {g_full} points ({per_device} per device)",
        device=devices[0],
    )
    fns = sweep_functions(config, model, n, devices, shared_seed)
    m = fns.engine.num_batches
    repl = NamedSharding(fns.mesh, P())
    sweep_sh = NamedSharding(fns.mesh, P(SWEEP_AXIS))
    data_dev = Data(*(_put(a, repl) for a in data))

    def put_hp(idx):
        h = HParams(*(v[idx] for v in hp_all))
        if shared_seed:
            return HParams(*(_put(v, sweep_sh) for v in h[:3]), _put(h.seed[0], repl))
        return HParams(*(_put(v, sweep_sh) for v in h))

    t0 = time.perf_counter()
    # Host copy of every point's state (leaves [S, ...]), built block by block.
    host = None
    for idx in plan_blocks(np.arange(s), g_full, ladder):
        part = _to_host(fns.init(put_hp(idx)))
        if host is None:
            host = jax.tree.map(lambda a: np.zeros((s,) + a.shape[1:], a.dtype), part)
        _scatter(host, idx, part)
    # Per point: the history up to the last flush and the chunks' logs since then.
    done: list = [None] * s
    pending: list = [[] for _ in range(s)]
    pruned_rung = np.full(s, -1, np.int64)
    epoch, chunk, computed = 0, 0, 0

    ckpt_path = Path(checkpoint_dir) / _CKPT_NAME if checkpoint_dir is not None else None
    fingerprint = _fingerprint(config, grid, data, prune) if ckpt_path is not None else None
    resumed = ckpt_path is not None and ckpt_path.exists()
    _agree([int(resumed)], "whether a checkpoint exists")
    if resumed:
        host, done, pruned_rung, meta = _load_sweep(ckpt_path, host, s)
        if meta.get("fingerprint") != fingerprint:
            raise ckpt.CheckpointError(
                f"checkpoint {ckpt_path} belongs to another sweep: "
                f"{_fingerprint_diff(meta.get('fingerprint') or {}, fingerprint)} changed; "
                "remove it or use another checkpoint folder"
            )
        epoch, chunk, computed = int(meta["epoch"]), int(meta["chunk"]), int(meta["computed"])
        _agree([epoch, chunk], "the checkpoint's epoch and chunk")
        log_fn(f"sweep: resumed from {ckpt_path} at epoch {epoch} (chunk {chunk})")

    log_fn(
        f"sweep: {s} points, blocks of sizes {list(ladder) if compact else [g_full]}"
        f" on {nd} device(s) ({devices[0].platform}); {config.num_epochs} epochs of {m} steps"
        + (f"; halving every {prune.rung_epochs} epochs" if prune is not None else "")
    )
    fixed = plan_blocks(np.arange(s), g_full)  # the blocks without compaction
    # With stopping or pruning, the next smaller block size is compiled on a background
    # thread while the current blocks run (XLA compiles without the GIL), so the chunk that
    # first needs it does not wait for the compiler. Not across processes: every process
    # must compile and launch the same programs in the same order.
    programs = _Programs(
        fns,
        host,
        hp_all,
        data_dev,
        sweep_sh,
        repl,
        shared_seed,
        background=compact
        and (config.early_stopping or prune is not None)
        and jax.process_count() == 1,
    )
    resident: list[_Block] = []  # blocks on the devices whose host copy is stale

    def sync():
        """Copies the resident blocks' states to the host copy and forgets them."""
        for blk in resident:
            _scatter(host, blk.idx[: blk.real], _take(_to_host(blk.state), slice(0, blk.real)))
        resident.clear()

    active = np.asarray(host.active, bool).copy()
    best_acc = np.nan
    while epoch < config.num_epochs and active.any():
        k = min(config.epochs_per_call, config.num_epochs - epoch)
        if prune is not None:
            k = min(k, prune.rung_epochs - epoch % prune.rung_epochs)
        if compact:
            plan = plan_blocks(np.flatnonzero(active), g_full, ladder)
        else:
            plan = [b for b in fixed if active[b].any()]
        t_chunk = time.perf_counter()
        same = len(plan) == 1 == len(resident) and np.array_equal(plan[0], resident[0].idx)
        if not same:
            sync()
        ran_total, blocks_g = 0, []
        for idx in plan:
            real = len(np.unique(idx))
            if same:
                blk = resident[0]
            else:
                st = jax.tree.map(lambda a, idx=idx: _put(a[idx], sweep_sh), host)
                blk = _Block(idx, real, st, put_hp(idx))
            st, logs = programs.get(len(idx), k)(blk.state, blk.hp, data_dev, epoch)
            logs = jax.tree.map(np.asarray, _to_host(logs))
            blk = blk._replace(state=st)
            active[idx[:real]] = np.asarray(_to_host(st.active))[:real]
            for j in np.flatnonzero(logs.ran[:real].any(axis=1)):
                pending[int(idx[j])].append((epoch * m, StepLog(*(f[j] for f in logs))))
            ran = logs.ran[:real]
            ran_total += int(ran.sum())
            acc = logs.val_accuracy[:real]
            if np.isfinite(acc).any():
                best_acc = np.nanmax([np.nanmax(acc), best_acc])
            computed += len(idx) * k * m
            blocks_g.append(len(idx))
            if len(plan) == 1:
                resident[:] = [blk]
            else:  # several blocks: only one block's state is on the devices at a time
                resident[:] = [blk]
                sync()
        epoch += k
        chunk += 1
        if compact and len(plan) == 1:
            # Sizes the next chunks may need: below this block, down to a quarter of the
            # active points (several points often stop in one chunk).
            n_act = int(active.sum())
            lower = [g for g in ladder if g < len(plan[0])]
            if lower and n_act <= 1.5 * lower[-1]:
                k_next = min(config.epochs_per_call, config.num_epochs - epoch)
                for g in reversed(lower):
                    if 4 * g < n_act:
                        break
                    programs.prefetch(g, k_next)
        note = ""
        if prune is not None and epoch % prune.rung_epochs == 0 and epoch < config.num_epochs:
            sync()
            cut = prune_rung(host.best_loss, active, prune)
            if cut.any():
                rung = epoch // prune.rung_epochs
                pruned_rung[cut] = rung
                host.active[cut] = False
                active[cut] = False
                note = f"  rung {rung}: stopped {int(cut.sum())}, {int(active.sum())} go on"
        if ckpt_path is not None:
            sync()
            meta = {
                "kind": "sweep",
                "fingerprint": fingerprint,
                "epoch": epoch,
                "chunk": chunk,
                "computed": computed,
            }
            done = [_history(done[i], pending[i], m) for i in range(s)]
            pending = [[] for _ in range(s)]
            if jax.process_index() == 0:
                _save_sweep(ckpt_path, host, done, pruned_rung, meta)
        dt = time.perf_counter() - t_chunk
        elapsed = time.perf_counter() - t0
        left = elapsed * (config.num_epochs - epoch) / max(epoch, 1)
        log_fn(
            f"epoch {epoch}/{config.num_epochs}  active {int(active.sum())}/{s}  "
            f"block(s) {blocks_g}  best val_acc {best_acc:.4f}  "
            f"{ran_total / max(dt, 1e-9):,.0f} point-steps/s  elapsed {_fmt_time(elapsed)}  "
            f"left <= {_fmt_time(left)}{note}"
        )
    sync()
    programs.close()

    # Final numbers of the returned parameters, in blocks of the ladder's sizes.
    params_all = returned_params(host)
    metrics = None
    for idx in plan_blocks(np.arange(s), g_full, ladder):
        p = jax.tree.map(lambda a, idx=idx: _put(a[idx], sweep_sh), params_all)
        out = _to_host(fns.evaluate(p, put_hp(idx), data_dev))
        if metrics is None:
            metrics = {
                k: np.zeros((s,) + np.shape(v)[1:], np.asarray(v).dtype) for k, v in out.items()
            }
        for key, v in out.items():
            metrics[key][idx] = np.asarray(v)
    wall = time.perf_counter() - t0
    log_fn(f"sweep done in {wall:.1f} s: {epoch} epochs, {chunk} chunks")
    histories = [_history(done[i], pending[i], m, dtype) for i in range(s)]
    return _assemble(
        grid, config, m, host, params_all, metrics, histories, wall, computed, pruned_rung, prune
    )


def _assemble(
    grid, config, m, state, params, metrics, histories, wall, computed, pruned_rung, prune
) -> SweepResult:
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    metrics["steps"] = np.asarray([len(h["step"]) for h in histories], np.int64)
    # The engine tracks the best check even without early stopping (then nothing stops).
    rows = [
        early_stopping_summary(jax.tree.map(lambda a, i=i: a[i], state), m)
        for i in range(grid.size)
    ]
    es = {
        "stopped": np.asarray([r["stopped"] for r in rows], bool),
        "step": np.asarray([-1 if r["step"] is None else r["step"] for r in rows], np.int64),
        "epoch": np.asarray([-1 if r["epoch"] is None else r["epoch"] for r in rows], np.int64),
        "best_step": np.asarray([r["best_step"] for r in rows], np.int64),
        "best_epoch": np.asarray(
            [-1 if r["best_epoch"] is None else r["best_epoch"] for r in rows], np.int64
        ),
        "best_val_loss": np.asarray([r["best_val_loss"] for r in rows], np.float64),
    }
    return SweepResult(
        grid=grid,
        params=params,
        metrics=metrics,
        early_stopping=es,
        diverged=np.asarray(state.diverged, bool),
        diverge_step=np.asarray(state.diverge_step, np.int64),
        histories=histories,
        wall_seconds=wall,
        config=config,
        num_batches=m,
        point_steps=int(metrics["steps"].sum()),
        computed_point_steps=int(computed),
        pruned_rung=pruned_rung if prune is not None else None,
        prune=prune,
    )


__all__ = [
    "SweepFns",
    "SweepResult",
    "block_ladder",
    "bytes_per_point",
    "default_block_size",
    "mean_over",
    "memory_budget",
    "param_count",
    "plan_blocks",
    "py_scalar",
    "run_sweep",
    "sweep_functions",
]
