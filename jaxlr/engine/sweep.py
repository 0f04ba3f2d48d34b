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

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlr.core.objective import Model
from jaxlr.engine import blocks, resources
from jaxlr.engine.config import HParams, TrainConfig, check_hparam_values
from jaxlr.engine.data_checks import check_data, check_inputs
from jaxlr.engine.driver import ChunkOut, drive
from jaxlr.engine.events import Observer
from jaxlr.engine.grid import Grid
from jaxlr.engine.halving import prune_rung
from jaxlr.engine.progress import default_observers
from jaxlr.engine.results import early_stopping_summary
from jaxlr.engine.step import Data, StepLog, points_in_groups
from jaxlr.engine.sweep_result import SweepResult
from jaxlr.engine.train import (
    make_engine,
    model_for,
    returned_params,
)
from jaxlr.host import checkpoint as ckpt

log = logging.getLogger("jaxlr.sweep")

SWEEP_AXIS = "sweep"


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
    group: int = 0,
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
        data order and the mini-batch gather are shared by all points (on accelerators one
        matrix product [B, D] x [D, G K] instead of G products; on CPU one such product per
        group of points, see `jaxlr.engine.step.points_in_groups`).
      group: points per group on CPU (`jaxlr.engine.blocks.sweep_group`; 0: the widest
        the shapes allow).
    Returns:
      `SweepFns`.
    """
    engine = make_engine(config, model, num_train, group)
    mesh = _mesh(devices or jax.devices())
    sweep = NamedSharding(mesh, P(SWEEP_AXIS))
    hp_axes = HParams(0, 0, 0, None if shared_seed else 0)

    def init(hparams):
        return jax.vmap(engine.init, in_axes=(hp_axes,))(hparams)

    def run(state, hparams, data, start_epoch, num_epochs):
        def one(s, h):
            return engine.run(s, h, data, start_epoch, num_epochs)

        return jax.vmap(one, in_axes=(0, hp_axes))(state, hparams)

    # In the same groups (on CPU): a point's final numbers do not depend on its block's width.
    evaluate_one = points_in_groups(lambda p, h, d: engine.evaluate(p, h, d), group)

    def evaluate(params, hparams, data):
        return jax.vmap(evaluate_one, in_axes=(0, hp_axes, None))(params, hparams, data)

    return SweepFns(
        init=jax.jit(init, out_shardings=sweep),
        run=jax.jit(run, static_argnums=4, out_shardings=sweep),
        evaluate=jax.jit(evaluate, out_shardings=sweep),
        engine=engine,
        mesh=mesh,
    )


@functools.lru_cache(maxsize=64)
def default_model(config: TrainConfig, num_features: int, dtype: np.dtype) -> Model:
    """The model `config` describes, bound once per (config, D, dtype): repeated sweeps get
    the same `Model` object, hence the same compiled code."""
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
# The sweep.


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


_CKPT_NAME = "sweep.npz"


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
    progress: bool | str = "auto",
    observers: Sequence[Observer] = (),
    shared_seed: bool | None = None,
    min_block: int = 1,
    group: int | None = None,
) -> SweepResult:
    """Trains every point of `grid`: compiled, vmapped chunks of epochs over blocks of points.

    All points advance together, one chunk (`config.epochs_per_call` epochs, cut at rung
    ends) at a time. With `compact`, before each chunk the points still active are gathered
    into the fewest blocks of at most `block_size` points, each padded (with copies of its
    own points, whose results are dropped) to the smallest size of `block_ladder`: stopped
    points cost nothing, and the number of compiled programs stays bounded. A point's
    numbers do not depend on the block it ran in: on CPU bit for bit (its loss, gradient,
    checks and final numbers are computed in groups of a fixed number of points,
    `jaxlr.engine.step.points_in_groups`); on other backends up to rounding.

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
      progress: a progress bar (`jaxlr.engine.progress.ProgressBar`): "auto" shows one when
        stderr is a terminal or in a notebook, True always, False never.
      observers: more `jaxlr.engine.events.Observer`s (e.g. TensorBoard output); the host
        loop is `jaxlr.engine.driver.drive`, as for `jaxlr.engine.train.fit`.
      shared_seed: pass the seed unbatched (one data order for every point), or batched;
        None (default): unbatched exactly when every point of `grid` has the same seed. A
        shard of a larger grid (`jaxlr.engine.shards`) passes the whole grid's choice, so
        that its points run the same program as in the whole sweep.
      min_block: the fewest points a block holds (padded with copies; rounded up to a
        multiple of the device count, at most `block_size`). A shard passes the whole
        grid's smallest block (2 per device), so a shard of one point does not run alone in
        a block (on accelerators XLA would drop the batch dimension and round differently).
      group: points per group on CPU (`jaxlr.engine.step.points_in_groups`); None
        (default): `jaxlr.engine.blocks.sweep_group` of this grid. A shard passes its whole
        grid's, so that its points are computed in groups of the same width.
    Returns:
      `SweepResult` (diverged points are flagged, not raised).
    Raises:
      ValueError: bad arguments; `jaxlr.core.inputs.InputError` (a ValueError): labels the
        model cannot represent, non-finite data, a batch larger than the training set;
        `jaxlr.host.checkpoint.CheckpointError` (a ValueError) when `checkpoint_dir` holds a
        checkpoint of another sweep (config, grid, data or rule), or one in use.
    """
    data = _checked_data(config, grid, data, model, prune)
    dtype = data.x_train.dtype
    n, d = data.x_train.shape
    if model is None:
        model = default_model(config, d, np.dtype(dtype))
    devices = tuple(devices) if devices else tuple(jax.devices())
    nd = len(devices)
    s = grid.size
    hp_all = _grid_hparams(grid, dtype)
    shape = (n, data.x_val.shape[0], d)
    if group is None:
        group = group_for(config, model, s, prune, devices)
    if int(group) < 1:
        raise ValueError(f"run_sweep: group must be >= 1 or None, got {group!r}")
    group = int(group)
    g_full, ladder = _block_sizes(config, model, shape, dtype, s, nd, block_size, min_block, group)
    shared_seed = _shared_seed(hp_all, shared_seed)
    _check_block_fits(config, model, shape, dtype, g_full, devices)
    fns = sweep_functions(config, model, n, devices, shared_seed, group)
    m = fns.engine.num_batches
    repl = NamedSharding(fns.mesh, P())
    sweep_sh = NamedSharding(fns.mesh, P(SWEEP_AXIS))
    data_dev = Data(*(_put(a, repl) for a in data))
    put_hp = _hparams_putter(hp_all, shared_seed, sweep_sh, repl)
    ckpt_path = Path(checkpoint_dir) / _CKPT_NAME if checkpoint_dir is not None else None
    runner = _SweepRunner(
        config,
        grid,
        fns,
        hp_all,
        data_dev,
        put_hp,
        sweep_sh,
        repl,
        shared_seed,
        g_full,
        ladder,
        compact,
        prune,
        dtype,
        log_fn or log.info,
    )
    sizes = list(ladder) if compact else [g_full]
    result, _ = drive(
        runner,
        config=config,
        points=[grid.point(i) for i in range(s)],
        num_epochs=config.num_epochs,
        epochs_per_call=config.epochs_per_call,
        rung_epochs=prune.rung_epochs if prune is not None else None,
        checkpoint_path=ckpt_path,
        fingerprint=_fingerprint(config, grid, data, prune) if ckpt_path is not None else None,
        observers=[*default_observers(log_fn, log.info, progress), *observers],
        description=_description(config, s, sizes, devices, m, prune),
        dtype=dtype,
    )
    return result


def group_for(config: TrainConfig, model: Model, num_points: int, prune, devices) -> int:
    """Points per group of a sweep of `num_points` points (`jaxlr.engine.blocks.sweep_group`):
    what `run_sweep` uses by default, and what a shard of a larger sweep passes (its whole
    grid's)."""
    stops_early = bool(config.early_stopping) or prune is not None
    return blocks.sweep_group(model, num_points, stops_early, devices[0].platform)


def _description(config, num_points: int, sizes: list, devices, num_batches: int, prune) -> str:
    """The sweep's first progress line."""
    return (
        f"sweep: {num_points} points, blocks of sizes {sizes} on {len(devices)} device(s) "
        f"({devices[0].platform}); {config.num_epochs} epochs of {num_batches} steps"
        + (f"; halving every {prune.rung_epochs} epochs" if prune is not None else "")
    )


def _check_block_fits(config, model, shape, dtype, g_full: int, devices) -> None:
    """Refuses, in one line and before anything is allocated, a block that cannot fit."""
    per_device = max(1, g_full // len(devices))
    resources.check_fits(
        resources.estimate_run_bytes(config, model, shape, dtype.itemsize, points=per_device),
        what=f"sweep block of {g_full} points ({per_device} per device)",
        device=devices[0],
    )


def _checked_data(config, grid, data, model, prune) -> Data:
    """`data` checked (floats, labels, finite values, grid values, rule) and cast for a sweep."""
    x_train = np.asarray(data.x_train)
    dtype = x_train.dtype
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"run_sweep: x_train must be floating point, got {dtype}")
    check_data(data, "run_sweep")
    check_inputs(config, data, "run_sweep", model)
    check_hparam_values(*grid.hparams[:3], where="run_sweep: grid")
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
    if prune is not None and int(prune.rung_epochs) >= int(config.num_epochs):
        # Points are ranked at rung ends before the last epoch: with none, nothing is pruned.
        raise ValueError(
            f"run_sweep: prune.rung_epochs {prune.rung_epochs} must be less than "
            f"config.num_epochs {config.num_epochs} (halving ranks the points at rung ends "
            f"before the last epoch; with none it prunes nothing)"
        )
    return data


def _grid_hparams(grid: Grid, dtype) -> HParams:
    """The grid's hyper-parameters as host arrays [S] (knobs in `dtype`, int32 seeds)."""
    s = grid.size
    hp_all = HParams(
        *(np.asarray(v, dtype) for v in grid.hparams[:3]), np.asarray(grid.hparams.seed, np.int32)
    )
    if hp_all.learning_rate.shape != (s,):
        raise ValueError(f"grid.hparams must be arrays [{s}], got {hp_all.learning_rate.shape}")
    return hp_all


def _block_sizes(config, model, shape, dtype, s, nd, block_size, min_block, group):
    """(G, ladder): the full block's size and the compaction ladder of a sweep of S points.

    On one CPU device with groups (`group` > 1) every block is whole groups: its size is a
    multiple of `group`, and the ladder starts at one group (a narrower block would be
    padded to one inside `jaxlr.engine.step.points_in_groups` and cost as much). On several
    devices a block is a multiple of the device count from 2 per device, as without groups
    (the groups are cut from the whole block, padded where it is narrower).
    """
    if block_size is None:
        block_size = blocks.default_block_size(config, model, shape, dtype.itemsize, s, nd)
    if int(block_size) < 1:
        raise ValueError(f"run_sweep: block_size must be >= 1 or None, got {block_size!r}")
    unit = nd if nd > 1 else max(1, int(group))
    cap = unit * blocks.ceil_div(int(block_size), unit)
    # Balanced blocks: as few as the cap allows, of equal size (padding < one unit per
    # block); the cap itself is the top of the ladder.
    g_full = unit * blocks.ceil_div(blocks.ceil_div(s, blocks.ceil_div(s, cap)), unit)
    if int(min_block) < 1:
        raise ValueError(f"run_sweep: min_block must be >= 1, got {min_block!r}")
    g_full = max(g_full, min(cap, unit * blocks.ceil_div(int(min_block), unit)))
    if nd > 1:
        smallest = 2  # 2 per device, so compaction still frees devices' work
    elif group > 1:
        smallest = int(group)
    else:
        # No block below the width where an epoch stops getting cheaper (`smallest_block`).
        smallest = blocks.smallest_block(model, shape[2])
    return g_full, blocks.block_ladder(g_full, nd, blocks.LADDER_STEPS_PER_OCTAVE, max(2, smallest))


def _shared_seed(hp_all: HParams, shared_seed: bool | None) -> bool:
    """Whether the seed is passed unbatched (None: exactly when every point has the same)."""
    same = bool(np.all(hp_all.seed == hp_all.seed[0]))
    if shared_seed is None:
        return same
    if shared_seed and not same:
        raise ValueError("run_sweep: shared_seed=True needs every point to have the same seed")
    return bool(shared_seed)


def _hparams_putter(hp_all: HParams, shared_seed: bool, sweep_sh, repl) -> Callable:
    """idx -> the hyper-parameters of those points on the devices (a shared seed replicated)."""

    def put_hp(idx):
        h = HParams(*(v[idx] for v in hp_all))
        if shared_seed:
            return HParams(*(_put(v, sweep_sh) for v in h[:3]), _put(h.seed[0], repl))
        return HParams(*(_put(v, sweep_sh) for v in h))

    return put_hp


class _SweepRunner:
    """The compiled side of a sweep, for `jaxlr.engine.driver.drive`: a host copy of every
    point's state, blocks of active points on the devices, compaction and halving."""

    kind = "sweep"

    def __init__(
        self,
        config,
        grid,
        fns,
        hp_all,
        data_dev,
        put_hp,
        sweep_sh,
        repl,
        shared_seed,
        g_full,
        ladder,
        compact,
        prune,
        dtype,
        log_fn,
    ):
        s = grid.size
        self.log_fn = log_fn
        self.config, self.grid, self.fns = config, grid, fns
        self.num_points, self.num_batches = s, fns.engine.num_batches
        self.hp_all, self.data_dev, self.put_hp = hp_all, data_dev, put_hp
        self.sweep_sh = sweep_sh
        self.g_full, self.ladder, self.compact, self.prune = g_full, ladder, compact, prune
        self.dtype = dtype
        # Host copy of every point's state (leaves [S, ...]), built block by block.
        host = None
        for idx in blocks.plan_blocks(np.arange(s), g_full, ladder):
            part = _to_host(fns.init(put_hp(idx)))
            if host is None:
                host = jax.tree.map(lambda a: np.zeros((s,) + a.shape[1:], a.dtype), part)
            blocks.scatter(host, idx, part)
        self.host = host
        self.pruned_rung = np.full(s, -1, np.int64)
        self._active = np.asarray(host.active, bool).copy()
        self.fixed = blocks.plan_blocks(np.arange(s), g_full)  # the blocks without compaction
        # With stopping or pruning, the next smaller block size is compiled on a background
        # thread while the current blocks run (XLA compiles without the GIL), so the chunk
        # that first needs it does not wait for the compiler. Not across processes: every
        # process must compile and launch the same programs in the same order.
        self.programs = blocks.Programs(
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
        self.resident: list[blocks.Block] = []  # blocks on the devices whose host copy is stale

    def sync(self) -> None:
        """Copies the resident blocks' states to the host copy and forgets them."""
        for blk in self.resident:
            part = blocks.take(_to_host(blk.state), slice(0, blk.real))
            blocks.scatter(self.host, blk.idx[: blk.real], part)
        self.resident.clear()

    def active(self) -> np.ndarray:
        return self._active

    def run_chunk(self, epoch: int, k: int) -> ChunkOut:
        config, m, active = self.config, self.num_batches, self._active
        if self.compact:
            plan = blocks.plan_blocks(np.flatnonzero(active), self.g_full, self.ladder)
        else:
            plan = [b for b in self.fixed if active[b].any()]
        resident = self.resident
        same = len(plan) == 1 == len(resident) and np.array_equal(plan[0], resident[0].idx)
        if not same:
            self.sync()
        new, ran_total, computed, blocks_g = {}, 0, 0, []
        for idx in plan:
            real = len(np.unique(idx))
            if same:
                blk = resident[0]
            else:
                st = jax.tree.map(lambda a, idx=idx: _put(a[idx], self.sweep_sh), self.host)
                blk = blocks.Block(idx, real, st, self.put_hp(idx))
            st, logs = self.programs.get(len(idx), k)(blk.state, blk.hp, self.data_dev, epoch)
            logs = jax.tree.map(np.asarray, _to_host(logs))
            blk = blk._replace(state=st)
            active[idx[:real]] = np.asarray(_to_host(st.active))[:real]
            for j in np.flatnonzero(logs.ran[:real].any(axis=1)):
                new[int(idx[j])] = StepLog(*(f[j] for f in logs))
            ran_total += int(logs.ran[:real].sum())
            computed += len(idx) * k * m
            blocks_g.append(len(idx))
            resident[:] = [blk]
            if len(plan) > 1:  # several blocks: only one block's state is on the devices
                self.sync()
        epoch += k
        if self.compact and len(plan) == 1:
            # Sizes the next chunks may need: below this block, down to a quarter of the
            # active points (several points often stop in one chunk).
            n_act = int(active.sum())
            lower = [g for g in self.ladder if g < len(plan[0])]
            if lower and n_act <= 1.5 * lower[-1]:
                k_next = min(config.epochs_per_call, config.num_epochs - epoch)
                for g in reversed(lower):
                    if 4 * g < n_act:
                        break
                    self.programs.prefetch(g, k_next)
        return ChunkOut(new, ran_total, computed, {"blocks": blocks_g})

    def after_chunk(self, epoch: int) -> str:
        prune = self.prune
        if prune is None or epoch % prune.rung_epochs or epoch >= self.config.num_epochs:
            return ""
        self.sync()
        cut = prune_rung(self.host.best_loss, self._active, prune)
        if not cut.any():
            return ""
        rung = epoch // prune.rung_epochs
        self.pruned_rung[cut] = rung
        self.host.active[cut] = False
        self._active[cut] = False
        return f"rung {rung}: stopped {int(cut.sum())}, {int(self._active.sum())} go on"

    def snapshot(self) -> dict:
        self.sync()
        return {"state": self.host, "pruned_rung": np.asarray(self.pruned_rung)}

    def restore(self, flat, path) -> None:
        state = ckpt.restore_tree(
            {k: v for k, v in flat.items() if k.startswith("state/")},
            self.host,
            prefix="state",
            path=path,
        )
        self.host = jax.tree.map(np.array, state)  # writable copies
        self.pruned_rung = np.array(flat["pruned_rung"])
        self._active = np.asarray(self.host.active, bool).copy()
        self.resident.clear()

    def finish(self, histories: list[dict], info) -> tuple[SweepResult, list[dict]]:
        self.sync()
        self.programs.close()
        if self.programs.summary():
            self.log_fn("sweep: " + self.programs.summary())
        s, grid = self.num_points, self.grid
        # Final numbers of the returned parameters, in blocks of the ladder's sizes.
        params_all = returned_params(self.host)
        metrics = None
        for idx in blocks.plan_blocks(np.arange(s), self.g_full, self.ladder):
            p = jax.tree.map(lambda a, idx=idx: _put(a[idx], self.sweep_sh), params_all)
            out = _to_host(self.fns.evaluate(p, self.put_hp(idx), self.data_dev))
            if metrics is None:
                metrics = {
                    k: np.zeros((s,) + np.shape(v)[1:], np.asarray(v).dtype) for k, v in out.items()
                }
            for key, v in out.items():
                metrics[key][idx] = np.asarray(v)
        result = _assemble(
            grid,
            self.config,
            self.num_batches,
            self.host,
            params_all,
            metrics,
            histories,
            info.wall_seconds,
            info.computed,
            self.pruned_rung,
            self.prune,
        )
        return result, result.records()

    def close(self) -> None:
        self.programs.close()


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
    "run_sweep",
    "sweep_functions",
]
