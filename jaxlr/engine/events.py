"""The events of the host driver (`jaxlr.engine.driver.drive`) and the `Observer` that takes them.

`on_start` gets a `Start` (with the histories of a resumed run), `on_chunk` a `Chunk` with each
chunk's new history rows per point, `on_end` an `End` with every point's final record. Progress
displays (`jaxlr.engine.progress`) and TensorBoard output
(`jaxlr.report.tracking.TensorBoardObserver`) are observers.

Dimensions: S points (1 for a single run), M batches per epoch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Start(NamedTuple):
    """What observers learn before the first chunk.

    Attributes:
      kind: "run" or "sweep".
      points: one dict of hyper-parameters per point (learning_rate, l2, momentum, seed).
      config: the static `TrainConfig`.
      num_epochs: epochs of the full run.
      num_batches: M.
      epoch: the first epoch this call trains (> 0 when resumed).
      histories: per point, the history a resumed run already has (None: nothing yet).
      description: the runner's one-line description (blocks, devices; "" if none).
      resumed: where the run was resumed from, as a line ("" when it starts afresh).
    """

    kind: str
    points: list[dict]
    config: Any
    num_epochs: int
    num_batches: int
    epoch: int
    histories: list[dict | None]
    description: str
    resumed: str


class Chunk(NamedTuple):
    """What observers learn after each chunk.

    Attributes:
      epoch: epochs done after the chunk (of `num_epochs`).
      num_epochs: epochs of the full run.
      new: point index -> the history rows the chunk added (points that ran).
      active: [S] bool, points still training.
      steps_ran: steps run in the chunk, summed over points.
      seconds: wall time of the chunk.
      elapsed: wall time since the driver started.
      epochs_done: epochs trained in this call (not counting a resumed run's earlier ones).
      note: what the runner's rules did (e.g. halving), "" if nothing.
      detail: the runner's `ChunkOut.detail`.
    """

    epoch: int
    num_epochs: int
    new: dict[int, dict]
    active: np.ndarray
    steps_ran: int
    seconds: float
    elapsed: float
    epochs_done: int
    note: str
    detail: dict


class End(NamedTuple):
    """What observers learn at the end.

    Attributes:
      records: one final record per point (metrics of the returned parameters, steps,
        stopping and divergence; see `jaxlr.engine.sweep_result.SweepResult.records`).
      histories: every point's whole history.
      wall_seconds: wall time of the driver.
      epoch: the last epoch reached.
      chunks: chunks run in all (a resumed run's earlier ones included).
    """

    records: list[dict]
    histories: list[dict]
    wall_seconds: float
    epoch: int
    chunks: int


class Observer:
    """Receives the driver's events; every method is a no-op here (override what you need)."""

    def on_start(self, start: Start) -> None:
        pass

    def on_chunk(self, chunk: Chunk) -> None:
        pass

    def on_end(self, end: End) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Progress.
