"""Successive halving: the rule `run_sweep(..., prune=Halving(...))` applies at every rung.

Every `rung_epochs` epochs (a rung), the points still training are ranked by the best
validation loss they have reached so far (the number early stopping watches), and all but the
best `keep_fraction` of them are stopped. A stopped point is frozen like an early-stopped one:
it keeps its parameters, its history and its numbers, and compaction drops it from the next
compiled block. `prune_rung` is that rule as a pure function of host arrays.

Dimension legend: S sweep points.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Halving:
    """Successive halving (static: part of a sweep's fingerprint).

    Attributes:
      rung_epochs: epochs per rung; points are ranked at epochs rung_epochs, 2 rung_epochs, ...
      keep_fraction: fraction of the points still training that survive a rung, rounded up
        (1/3: Hyperband's eta = 3).
      min_points: a rung never stops points below this many survivors.
    """

    rung_epochs: int = 5
    keep_fraction: float = 1 / 3
    min_points: int = 1

    def __post_init__(self):
        if int(self.rung_epochs) < 1:
            raise ValueError(f"Halving.rung_epochs must be >= 1, got {self.rung_epochs!r}")
        if not 0.0 < float(self.keep_fraction) < 1.0:
            raise ValueError(f"Halving.keep_fraction must be in (0, 1), got {self.keep_fraction!r}")
        if int(self.min_points) < 1:
            raise ValueError(f"Halving.min_points must be >= 1, got {self.min_points!r}")

    def to_dict(self) -> dict:
        """The rule as a JSON-ready dict."""
        return {"kind": "halving", **dataclasses.asdict(self)}


def prune_rung(best_loss_S, active_S, rule: Halving) -> np.ndarray:
    """The points one rung of successive halving stops.

    Args:
      best_loss_S: [S] best validation loss of every point so far (NaN or inf: no finite
        check yet, ranked last).
      active_S: [S] bool, the point is still training (not stopped, diverged or pruned).
      rule: the halving rule.
    Returns:
      [S] bool, True for the active points to stop: all but the best
      max(min_points, ceil(keep_fraction * n)) of the n active points. Ties go to the lower
      index (the order is deterministic).
    """
    loss = np.asarray(best_loss_S, np.float64)
    active = np.asarray(active_S, bool)
    if loss.shape != active.shape or loss.ndim != 1:
        raise ValueError(
            f"prune_rung: best_loss_S and active_S must be [S] arrays of one length, "
            f"got {loss.shape} and {active.shape}"
        )
    idx = np.flatnonzero(active)
    keep = max(int(rule.min_points), math.ceil(float(rule.keep_fraction) * len(idx)))
    out = np.zeros(active.shape, bool)
    if keep >= len(idx):
        return out
    key = np.where(np.isfinite(loss[idx]), loss[idx], np.inf)
    order = idx[np.lexsort((idx, key))]  # by loss, then by index
    out[order[keep:]] = True
    return out
