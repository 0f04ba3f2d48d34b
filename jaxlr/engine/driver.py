"""The one host driver of training: chunks of epochs, resume, checkpoints, histories, observers.

A single run (`jaxlr.engine.train.fit`) and a sweep of S points (`jaxlr.engine.sweep.run_sweep`)
differ only in their compiled programs and in how they hold their state on the devices. Each
gives `drive` a `Runner` that knows those; `drive` owns everything around them, once:

- the loop: chunks of `epochs_per_call` epochs (cut at rung ends), until the last epoch or
  until no point is active;
- histories: each chunk's step logs become per-point history rows (`history_from_logs`),
  appended as they arrive;
- checkpoints: after every chunk the runner's state, the histories so far and the loop's
  counters go to one file, atomically (process 0 writes); an existing checkpoint of the same
  work (same `fingerprint`) is resumed, one of other work is refused in one line; the
  checkpoint's lock (`jaxlr.host.checkpoint.checkpoint_lock`) is held for the whole drive, so a
  second process training into the same file is refused at once, before it trains;
- observers (`Observer`): `on_start` (with the histories of a resumed run), `on_chunk` with
  each chunk's new rows per point, `on_end` with every point's final record. Progress lines
  (`ProgressLog`), a progress bar (`ProgressBar`) and TensorBoard output
  (`jaxlr.report.tracking.TensorBoardObserver`) are observers; `default_observers` picks the
  progress display. The events and `Observer` live in `jaxlr.engine.events`, the progress
  displays in `jaxlr.engine.progress`.

Dimensions: S points (1 for a single run), T steps of a chunk, M batches per epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from jaxlr.engine.events import Chunk, End, Observer, Start
from jaxlr.engine.step import StepLog
from jaxlr.host import checkpoint as ckpt

log = logging.getLogger("jaxlr.driver")

_HIST_STEP_KEYS = ("step", "epoch", "train_loss")
_HIST_CHECK_KEYS = ("check_step", "check_epoch", "val_loss", "val_accuracy", "train_accuracy")


# ---------------------------------------------------------------------------------------------
# Histories.


def history_from_logs(logs: StepLog, num_batches_per_epoch: int, start_step: int = 0) -> dict:
    """Turns stacked step logs of one run into the history arrays.

    Args:
      logs: `StepLog` of numpy arrays [T] covering steps start_step .. start_step + T - 1.
      num_batches_per_epoch: M.
      start_step: global step of the first entry.
    Returns:
      dict with "step", "epoch", "train_loss" (steps that ran) and "check_step",
      "check_epoch", "val_loss", "val_accuracy", "train_accuracy" (checks).
    """
    logs = jax.tree.map(np.asarray, logs)
    steps = start_step + np.arange(len(logs.ran))
    ran = logs.ran.astype(bool)
    chk = logs.is_check.astype(bool)
    return {
        "step": steps[ran],
        "epoch": steps[ran] // num_batches_per_epoch,
        "train_loss": logs.train_loss[ran],
        "check_step": steps[chk],
        "check_epoch": steps[chk] // num_batches_per_epoch,
        "val_loss": logs.val_loss[chk],
        "val_accuracy": logs.val_accuracy[chk],
        "train_accuracy": logs.train_accuracy[chk],
    }


def empty_history(num_batches_per_epoch: int, dtype) -> dict:
    """A history with no step (arrays of length 0, losses in `dtype`)."""
    z = np.zeros(0, dtype)
    return history_from_logs(StepLog(z.astype(bool), z, z.astype(bool), z, z, z), 1)


def concat_histories(parts: list[dict]) -> dict:
    """Concatenates histories of consecutive chunks."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pack_histories(histories: Sequence[dict | None]) -> dict:
    """Every point's history as flat arrays with per-point lengths (a checkpoint's form)."""
    out = {}
    for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
        out[name] = np.asarray([len(h[keys[0]]) if h else 0 for h in histories], np.int64)
        for k in keys:
            parts = [np.asarray(h[k]) for h in histories if h]
            out[k] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def _unpack_histories(flat: Mapping[str, np.ndarray], num_points: int) -> list[dict | None]:
    histories: list[dict | None] = []
    offs = {"step_len": 0, "check_len": 0}
    for i in range(num_points):
        h = {}
        for keys, name in ((_HIST_STEP_KEYS, "step_len"), (_HIST_CHECK_KEYS, "check_len")):
            n = int(flat[f"history/{name}"][i])
            for k in keys:
                h[k] = np.asarray(flat[f"history/{k}"][offs[name] : offs[name] + n])
            offs[name] += n
        histories.append(h if len(h["step"]) or len(h["check_step"]) else None)
    return histories


# ---------------------------------------------------------------------------------------------
# What runners and observers exchange with the driver.


class ChunkOut(NamedTuple):
    """What a runner reports of one chunk.

    Attributes:
      logs: point index -> its `StepLog` [T] of the chunk (host arrays), for the points that
        ran at least one step.
      steps_ran: steps that ran, summed over points.
      computed: point-steps the compiled programs computed (stopped points and padding too).
      detail: runner-specific numbers for progress displays (e.g. "blocks" of a sweep, or
        "diverged", "diverge_step", "diverge_reason" of a single run).
    """

    logs: dict[int, StepLog]
    steps_ran: int
    computed: int
    detail: dict


class Runner(Protocol):
    """The compiled side of a run or sweep, as `drive` uses it.

    Attributes:
      kind: "run" (one run) or "sweep".
      num_points: S.
      num_batches: M.
    """

    kind: str
    num_points: int
    num_batches: int

    def active(self) -> np.ndarray:
        """[S] bool: the points still training (host values)."""

    def run_chunk(self, epoch: int, num_epochs: int) -> ChunkOut:
        """Runs epochs epoch .. epoch + num_epochs - 1 of the active points."""

    def after_chunk(self, epoch: int) -> str:
        """Rules applied between chunks (e.g. halving at a rung's end); a note for progress."""

    def snapshot(self) -> dict:
        """The state to checkpoint: a pytree of host arrays (key "state" and the runner's own)."""

    def restore(self, flat: Mapping[str, np.ndarray], path) -> None:
        """Takes back a checkpoint's arrays (`jaxlr.host.checkpoint.load_flat`)."""

    def finish(self, histories: list[dict], info: Drive) -> tuple[Any, list[dict]]:
        """The result object and one final record per point (raises for a failed run)."""

    def close(self) -> None:
        """Releases what the runner holds (called whatever happens)."""


class Drive(NamedTuple):
    """The driver's own numbers, handed to `Runner.finish`.

    Attributes:
      epoch: the last epoch reached; chunks: chunks run in all; computed: point-steps
      computed in all; wall_seconds: time since the driver started; chunk_seconds and
      chunk_steps: wall time and steps of each chunk of this call (for timings).
    """

    epoch: int
    chunks: int
    computed: int
    wall_seconds: float
    chunk_seconds: list[float]
    chunk_steps: list[int]


def _shown(value) -> str:
    """A fingerprint value as the user gave it: a float32 knob widened to a Python float
    (0.02500000037252903) is written as the float32 it is (0.025)."""
    if isinstance(value, float) and math.isfinite(value):
        f32 = np.float32(value)
        if float(f32) == value:
            return str(f32)
    return repr(value)


def fingerprint_diff(saved: Mapping, now: Mapping) -> str:
    """One phrase naming what changed between two fingerprints (dicts of dicts)."""
    parts = []
    for key in sorted(set(saved) | set(now), key=lambda k: list(now).index(k) if k in now else 99):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            shown = ", ".join(f"{k} {_shown(a.get(k))} -> {_shown(b.get(k))}" for k in fields[:3])
            parts.append(f"{key} ({shown})")
        else:
            parts.append(f"{key} ({_shown(a)} -> {_shown(b)})")
    return "; ".join(parts)


def agree(values: Sequence[int], what: str) -> None:
    """Raises unless every process holds the same integers (no-op in one process)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.asarray(values, np.int64)
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not (every == mine[None]).all():
        raise RuntimeError(
            f"the processes disagree on {what}: {every.tolist()} (one process per row); "
            "every process must see the same data and checkpoint folder"
        )


def _save(path: Path, runner: Runner, histories, meta: dict) -> None:
    tree = {**runner.snapshot(), "history": _pack_histories(histories)}
    if jax.process_index() == 0:
        ckpt.save_checkpoint(path, tree, step=int(meta["epoch"]), meta=meta)


# ---------------------------------------------------------------------------------------------
# The loop.


def drive(
    runner: Runner,
    *,
    config,
    points: list[dict],
    num_epochs: int,
    epochs_per_call: int,
    rung_epochs: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    fingerprint: dict | None = None,
    resume: bool = True,
    observers: Sequence[Observer] = (),
    stop_after_epochs: int | None = None,
    description: str = "",
    dtype=np.float32,
) -> tuple[Any, End]:
    """Trains what `runner` holds, chunk by chunk, and returns its result.

    Args:
      runner: the compiled side (`Runner`), its state initialised.
      config: the static config (for observers).
      points: one dict of hyper-parameters per point (for observers).
      num_epochs: epochs of the full run.
      epochs_per_call: epochs per chunk (cut at rung ends).
      rung_epochs: with a pruning rule, its rung length: chunks end at rung ends.
      checkpoint_path: file to checkpoint into after every chunk (atomically, process 0
        writes); an existing checkpoint with the same `fingerprint` is resumed, one with
        another is refused. Its lock (`jaxlr.host.checkpoint.checkpoint_lock`) is held for
        the whole call: a second process training into it is refused at once.
      resume: False: an existing checkpoint is not read (it is overwritten after the first
        chunk).
      fingerprint: JSON-ready dict of what a checkpoint must match (config, hparams, grid,
        data, rules).
      observers: receive start, chunk and end events (in order); closed at the end, also
        after an error.
      stop_after_epochs: end the loop after this many epochs of this call (tests of resuming).
      description: a line observers show before the first chunk.
      dtype: the losses' dtype (for the histories of points that never ran).
    Returns:
      (the runner's result, the `End` event).
    Raises:
      jaxlr.host.checkpoint.CheckpointError: `checkpoint_path` holds a checkpoint of other
        work (one line naming what changed), a corrupt one, or is in use by another process
        (one line naming it); what the runner raises.
    """
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    held = contextlib.ExitStack()
    if path is not None:
        _lock(held, path)
    try:
        return _drive_held(
            runner,
            path,
            config=config,
            points=points,
            num_epochs=num_epochs,
            epochs_per_call=epochs_per_call,
            rung_epochs=rung_epochs,
            fingerprint=fingerprint,
            resume=resume,
            observers=observers,
            stop_after_epochs=stop_after_epochs,
            description=description,
            dtype=dtype,
        )
    finally:
        held.close()


def _lock(held: contextlib.ExitStack, path: Path) -> None:
    """Takes the checkpoint's lock into `held` (process 0; every process learns whether it
    could, so all of them fail together)."""
    err = None
    if jax.process_index() == 0:
        try:
            held.enter_context(ckpt.checkpoint_lock(path))
        except (ckpt.CheckpointError, OSError) as e:
            err = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = np.asarray(multihost_utils.process_allgather(np.asarray([err is None])))
        if err is None and not ok.all():
            held.close()
            raise ckpt.CheckpointError(f"process 0 could not take checkpoint {path}")
    if err is not None:
        raise err


def _resume(runner: Runner, path: Path | None, fingerprint, resume) -> tuple:
    """Reads a checkpoint of the same work, if there is one to resume.

    Returns:
      (per point its history so far or None, epoch, chunks, computed, whether it resumed).
    """
    done: list[dict | None] = [None] * runner.num_points
    epoch, chunks, computed = 0, 0, 0
    resumed = path is not None and resume and path.exists()
    agree([int(resumed)], "whether a checkpoint exists")
    if resumed:
        flat, meta = ckpt.load_flat(path)
        if meta.get("fingerprint") != fingerprint:
            raise ckpt.CheckpointError(
                f"checkpoint {path} belongs to another {runner.kind}: "
                f"{fingerprint_diff(meta.get('fingerprint') or {}, fingerprint or {})} changed; "
                "remove it or use another checkpoint path"
            )
        runner.restore(flat, path)
        done = _unpack_histories(flat, runner.num_points)
        epoch, chunks, computed = int(meta["epoch"]), int(meta["chunk"]), int(meta["computed"])
        agree([epoch, chunks], "the checkpoint's epoch and chunk")
    return done, epoch, chunks, computed, resumed


def _merge_parts(done: list[dict | None], parts: list[list[dict]]) -> list[dict | None]:
    """Each point's history so far: its chunks in `parts` appended to `done` (both updated)."""
    out = []
    for i in range(len(done)):
        if parts[i]:
            done[i] = concat_histories(([done[i]] if done[i] else []) + parts[i])
            parts[i] = []
        out.append(done[i])
    return out


def _chunk_rows(out: ChunkOut, parts: list[list[dict]], m: int, epoch: int) -> dict[int, dict]:
    """A chunk's history rows per point that ran, also appended to that point's `parts`."""
    new = {}
    for i, logs in out.logs.items():
        part = history_from_logs(logs, m, start_step=epoch * m)
        parts[i].append(part)
        new[i] = part
    return new


def _drive_held(
    runner: Runner,
    path: Path | None,
    *,
    config,
    points,
    num_epochs,
    epochs_per_call,
    rung_epochs,
    fingerprint,
    resume,
    observers,
    stop_after_epochs,
    description,
    dtype,
) -> tuple[Any, End]:
    m = runner.num_batches
    done, epoch, chunks, computed, resumed = _resume(runner, path, fingerprint, resume)
    parts: list[list[dict]] = [[] for _ in range(runner.num_points)]  # chunks since `done`
    t0 = time.perf_counter()
    try:
        note = f"{runner.kind}: resumed from {path} at epoch {epoch} (chunk {chunks})"
        start = Start(
            runner.kind,
            points,
            config,
            num_epochs,
            m,
            epoch,
            list(done),
            description,
            note if resumed else "",
        )
        for ob in observers:
            ob.on_start(start)
        epochs_done, chunk_seconds, chunk_steps = 0, [], []
        active = np.asarray(runner.active(), bool)
        while epoch < num_epochs and active.any():
            k = min(epochs_per_call, num_epochs - epoch)
            if rung_epochs:
                k = min(k, rung_epochs - epoch % rung_epochs)
            t_chunk = time.perf_counter()
            out = runner.run_chunk(epoch, k)
            new = _chunk_rows(out, parts, m, epoch)
            epoch += k
            chunks += 1
            epochs_done += k
            computed += out.computed
            note = runner.after_chunk(epoch)
            if path is not None:
                meta = {"kind": runner.kind, "fingerprint": fingerprint, "epoch": epoch}
                meta.update(chunk=chunks, computed=computed)
                _save(path, runner, _merge_parts(done, parts), meta)
            active = np.asarray(runner.active(), bool)
            dt = time.perf_counter() - t_chunk
            chunk_seconds.append(dt)
            chunk_steps.append(out.steps_ran)
            elapsed = time.perf_counter() - t0
            ran = out.steps_ran
            event = Chunk(
                epoch, num_epochs, new, active, ran, dt, elapsed, epochs_done, note, out.detail
            )
            for ob in observers:
                ob.on_chunk(event)
            if stop_after_epochs is not None and epochs_done >= stop_after_epochs:
                break
        whole = [h if h is not None else empty_history(m, dtype) for h in _merge_parts(done, parts)]
        info = Drive(epoch, chunks, computed, time.perf_counter() - t0, chunk_seconds, chunk_steps)
        result, records = runner.finish(whole, info)
        end = End(records, whole, time.perf_counter() - t0, epoch, chunks)
        for ob in observers:
            ob.on_end(end)
        return result, end
    finally:
        runner.close()
        for ob in observers:
            ob.close()


__all__ = [
    "ChunkOut",
    "Drive",
    "Runner",
    "agree",
    "concat_histories",
    "drive",
    "empty_history",
    "fingerprint_diff",
    "history_from_logs",
]
