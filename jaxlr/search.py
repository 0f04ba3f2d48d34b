"""Search beyond grids: seeded random search and successive halving.

`random_points` draws S points log-uniformly from ranges of the learning rate, the L2
strength and the momentum; the result is a `jaxlr.sweep.Grid` with axes ("point",), trained by
`jaxlr.sweep.run_sweep` like any grid (one compiled, vmapped program per block size).

`Halving` is the successive-halving rule that `run_sweep(..., prune=Halving(...))` applies:
every `rung_epochs` epochs (a rung), the points still training are ranked by the best
validation loss they have reached so far (the number early stopping watches), and all but the
best `keep_fraction` of them are stopped. A stopped point is frozen like an early-stopped one:
it keeps its parameters, its history and its numbers, and compaction drops it from the next
compiled block. `prune_rung` is that rule as a pure function of host arrays.

Dimension legend: S sweep points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

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


def _range(values, name: str) -> tuple[float, float] | None:
    if values is None:
        return None
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"random_points: {name} must be (LO, HI), got {values!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 < lo <= hi):
        raise ValueError(
            f"random_points: {name}={values!r} must satisfy 0 < LO <= HI (log-uniform; "
            "leave it out for a fixed value of 0)"
        )
    return lo, hi


def random_points(
    num_samples: int,
    lr_range: Sequence[float],
    l2_range: Sequence[float] | None = None,
    momentum_range: Sequence[float] | None = None,
    seed: int = 0,
    *,
    train_seed: int = 0,
    dtype=None,
):
    """S points drawn log-uniformly from the given ranges (seeded, reproducible).

    Every range is (LO, HI) with 0 < LO <= HI: log-uniform needs a positive lower end, so
    lambda = 0 is not in any range; leave `l2_range` out for lambda = 0 everywhere (the
    unregularised point is then the only one), or give a small LO such as 1e-6. LO == HI
    gives that value for every point. The draws come from `numpy.random.default_rng(seed)`
    in a fixed order (learning rates, then lambdas, then momenta), so a range left out does
    not change the others' values.

    Args:
      num_samples: S >= 1.
      lr_range: (LO, HI) of the learning rate.
      l2_range: (LO, HI) of lambda, or None for 0.
      momentum_range: (LO, HI) of the momentum, or None for 0.
      seed: seed of the draws.
      train_seed: the training seed of every point (one shared seed: the points share the
        data order, and the sweep multiplies each batch by all points' weights at once).
      dtype: float dtype of the continuous knobs.
    Returns:
      `jaxlr.sweep.Grid` with axes ("point",) and shape (S,).
    """
    from jaxlr.sweep import grid_from_points  # jaxlr.sweep imports this module

    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"random_points: num_samples must be an int >= 1, got {num_samples!r}")
    n = int(num_samples)
    ranges = {
        "learning_rate": _range(lr_range, "lr_range"),
        "l2": _range(l2_range, "l2_range"),
        "momentum": _range(momentum_range, "momentum_range"),
    }
    if ranges["learning_rate"] is None:
        raise ValueError("random_points: lr_range is required, got None")
    rng = np.random.default_rng(int(seed))
    cols = {}
    for name, r in ranges.items():
        u = rng.uniform(size=n)  # drawn even when unused, so each knob's values are stable
        if r is None:
            cols[name] = np.zeros(n)
        else:
            lo, hi = np.log(r[0]), np.log(r[1])
            # Clipped: exp(log(x)) may round just outside the range.
            cols[name] = np.clip(np.exp(lo + u * (hi - lo)), r[0], r[1])
    points = [
        {
            "learning_rate": float(cols["learning_rate"][i]),
            "l2": float(cols["l2"][i]),
            "momentum": float(cols["momentum"][i]),
            "seed": int(train_seed),
        }
        for i in range(n)
    ]
    return grid_from_points(points, dtype=dtype)


__all__ = ["Halving", "prune_rung", "random_points"]
