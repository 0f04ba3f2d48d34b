"""Blocks of sweep points: how many fit in memory, the ladder of block sizes, their programs.

A sweep (`jaxlr.engine.sweep.run_sweep`) trains its points in blocks of at most a cap (from a
memory estimate, `default_block_size`); with compaction the active points are gathered into
the fewest blocks, each padded to a size of a fixed geometric ladder (`block_ladder`,
`plan_blocks`), so stopped points cost nothing and the number of compiled programs stays
bounded. `Programs` compiles and caches one program per (block size, epochs per chunk),
optionally ahead of need on a background thread.

Dimensions: S sweep points, G points of one block, A active points, N training examples,
V validation examples, D features.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import jax
import numpy as np

from jaxlr.core.objective import Model
from jaxlr.engine import resources
from jaxlr.engine.config import HParams, TrainConfig
from jaxlr.engine.step import TrainState, group_size

# Memory a block may use when the caller gives no budget: a quarter of the host's memory
# (at most 4 GiB) on CPU, half of an accelerator's memory.
_CPU_BUDGET_CAP = 4 << 30
# Block sizes per octave of the compaction ladder (see `block_ladder`): 2 wastes less on
# padding, 1 compiles half as many programs. Each program costs about 1.2 CPU-seconds to
# compile for tdt4265_task2, more than the padding it saves: on the 64-point early-stopping
# grid 1 took 21.5 CPU-s and 2 took 29.1 CPU-s (benchmarks/bench_sweep_scale.py --ladder).
LADDER_STEPS_PER_OCTAVE = 1
# Weight columns (points x parameters per input feature) below which a block's chunk costs no
# less than at this size (`smallest_block`). tdt4265_task2 (one column a point), CPU ms per
# epoch by block size: see WORKSPACE.md (benchmarks/bench_cold_compile.py --sizes).
FLOOR_COLUMNS = 8


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


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pad_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """`indices` padded to `size` with copies of its own points (cycled)."""
    if len(indices) >= size:
        return indices
    return np.concatenate([indices, np.resize(indices, size - len(indices))])


def block_ladder(
    cap: int, num_devices: int = 1, steps_per_octave: int = 1, smallest: int = 2
) -> tuple[int, ...]:
    """The block sizes a compacting sweep may use: a fixed geometric ladder up to `cap`.

    With `steps_per_octave=1` (default) the sizes are num_devices * 2^j below `cap`, then
    `cap`: a block is at most half padding, and there are about log2(cap) compiled programs.
    With 2: num_devices * (2, 3, 4, 6, 8, 12, 16, 24, ...), at most a third of padding and
    twice the programs (`run_sweep` uses `LADDER_STEPS_PER_OCTAVE`). The smallest size is
    `smallest` * num_devices (when `cap` allows; `smallest` a power of two >= 2): on
    accelerators, with a single point per device XLA drops the batch dimension and picks
    other kernels, whose rounding differs (on CPU a point's numbers are the same bits in
    blocks of any size, `jaxlr.engine.step.points_in_groups`). `run_sweep` raises
    `smallest` where smaller blocks cost no less (`smallest_block`).

    Args:
      cap: the largest block (a multiple of `num_devices`).
      num_devices: devices the sweep axis is sharded over.
      steps_per_octave: 1 (powers of two) or 2 (powers of two and 1.5 times them).
      smallest: points per device of the smallest block (a power of two >= 2).
    Returns:
      Increasing sizes, each a multiple of `num_devices`; one compiled program each.
    """
    if cap < num_devices or cap % num_devices:
        raise ValueError(
            f"block_ladder: cap must be a positive multiple of num_devices={num_devices}, got {cap}"
        )
    if steps_per_octave not in (1, 2):
        raise ValueError(f"block_ladder: steps_per_octave must be 1 or 2, got {steps_per_octave}")
    if smallest < 2 or smallest & (smallest - 1):
        raise ValueError(f"block_ladder: smallest must be a power of two >= 2, got {smallest}")
    sizes, g = [], smallest
    while g * num_devices < cap:
        sizes.append(g * num_devices)
        if steps_per_octave == 2 and 3 * g // 2 * num_devices < cap:
            sizes.append(3 * g // 2 * num_devices)
        g *= 2
    return tuple(sizes) + (cap,)


def smallest_block(model: Model, num_features: int, backend: str | None = None) -> int:
    """Points per device of the smallest block worth its own program off the CPU.

    A block's chunk costs at least the passes over the data (every step's batch, the
    training and validation sets at every check), whatever its size; the points add a
    product with [D, G * C] weights, C = parameters per input feature (1 for logistic
    regression, K for softmax, the first hidden width and more for an MLP). Below about
    `FLOOR_COLUMNS` weight columns the data passes dominate, so a smaller block runs no
    faster and only adds a program to compile. On the CPU no block is smaller than one
    group of the sweep (`sweep_group`, applied by `jaxlr.engine.sweep.run_sweep`).

    Args:
      model: the bound model.
      num_features: D.
      backend: unused (kept so callers name the platform they plan for).
    Returns:
      The smallest power of two >= 2 with that many points times C >= `FLOOR_COLUMNS`.
    """
    del backend
    columns = max(1.0, param_count(model) / max(num_features, 1))
    g = 2
    while g * columns < FLOOR_COLUMNS:
        g *= 2
    return g


# With early stopping or pruning a sweep's points stop at different times and compaction
# gathers the active ones into smaller blocks; on the CPU no block is narrower than one group,
# so the group is kept to about 1 / STOPPING_GROUP_FRACTION of the sweep (at least
# MIN_STOPPING_GROUP points) to leave compaction room. See WORKSPACE.md for the measurements.
STOPPING_GROUP_FRACTION = 8
MIN_STOPPING_GROUP = 16


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def sweep_group(
    model: Model,
    num_points: int,
    stops_early: bool,
    backend: str | None = None,
) -> int:
    """Points per group of a sweep on the CPU (`jaxlr.engine.step.points_in_groups`).

    Chosen once per sweep, from the whole sweep (a shard passes its whole grid's size), so
    that every block, shard and resumed run of it computes each point in a group of the
    same width: a point's numbers are then the same bits in all of them. A group makes one
    pass over each batch and each check's data for all its points, so wider is faster (one
    wide product instead of several skinny ones): the widest the shapes allow
    (`jaxlr.engine.step.group_size`: 256 points for logistic regression on MNIST, 64 for
    softmax regression, 1 for the hw3 network), at most the sweep's size rounded up to a
    power of two. When points can stop early (early stopping, pruning) compaction needs
    room below the sweep's width: then at most the sweep's size / STOPPING_GROUP_FRACTION
    (a power of two, at least MIN_STOPPING_GROUP). Off the CPU sweeps are not grouped: 1.

    Args:
      model: the bound model.
      num_points: S, points of the whole sweep.
      stops_early: whether points may stop before the last epoch (early stopping, pruning).
      backend: the platform the sweep runs on (default: JAX's default backend).
    Returns:
      A power of two >= 1.
    """
    if (backend or jax.default_backend()) != "cpu":
        return 1
    wide = group_size(param_count(model) + 1)  # the weights and lambda
    cap = _pow2_at_least(max(1, int(num_points)))
    if stops_early:
        cap = max(MIN_STOPPING_GROUP, _pow2_at_least(ceil_div(num_points, STOPPING_GROUP_FRACTION)))
    return int(min(wide, cap))


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
    nblocks = ceil_div(a, cap)
    per = ceil_div(a, nblocks)
    g = next(s for s in ladder if s >= per) if ladder else per
    return [_pad_indices(indices[i : i + per], g) for i in range(0, a, per)]


class Programs:
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
        # (g, k) -> [compile seconds, seconds a chunk waited for it, compiled ahead of need,
        # used by a chunk]
        self.timings: dict = {}

    def _compile(self, g: int, k: int, ahead: bool = False):
        t0 = time.perf_counter()
        out = self._lower_and_compile(g, k)
        self.timings[(g, k)] = [time.perf_counter() - t0, 0.0, ahead, False]
        return out

    def _lower_and_compile(self, g: int, k: int):
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
            self._done[(g, k)] = self._pool.submit(self._compile, g, k, True)

    def get(self, g: int, k: int):
        """The compiled program of (g, k): (state, hparams, data, start_epoch) -> (state, logs)."""
        with self._lock:
            item = self._done.get((g, k))
        if item is None or isinstance(item, Future):
            t0 = time.perf_counter()
            item = self._compile(g, k) if item is None else item.result()
            self.timings[(g, k)][1] = time.perf_counter() - t0
            self.timings[(g, k)][3] = True
            with self._lock:
                self._done[(g, k)] = item
        return item

    def summary(self) -> str:
        """One line: the programs compiled, their compile time, and how long chunks waited."""
        if not self.timings:
            return ""
        t = self.timings

        def name(g, k):
            return f"{g}" + ("" if k == 1 else f"x{k}")

        sizes = ", ".join(
            name(g, k) + ("*" if t[g, k][2] else "") + ("" if t[g, k][3] else " unused")
            for g, k in sorted(t)
        )
        waits = ", ".join(f"{name(g, k)}: {v[1]:.1f}" for (g, k), v in t.items() if v[1] >= 0.05)
        return (
            f"compiled {len(t)} program(s) (block sizes {sizes}; * ahead of need) in "
            f"{sum(v[0] for v in t.values()):.1f} s; chunks waited "
            f"{sum(v[1] for v in t.values()):.1f} s for the compiler ({waits or 'none'})"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class Block(NamedTuple):
    """One compiled block resident on the devices between chunks."""

    idx: np.ndarray  # [G] point indices (padded with copies)
    real: int  # the first `real` entries are distinct points
    state: TrainState  # device arrays [G, ...]
    hp: HParams  # device arrays [G] (seed unbatched with a shared seed)


def take(tree, idx):
    return jax.tree.map(lambda a: np.asarray(a)[idx], tree)


def scatter(host, idx, values):
    """host[idx] = values, leaf by leaf (host leaves are writable numpy arrays)."""

    def one(h, v):
        h[idx] = np.asarray(v)

    jax.tree.map(one, host, values)


__all__ = [
    "FLOOR_COLUMNS",
    "LADDER_STEPS_PER_OCTAVE",
    "Block",
    "Programs",
    "block_ladder",
    "bytes_per_point",
    "ceil_div",
    "default_block_size",
    "memory_budget",
    "param_count",
    "plan_blocks",
    "scatter",
    "smallest_block",
    "sweep_group",
    "take",
]
