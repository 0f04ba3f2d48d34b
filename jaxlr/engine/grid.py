"""The points of a sweep: Cartesian grids, explicit lists and seeded random search.

`make_grid` flattens the Cartesian product of learning rates, L2 strengths, momenta and seeds
to one sweep axis of S points; `grid_from_points` takes an explicit list; `random_points`
draws S points log-uniformly from ranges of the learning rate, the L2 strength and the
momentum. Each is a `Grid`, trained by `jaxlr.engine.sweep.run_sweep` (one compiled,
vmapped program per block size).

Dimension legend: S sweep points.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxlr.engine.config import HParams, check_hparam_values


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
      `jaxlr.engine.grid.Grid` with axes ("point",) and shape (S,).
    """
    from jaxlr.engine.grid import grid_from_points  # jaxlr.sweep imports this module

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


HPARAM_NAMES = ("learning_rate", "l2", "momentum", "seed")


class Grid(NamedTuple):
    """A flattened grid of hyper-parameters.

    Attributes:
      hparams: `HParams` of arrays [S], the points in row-major order of `shape`.
      axes: names of the grid axes, in the order of `shape` (e.g. ("l2", "learning_rate",
        "seed")); ("point",) for an explicit list of points.
      shape: grid shape; prod(shape) == S.
      values: axis name -> the values along that axis.
    """

    hparams: HParams
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    values: dict[str, tuple]

    @property
    def size(self) -> int:
        """S, the number of points."""
        return int(np.prod(self.shape, dtype=np.int64))

    def point(self, i: int) -> dict:
        """The hyper-parameters of point `i` as Python numbers."""
        return {
            "learning_rate": _shortest(self.hparams.learning_rate[i]),
            "l2": _shortest(self.hparams.l2[i]),
            "momentum": _shortest(self.hparams.momentum[i]),
            "seed": int(self.hparams.seed[i]),
        }

    def select(self, indices: Sequence[int]) -> Grid:
        """The points at `indices` as an explicit list (axes ("point",))."""
        idx = np.asarray(indices, np.int64)
        hp = HParams(*(np.asarray(v)[idx] for v in self.hparams))
        return Grid(hp, ("point",), (len(idx),), {"point": tuple(range(len(idx)))})


def _shortest(x) -> float:
    """A float32 or float64 value as the shortest decimal that reads back to it (0.1, not
    0.10000000149011612 for float32)."""
    return float(str(np.asarray(x)[()]))


def _float_dtype(dtype):
    return np.dtype(dtype) if dtype is not None else np.dtype(jnp.zeros(()).dtype)


def _cast(lr, l2, momentum, seed, dtype) -> HParams:
    """The grid's columns in the knobs' dtype; a value the cast spoils (1e300 -> inf in
    float32) is refused naming it as given, without numpy's overflow warning."""
    dt = _float_dtype(dtype)
    with np.errstate(all="ignore"):
        cast = [np.asarray(v, dt) for v in (lr, l2, momentum)]
    check_hparam_values(*cast, where="grid", given=(lr, l2, momentum))
    return HParams(*cast, seed=np.asarray(seed, np.int32))


def _as_tuple(values, what: str) -> tuple:
    if np.ndim(values) == 0:
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"make_grid: {what} needs at least one value")
    return values


def make_grid(
    *,
    learning_rate: Sequence[float] | float = (0.05,),
    l2: Sequence[float] | float = (0.0,),
    momentum: Sequence[float] | float = (0.0,),
    seed: Sequence[int] | int = (0,),
    dtype=None,
) -> Grid:
    """The Cartesian product of the given values, flattened to one sweep axis.

    The axes are ("l2", "learning_rate", "seed"), with "momentum" inserted before "seed" when
    several momenta are given; the seed varies fastest, then the learning rate, then lambda.

    Args:
      learning_rate, l2, momentum: a float or a sequence of floats each.
      seed: an int or a sequence of ints.
      dtype: float dtype of the continuous knobs (default: JAX's default float).
    Returns:
      `Grid` of S = len(l2) * len(learning_rate) [* len(momentum)] * len(seed) points.
    """
    vals = {
        "l2": tuple(float(v) for v in _as_tuple(l2, "l2")),
        "learning_rate": tuple(float(v) for v in _as_tuple(learning_rate, "learning_rate")),
        "momentum": tuple(float(v) for v in _as_tuple(momentum, "momentum")),
        "seed": tuple(int(v) for v in _as_tuple(seed, "seed")),
    }
    axes = ("l2", "learning_rate") + (("momentum",) if len(vals["momentum"]) > 1 else ())
    axes += ("seed",)
    prod = list(itertools.product(*(vals[a] for a in axes)))
    cols = {a: [p[j] for p in prod] for j, a in enumerate(axes)}
    for a in HPARAM_NAMES:
        cols.setdefault(a, [vals[a][0]] * len(prod))
    hp = _cast(cols["learning_rate"], cols["l2"], cols["momentum"], cols["seed"], dtype)
    shape = tuple(len(vals[a]) for a in axes)
    return Grid(hp, axes, shape, {a: vals[a] for a in axes})


def grid_from_points(points: Sequence[dict], dtype=None) -> Grid:
    """A grid from an explicit list of points.

    Args:
      points: dicts with any of "learning_rate" (required), "l2", "momentum", "seed"
        (default 0.0, 0.0, 0).
      dtype: float dtype of the continuous knobs.
    Returns:
      `Grid` with axes ("point",) and shape (S,).
    """
    if not points:
        raise ValueError("grid_from_points: no points")
    for p in points:
        unknown = set(p) - set(HPARAM_NAMES)
        if unknown:
            raise ValueError(f"grid_from_points: unknown keys {sorted(unknown)}")
        if "learning_rate" not in p:
            raise ValueError(f"grid_from_points: point {p} has no learning_rate")
    hp = _cast(
        [p["learning_rate"] for p in points],
        [p.get("l2", 0.0) for p in points],
        [p.get("momentum", 0.0) for p in points],
        [p.get("seed", 0) for p in points],
        dtype,
    )
    return Grid(hp, ("point",), (len(points),), {"point": tuple(range(len(points)))})
