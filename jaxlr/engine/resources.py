"""Memory a run or a block of sweep points needs, what a device has, and a refusal in one line.

Everything here works from shapes (`jax.eval_shape`) and config numbers: nothing is
allocated, so a model too large to exist is refused before any array of it is made.

Dimensions: N training examples, V validation examples, D features, B batch size,
M batches per epoch, P parameters, S sweep points (`points`).

The estimate is deliberately rough and on the high side: per point, the parameters four
times over in the worst case (parameters, updated parameters, gradients, best parameters
with early stopping) plus the optimizer's slots, one step's activations, one validation
check's activations and a chunk of step logs; once for all points, the data. XLA's
temporaries are not modelled beyond that.
"""

from __future__ import annotations

import math
import operator
import os
from typing import NamedTuple

import jax

from jaxlr.core.objective import Model
from jaxlr.engine.config import TrainConfig

__all__ = [
    "ResourceError",
    "RunBytes",
    "available_bytes",
    "check_fits",
    "estimate_run_bytes",
    "format_bytes",
    "num_params",
]

_OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}


class ResourceError(ValueError):
    """A run or sweep block needs more memory than the device has (one-line message)."""


class RunBytes(NamedTuple):
    """Estimated bytes of a run (or of `points` sweep points trained together).

    Attributes:
      num_params: P, scalar parameters of one point.
      state: per point: parameters, updated parameters, gradients, optimizer slots and
        (with early stopping) best parameters.
      activations: per point: one step's batch activations and one check's.
      logs: per point: one chunk of step logs.
      data: training and validation arrays (shared by all points).
      points: S.
      per_point: state + activations + logs.
      total: data + points * per_point.
    """

    num_params: int
    state: int
    activations: int
    logs: int
    data: int
    points: int
    per_point: int
    total: int


def format_bytes(n: float) -> str:
    """Bytes in binary units: 512 B, 3.0 KiB, 1.5 GiB, 2.3 TiB."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def num_params(model_or_num_params: Model | int) -> int:
    """P of a bound model (from shapes only, nothing is computed), or an int passed through."""
    if not hasattr(model_or_num_params, "init"):
        p = operator.index(model_or_num_params)
        if p < 0:
            raise ValueError(f"num_params: the parameter count must be >= 0, got {p}")
        return p
    init = model_or_num_params.init
    # The key is made inside the abstract evaluation too: not even it is allocated.
    shapes = jax.eval_shape(lambda: init(jax.random.PRNGKey(0)))
    return int(sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)))


def estimate_run_bytes(
    config: TrainConfig,
    model_or_num_params: Model | int,
    data_shapes: tuple[int, int, int],
    itemsize: int,
    points: int = 1,
) -> RunBytes:
    """Estimates the memory of a run (points=1) or of a block of sweep points.

    `per_point` is what `jaxlr.engine.blocks.bytes_per_point` sizes sweep blocks with.

    Args:
      config: static config (model widths, batch size, optimizer, early stopping, ...).
      model_or_num_params: the bound model, or P.
      data_shapes: (N, V, D): training and validation examples and features.
      itemsize: bytes per float (4 for float32).
      points: S, points trained together.
    Returns:
      `RunBytes`.
    """
    n, v, d = (int(a) for a in data_shapes)
    if min(n, v, d) < 0 or itemsize <= 0 or points < 1:
        raise ValueError(
            f"estimate_run_bytes: data_shapes={data_shapes!r}, itemsize={itemsize!r}, "
            f"points={points!r}; need non-negative shapes, itemsize > 0 and points >= 1"
        )
    p = num_params(model_or_num_params)
    slots = _OPTIMIZER_SLOTS[config.optimizer]
    state = p * (3 + slots + (1 if config.early_stopping else 0))
    widths = sum(config.hidden) + (1 if config.model == "logistic" else config.num_classes)
    n_eval = min(config.train_eval_size or n, n)
    step = config.batch_size * (d + 3 * widths)
    check = 2 * max(v, n_eval) * widths
    m = max(1, n // config.batch_size)
    logs = 6 * config.epochs_per_call * m
    per_point = itemsize * (state + step + check + logs)
    data = itemsize * (n + v) * d + 4 * (n + v)
    return RunBytes(
        num_params=p,
        state=itemsize * state,
        activations=itemsize * (step + check),
        logs=itemsize * logs,
        data=data,
        points=int(points),
        per_point=per_point,
        total=data + int(points) * per_point,
    )


def _host_available_bytes() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host memory available"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "host memory free"
    except (ValueError, OSError, AttributeError):
        pass
    return 8 << 30, "host memory (unknown; assumed 8 GiB)"


def _available(device) -> tuple[int, str]:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (CPU and some backends do not report memory)
        stats = None
    if stats and stats.get("bytes_limit"):
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"free on {device.platform}:{device.id}"
    return _host_available_bytes()


def available_bytes(device=None) -> int:
    """Bytes free for a new run on `device` (default: this process's first device).

    An accelerator that reports memory: its limit minus what is in use. Otherwise (CPU):
    the host's available memory (`MemAvailable` of /proc/meminfo).
    """
    return _available(device or jax.local_devices()[0])[0]


def check_fits(
    needed: RunBytes | int,
    available: int | None = None,
    *,
    what: str = "this run",
    device=None,
) -> None:
    """Refuses, in one line naming both sizes, what needs more memory than is available.

    Args:
      needed: an estimate (`estimate_run_bytes`) or bytes.
      available: bytes available (default: `available_bytes(device)`).
      what: what is refused, for the message ("fit", "sweep block of 64 points").
      device: the device to ask when `available` is not given.
    Raises:
      ResourceError: needed > available.
    """
    where = "given"
    if available is None:
        available, where = _available(device or jax.local_devices()[0])
    total = needed.total if isinstance(needed, RunBytes) else int(needed)
    if total <= available:
        return
    detail = ""
    if isinstance(needed, RunBytes):
        per = f" x {needed.points} points" if needed.points > 1 else ""
        detail = (
            f" ({needed.num_params:,} parameters: {format_bytes(needed.state)} of parameters, "
            f"gradients and optimizer state, {format_bytes(needed.activations)} of "
            f"activations{per}; {format_bytes(needed.data)} of data)"
        )
    raise ResourceError(
        f"{what} needs about {format_bytes(total)}{detail} but only "
        f"{format_bytes(available)} is available ({where}); use a smaller model, batch, "
        "data set or block of points"
    )
