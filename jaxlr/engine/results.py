"""What a single run returns and how it fails: `TrainResult`, `TrainingDiverged`, and the host
numbers built from a run's state (`early_stopping_summary`, `history_records`, `summary_text`).

Host side of `jaxlr.engine.train.fit`.

Dimensions: M batches per epoch, T steps of a history.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxlr.engine.config import TrainConfig
from jaxlr.engine.step import TrainState, describe_divergence


class TrainingDiverged(RuntimeError):
    """A run diverged (see `jaxlr.engine.step`); `str(err)` is one line naming step, rate and rule.

    Attributes:
      step: the global step that diverged (its update was not applied); -1 if unknown.
      epoch: its epoch.
      learning_rate: the run's (initial) learning rate.
      reason: the rule that fired, a key of `jaxlr.engine.step.DIVERGE_REASONS`.
      reason_text: the rule in words with its numbers.
      value: the objective that fired it (NaN for a non-finite parameter).
      initial_objective: the run's initial objective (the factor rule's reference).
      diverge_factor: the config's factor.
      state: the final `TrainState` (host arrays), frozen where the run diverged.
      history: the history up to the divergence (see `history_from_logs`).
    """

    def __init__(
        self,
        message: str,
        *,
        step: int = -1,
        epoch: int = -1,
        learning_rate: float = math.nan,
        reason: int = 0,
        reason_text: str = "",
        value: float = math.nan,
        initial_objective: float = math.nan,
        diverge_factor: float = math.nan,
        state: TrainState | None = None,
        history: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.step = step
        self.epoch = epoch
        self.learning_rate = learning_rate
        self.reason = reason
        self.reason_text = reason_text
        self.value = value
        self.initial_objective = initial_objective
        self.diverge_factor = diverge_factor
        self.state = state
        self.history = history


def divergence_error(
    state: TrainState,
    learning_rate: float,
    config: TrainConfig,
    num_batches_per_epoch: int,
    history: dict | None = None,
) -> TrainingDiverged:
    """The `TrainingDiverged` of a diverged run's final state (host or device arrays)."""
    step = int(state.diverge_step)
    reason = int(state.diverge_reason)
    value = float(state.diverge_value)
    initial = float(state.initial_objective)
    text = describe_divergence(reason, value, initial, config.diverge_factor)
    epoch = step // num_batches_per_epoch if step >= 0 else -1
    msg = (
        f"training diverged at step {step} (epoch {epoch}) with learning rate "
        f"{float(learning_rate):g}: {text} (rule {reason}); lower the learning rate or the "
        "L2 strength; no weights were returned"
    )
    return TrainingDiverged(
        msg,
        step=step,
        epoch=epoch,
        learning_rate=float(learning_rate),
        reason=reason,
        reason_text=text,
        value=value,
        initial_objective=initial,
        diverge_factor=config.diverge_factor,
        state=jax.device_get(state),
        history=history,
    )


@dataclasses.dataclass
class TrainResult:
    """What `fit` returns (host-side numpy values).

    Attributes:
      params: returned parameters (best check's with early stopping).
      state: final `TrainState`.
      history: dict of numpy arrays (see `history_from_logs`).
      metrics: final numbers from `params`, plus "steps" and "early_stopping".
      wall_seconds: host time of the training loop (compilation included).
      timing: with `fit(time_epochs=True)`: "compile_seconds" (the epoch program, compiled
        before the loop), "epoch" (indices of the timed epochs), "epoch_seconds" (wall time
        of each, checks included, compilation excluded), "steps" (steps that ran in each),
        "run_seconds" (their sum) and "steps_per_second" (steps / run_seconds); else None.
    """

    params: Any
    state: TrainState
    history: dict
    metrics: dict
    wall_seconds: float
    timing: dict | None = None

    def __repr__(self) -> str:
        return summary_text(self)


def _number_text(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summary_text(result: TrainResult) -> str:
    """A few lines on a run: final numbers, steps, stopping, parameter shapes, time."""
    m = result.metrics
    shapes = ", ".join(
        f"{'/'.join(str(getattr(k, 'key', k)) for k in path)} {tuple(np.shape(leaf))}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(result.params)[0]
    )
    lines = [
        f"TrainResult({m.get('steps', 0)} steps, {m.get('epochs', 0)} epochs, "
        f"{result.wall_seconds:.1f} s)"
    ]
    for split in ("train", "val"):
        if f"{split}_loss" in m:
            lines.append(
                f"  {split}: loss {_number_text(m[f'{split}_loss'])}  accuracy "
                f"{_number_text(m.get(f'{split}_accuracy'))}"
            )
    es = m.get("early_stopping")
    if es:
        stop = f"stopped at step {es['step']}" if es.get("stopped") else "did not stop"
        lines.append(
            f"  early stopping: {stop}; best check step {es['best_step']} "
            f"(val_loss {_number_text(es['best_val_loss'])})"
        )
    lines.append(f"  params: {shapes}")
    lines.append(
        f"  history: {len(result.history.get('step', ()))} steps, "
        f"{len(result.history.get('check_step', ()))} checks"
    )
    return "\n".join(lines)


def history_records(history: dict) -> list[dict]:
    """JSON-lines records of a history: one per step, checks merged into their step."""
    checks = {int(s): i for i, s in enumerate(history.get("check_step", []))}
    records = []
    for i, s in enumerate(history["step"]):
        rec = {
            "step": int(s),
            "epoch": int(history["epoch"][i]),
            "train_loss": float(history["train_loss"][i]),
        }
        j = checks.get(int(s))
        if j is not None:
            rec["val_loss"] = float(history["val_loss"][j])
            rec["val_accuracy"] = float(history["val_accuracy"][j])
            rec["train_accuracy"] = float(history["train_accuracy"][j])
        records.append(rec)
    return records


def early_stopping_summary(state: TrainState, m: int) -> dict:
    """The early-stopping numbers of one run's final state (0-based steps and epochs)."""
    stop_step = int(state.stop_step)
    best_step = int(state.best_step)
    return {
        "stopped": stop_step >= 0,
        "step": stop_step if stop_step >= 0 else None,
        "epoch": stop_step // m if stop_step >= 0 else None,
        "best_step": best_step,
        "best_epoch": best_step // m if best_step >= 0 else None,
        "best_val_loss": float(state.best_loss),
    }
