"""Observers of the host driver that write results where researchers look: TensorBoard.

`TensorBoardObserver` is a `jaxlr.engine.events.Observer`: give it to `fit` or `run_sweep`
(`observers=[...]`) and the run writes TensorBoard event files as it trains, flushed after
every chunk so that `tensorboard --logdir` shows it live:

- a single run: one run folder, `logdir`, with every check's `train/loss`, `val/loss`,
  `val/accuracy`, `train/accuracy` and `lr` at the steps of `history.jsonl`
  (`jaxlr.report.tracking.write_history`), the config as text and the final numbers
  (`final/...`) at the last step;
- a sweep: `logdir` is the sweep's root, holding the HParams dashboard's experiment (each
  hyper-parameter's grid values and the metric tags, written once at the start) and one
  run folder per point, named by its hyper-parameters (`tracking.sweep_point_dir`), with the
  same curves and, at the end, the point's hyper-parameters (seed included) and its
  `hparams/...` metrics (`tracking.point_metrics`). A caller that has more per-point numbers
  after the sweep (the gap to the optimum, lr over the stability limit) passes
  `hparams_at_end=False` and calls `write_sweep_hparams` with its rows.

Each chunk of all points is encoded in one go (`tracking.write_histories`: one value table,
one CRC pass, one write per point's file); so are the configs at the start and the final
numbers and HParams rows at the end. Files are not fsynced at close: inside a workdir,
publishing fsyncs the staged tree; a logdir of the caller's own gets the OS's usual durability
(as with tensorboardX's writer).

Only process 0 writes (the others hold a no-op observer). Without tensorboardX it writes
nothing and says once how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxlr.engine.events import Chunk, End, Observer, Start
from jaxlr.engine.optim import make_schedule
from jaxlr.report import tracking


def _schedule(config, learning_rates: Sequence[float], total_steps: int):
    """Every point's learning rate as one function of (point [E], global step [E]), numpy in
    and out: one schedule of the points' rates (elementwise in the initial rate), so a chunk
    of all points costs one call (none of JAX for a constant rate)."""
    rate_S = np.asarray([float(x) for x in learning_rates], np.float64)

    def rates(points_E, steps_E):
        fn = make_schedule(config, rate_S[np.asarray(points_E)], total_steps)
        return np.asarray(fn(np.asarray(steps_E)), np.float64)

    return rates


# write_sweep_hparams' points per batch: their files are open at once.
_POINTS_PER_BLOCK = 512


def _last_step(history: Mapping | None) -> int:
    steps = history.get("step", ()) if history else ()
    return int(steps[-1]) if len(steps) else 0


class TensorBoardObserver(Observer):
    """Writes a run's or a sweep's TensorBoard event files (see the module docstring).

    Args:
      logdir: the run folder (single run) or the sweep's root folder.
      config: JSON-ready config written as text (default: the `TrainConfig`'s fields).
      enabled: False writes nothing.
      hparams_at_end: a sweep writes every point's HParams data at the end from the
        driver's records; False leaves that to `write_sweep_hparams`.
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        config: Mapping[str, Any] | None = None,
        enabled: bool = True,
        hparams_at_end: bool = True,
    ):
        self.logdir = Path(logdir)
        self._config = config
        self._on = bool(enabled) and jax.process_index() == 0
        self._hparams_at_end = hparams_at_end
        self._writers: list = []
        self._rates = None
        self._points: list[dict] = []
        self._kind = "run"

    def _writer(self, i: int):
        return self._writers[i]

    def on_start(self, start: Start) -> None:
        if not self._on:
            return
        self._kind, self._points = start.kind, list(start.points)
        total = start.num_epochs * start.num_batches
        self._rates = _schedule(start.config, [p["learning_rate"] for p in start.points], total)
        config = self._config
        if config is None and hasattr(start.config, "to_dict"):
            config = start.config.to_dict()
        if start.kind == "sweep":
            domains = tracking.hparam_domains(self._points)
            if not tracking.write_hparams_domains(self.logdir, domains):
                self._on = False  # tensorboardX missing: said once, nothing more to do
                return
            dirs = [tracking.sweep_point_dir(self.logdir, p) for p in self._points]
        else:
            dirs = [self.logdir]
        self._writers = [tracking.make_writer(d) for d in dirs]
        if isinstance(self._writers[0], tracking.NullWriter):
            self._on = False
            return
        if config is not None:
            tracking.write_configs(self._writers, [{**config, **p} for p in self._points])
        self._write_histories(dict(enumerate(start.histories)))

    def _write_histories(self, histories: Mapping[int, Mapping | None]) -> None:
        """Writes point i's history rows to its folder, all points' encoded together."""
        points = [i for i, h in histories.items() if h]
        if not points:
            return
        rates = self._rates
        index = np.asarray(points, np.int64)  # write_histories' runs -> points
        tracking.write_histories(
            [self._writers[i] for i in points],
            [histories[i] for i in points],
            lambda runs, steps: rates(index[runs], steps),
        )

    def on_chunk(self, chunk: Chunk) -> None:
        if self._on:
            self._write_histories(chunk.new)

    def on_end(self, end: End) -> None:
        if not self._on:
            return
        steps = [_last_step(h) for h in end.histories]
        tracking.write_finals(self._writers, [_final_numbers(r) for r in end.records], steps)
        if self._kind == "sweep" and self._hparams_at_end:
            metrics = [tracking.point_metrics(r, h) for r, h in zip(end.records, end.histories)]
            tracking.write_points_hparams(self._writers, self._points, metrics, steps)

    def close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []


def _final_numbers(record: Mapping[str, Any]) -> dict:
    """The numbers of a final record worth a `final/...` scalar (not the hyper-parameters)."""
    skip = {"index", "learning_rate", "l2", "momentum", "seed", "history"}
    return {k: v for k, v in record.items() if k not in skip}


def write_sweep_hparams(
    logdir: str | os.PathLike,
    points: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    histories: Sequence[Mapping | None],
    *,
    enabled: bool = True,
) -> int:
    """Writes every sweep point's HParams data (its hyper-parameters and metrics).

    For a sweep run with `TensorBoardObserver(..., hparams_at_end=False)`: `records` are the
    final per-point records with whatever the caller added (e.g. "gap", "lr_over_limit").
    Returns:
      The number of points written (0 when disabled, not process 0 or no tensorboardX).
    """
    if not enabled or jax.process_index() != 0:
        return 0
    rows = list(zip(points, records, histories, strict=True))
    n = 0
    # All points encoded together, a block at a time (a bounded number of open files).
    for b in range(0, len(rows), _POINTS_PER_BLOCK):
        block = rows[b : b + _POINTS_PER_BLOCK]
        writers = []
        try:
            for point, _, _ in block:
                writers.append(tracking.make_writer(tracking.sweep_point_dir(logdir, point)))
                if isinstance(writers[-1], tracking.NullWriter):
                    return 0
            tracking.write_points_hparams(
                writers,
                [p for p, _, _ in block],
                [tracking.point_metrics(r, h) for _, r, h in block],
                [_last_step(h) for _, _, h in block],
            )
        finally:
            for w in writers:
                w.close()
        n += len(block)
    return n


def write_sweep_tensorboard(
    logdir: str | os.PathLike,
    config,
    points: Sequence[Mapping[str, Any]],
    histories: Sequence[Mapping],
    records: Sequence[Mapping[str, Any]],
    *,
    num_batches: int,
    enabled: bool = True,
) -> None:
    """Writes a finished sweep's TensorBoard set at once, as `TensorBoardObserver` would have
    written it live (for sweeps assembled after training, e.g. merged shards).

    Args:
      logdir: the sweep's root folder.
      config: the `TrainConfig` (for the learning-rate schedule and the config text).
      points: one dict of hyper-parameters per point.
      histories: every point's whole history.
      records: every point's final record (with the caller's extra numbers, e.g. "gap").
      num_batches: M, batches per epoch (for the schedule's length).
      enabled: False writes nothing.
    """
    obs = TensorBoardObserver(logdir, enabled=enabled)
    s = len(points)
    try:
        start = Start(
            "sweep", list(points), config, config.num_epochs, num_batches, 0, [None] * s, "", ""
        )
        obs.on_start(start)
        new = {i: dict(h) for i, h in enumerate(histories) if h is not None}
        obs.on_chunk(
            Chunk(
                config.num_epochs,
                config.num_epochs,
                new,
                np.zeros(s, bool),
                0,
                0.0,
                0.0,
                config.num_epochs,
                "",
                {},
            )
        )
        obs.on_end(End(list(records), list(histories), 0.0, config.num_epochs, 1))
    finally:
        obs.close()


__all__ = ["TensorBoardObserver", "write_sweep_hparams", "write_sweep_tensorboard"]
