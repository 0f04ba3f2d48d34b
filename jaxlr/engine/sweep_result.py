"""The result of a sweep (`jaxlr.engine.sweep.run_sweep`): every point's numbers, host-side.

`SweepResult` holds the flattened grid's per-point metrics, stopping, divergence and
histories, and picks the best point (`best_index`); `summary_text` and `mean_over` read it.

Dimensions: S sweep points (flattened grid).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxlr.engine.config import TrainConfig
from jaxlr.engine.grid import Grid


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

    def __repr__(self) -> str:
        return summary_text(self)

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
        early stopping, "early_stopping" as `jaxlr.engine.results.early_stopping_summary` gives it.
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


def summary_text(result: SweepResult, rows: int = 10) -> str:
    """At most ~25 lines on a sweep: its grid, cost, and its best `rows` points by
    validation loss (all rows: `jaxlr.report.tables.sweep_rows`)."""
    g = result.grid
    axes = ", ".join(f"{a} {list(g.values[a])}" for a in g.axes) if g.axes else "points"
    div = int(np.asarray(result.diverged).sum())
    lines = [
        f"SweepResult({g.size} points: {axes}; {result.point_steps} point-steps, "
        f"{result.wall_seconds:.1f} s; {div} diverged)"
    ]
    loss = np.where(result.diverged, np.inf, np.asarray(result.metrics["val_loss"], np.float64))
    order = np.argsort(loss, kind="stable")[:rows]
    lines.append("  best by val_loss:")
    lines.append("    index  learning_rate         l2  momentum  seed   val_loss  val_acc  steps")
    for i in order:
        p = g.point(int(i))
        lines.append(
            f"    {int(i):5d}  {p['learning_rate']:13.4g}  {p['l2']:9.4g}  {p['momentum']:8.3g}"
            f"  {int(p['seed']):4d}  {float(result.metrics['val_loss'][i]):9.4f}"
            f"  {float(result.metrics['val_accuracy'][i]):7.4f}"
            f"  {int(result.metrics['steps'][i]):5d}"
        )
    if g.size > rows:
        lines.append(f"    ... {g.size - rows} more (every row: jaxlr.report.tables.sweep_rows)")
    return "\n".join(lines)


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


__all__ = ["SweepResult", "mean_over", "py_scalar", "summary_text"]
