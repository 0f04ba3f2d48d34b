"""The training engine: the rules of `jaxlr.engine.step` in nested `lax.scan`, and a thin host loop.

Dimensions: N training examples, V validation examples, D features, B batch size,
M batches per epoch, E steps between checks, T steps, S sweep points.

`make_engine` returns pure functions (`init`, `run`, `evaluate`) of one run, built from the
module-level rules of `jaxlr.engine.step` (`train_step`, `validation_check`, `chunk_end_rule`, ...).
They are written so that `jax.vmap` over `HParams` turns them into a sweep (see
`jaxlr.engine.sweep`): the global step is an unbatched argument, so the check schedule stays a real
`lax.cond` under `vmap`, and stopping (early or on divergence) is a per-run `active` flag that
freezes every state leaf. `fit` is the host loop of a single run: it refuses what cannot fit
in memory (`jaxlr.engine.resources`), calls the compiled `run` one chunk of epochs at a time, logs
progress, writes checkpoints, resumes from them, stops early, optionally times every epoch,
and raises `TrainingDiverged` (step, learning rate and rule) when the run diverges.
The results and the divergence error are in `jaxlr.engine.results`, the checks of the inputs in
`jaxlr.engine.data_checks`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr.core.inputs import format_number
from jaxlr.core.objective import Model, make_model
from jaxlr.engine import resources
from jaxlr.engine.config import HParams, TrainConfig
from jaxlr.engine.data_checks import (
    _check_scalar_hparams,
    _dtype_of,
    check_data,
    check_inputs,
)
from jaxlr.engine.driver import ChunkOut, drive
from jaxlr.engine.events import Observer
from jaxlr.engine.progress import default_observers
from jaxlr.engine.results import (
    TrainResult,
    divergence_error,
    early_stopping_summary,
)
from jaxlr.engine.step import (
    Data,
    Schedule,
    TrainState,
    after_all,
    chunk_end_rule,
    epoch_inputs,
    init_state,
    keys_for,
    logged_loss,
    schedule_numbers,
    train_step,
)
from jaxlr.host import checkpoint as ckpt

log = logging.getLogger("jaxlr.train")


class Engine(NamedTuple):
    """Pure functions of one training run, and the numbers of its schedule.

    Attributes:
      config: the static config.
      model: the bound model.
      num_batches: M, batches per epoch.
      eval_every: E, steps between checks.
      total_steps: steps of the full run (num_epochs * M).
      init: hparams -> TrainState.
      run: (state, hparams, data, start_epoch, num_epochs) -> (state, StepLog of [T]);
        `num_epochs` must be static (a Python int).
      evaluate: (params, hparams, data) -> dict of final metrics (scalars).
    """

    config: TrainConfig
    model: Model
    num_batches: int
    eval_every: int
    total_steps: int
    init: Callable
    run: Callable
    evaluate: Callable

    @property
    def schedule(self) -> Schedule:
        """The `Schedule` of the engine's numbers."""
        return Schedule(self.num_batches, self.eval_every, self.total_steps)


def model_for(config: TrainConfig, num_features: int, dtype=jnp.float32) -> Model:
    """Binds the model that `config` describes for inputs of `num_features` features."""
    return make_model(
        config.model,
        num_features=num_features,
        num_classes=None if config.model == "logistic" else config.num_classes,
        hidden=config.hidden,
        activation=config.activation,
        bias=config.bias,
        init=None if config.init == "auto" else config.init,
        init_std=config.init_std,
        l2_convention=config.l2_convention,
        l2_bias=config.l2_bias,
        dtype=dtype,
    )


# Kept under the old private name: tests and benchmarks import it from here.
_after_all = after_all


def make_engine(config: TrainConfig, model: Model, num_train: int, group: int | None = 0) -> Engine:
    """Builds the pure functions of one training run from the rules of `jaxlr.engine.step`.

    Args:
      config: static config.
      model: the bound model (`jaxlr.core.objective.make_model`).
      num_train: N, number of training examples (static).
      group: under a sweep's vmap on CPU, points per group of the steps and checks
        (`jaxlr.engine.step.points_in_groups`; 0: the widest the shapes allow; None: a
        plain vmap, for comparisons). A single run is not vmapped: it does not matter there.
    Returns:
      An `Engine`.
    """
    sched = schedule_numbers(config, num_train)
    step_fn = functools.partial(train_step, config=config, model=model, schedule=sched, group=group)

    def init(hparams: HParams) -> TrainState:
        return init_state(config, model, hparams, sched.total_steps)

    def run(state: TrainState, hparams: HParams, data: Data, start_epoch, num_epochs: int):
        _, data_key = keys_for(hparams.seed)

        def epoch_fn(state, epoch):
            batches = epoch_inputs(config, sched, num_train, data_key, epoch)
            return jax.lax.scan(lambda s, b: step_fn(s, hparams, data, b), state, batches)

        epochs = jnp.asarray(start_epoch, jnp.int32) + jnp.arange(num_epochs, dtype=jnp.int32)
        state, logs = jax.lax.scan(epoch_fn, state, epochs)
        last_step = (epochs[-1] + 1) * sched.batches_per_epoch - 1
        state = chunk_end_rule(state, last_step)
        return state, jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), logs)

    def evaluate(params, hparams: HParams, data: Data) -> dict:
        out = {}
        for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val)):
            obj, ce = model.loss(params, x, y, hparams.l2)
            out[f"{split}_loss"] = logged_loss(config, obj, ce)
            out[f"{split}_cross_entropy"] = ce
            out[f"{split}_objective"] = obj
            out[f"{split}_accuracy"] = model.accuracy(model.apply(params, x), y)
        return out

    return Engine(
        config,
        model,
        sched.batches_per_epoch,
        sched.eval_every,
        sched.total_steps,
        init,
        run,
        evaluate,
    )


def returned_params(state: TrainState):
    """The parameters a run returns: those of the best check with early stopping."""
    return state.best_params if state.best_params is not None else state.params


@functools.lru_cache(maxsize=64)
def _default_num_params(config: TrainConfig, num_features: int, dtype: str) -> int:
    return resources.num_params(model_for(config, num_features, jnp.dtype(dtype)))


def fit(
    config: TrainConfig,
    hparams: HParams,
    data: Data,
    *,
    model: Model | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    log_fn: Callable[[str], None] | None = None,
    progress: bool | str = "auto",
    observers: Sequence[Observer] = (),
    stop_after_epochs: int | None = None,
    time_epochs: bool = False,
) -> TrainResult:
    """Trains one run: compiled chunks of epochs, progress, checkpoints, early stopping.

    Before anything is allocated the shapes of `data` are checked and the memory the run
    needs is estimated (`jaxlr.engine.resources`); a run that cannot fit is refused. The
    host loop is `jaxlr.engine.driver.drive` (the same as a sweep's).

    Args:
      config: static config.
      hparams: scalar hyper-parameters of the run.
      data: preprocessed arrays; their float dtype is the compute dtype.
      model: a bound model (default: built from `config` and the data's shape and dtype).
      checkpoint_path: file to checkpoint into after every chunk (atomically); with `resume`
        an existing checkpoint of the same config and hparams is continued.
      resume: continue from `checkpoint_path` if it exists.
      log_fn: where progress lines go (default: the "jaxlr.train" logger at INFO, unless a
        progress bar shows progress).
      progress: a progress bar (`jaxlr.engine.progress.ProgressBar`): "auto" shows one when
        stderr is a terminal or in a notebook, True always, False never.
      observers: more `jaxlr.engine.events.Observer`s (e.g. TensorBoard output).
      stop_after_epochs: end the loop after this many epochs of this call (for tests of
        resuming: an interrupted run).
      time_epochs: compile the one-epoch program before the loop and run one epoch per
        call (instead of `config.epochs_per_call`), timing each; the numbers are in
        `TrainResult.timing`. The arithmetic is the same as without.
    Returns:
      `TrainResult`.
    Raises:
      ValueError: malformed data or hparams (a line in words naming the sizes).
      jaxlr.engine.resources.ResourceError: the run needs more memory than is available.
      TrainingDiverged: the run diverged; the message names step, learning rate and rule,
        and the exception carries them (and the final state and history).
    """
    num_train, num_val, num_features = check_data(data)
    _check_scalar_hparams(hparams)
    check_inputs(config, data, "fit", model)
    dtype = jax.dtypes.canonicalize_dtype(_dtype_of(data.x_train))
    p = (
        _default_num_params(config, num_features, np.dtype(dtype).name)
        if model is None
        else resources.num_params(model)
    )
    estimate = resources.estimate_run_bytes(
        config, p, (num_train, num_val, num_features), np.dtype(dtype).itemsize
    )
    resources.check_fits(estimate, what=f"fit of a {config.model} model")

    data, hparams = _as_arrays(data, hparams)
    x_train = data.x_train
    if model is None:
        engine, init_fn, run_fn, eval_fn = _compiled_engine(
            config, x_train.shape[1], np.dtype(x_train.dtype).name, x_train.shape[0]
        )
    else:
        engine = make_engine(config, model, x_train.shape[0])
        init_fn, run_fn, eval_fn = _jit_engine(engine)
    point = _hparams_dict(hparams)
    runner = _RunRunner(config, engine, init_fn(hparams), hparams, data, run_fn, eval_fn)
    t0 = time.perf_counter()
    if time_epochs:
        runner.compile_one_epoch()
    result, _ = drive(
        runner,
        config=config,
        points=[point],
        num_epochs=config.num_epochs,
        epochs_per_call=1 if time_epochs else config.epochs_per_call,
        checkpoint_path=checkpoint_path,
        resume=resume,
        fingerprint={"config": config.to_dict(), "hparams": _hparams_dict(hparams, exact=True)},
        observers=[*default_observers(log_fn, log.info, progress), *observers],
        stop_after_epochs=stop_after_epochs,
        dtype=np.dtype(x_train.dtype),
    )
    result.wall_seconds = time.perf_counter() - t0
    return result


class _RunRunner:
    """The compiled side of one run, for `jaxlr.engine.driver.drive`."""

    kind = "run"
    num_points = 1

    def __init__(self, config, engine, state, hparams, data, run_fn, eval_fn):
        self.config, self.engine = config, engine
        self.num_batches = engine.num_batches
        self.state, self.hparams, self.data = state, hparams, data
        self.run_fn, self.eval_fn = run_fn, eval_fn
        self.one_epoch = None
        self.compile_seconds = None
        self._timed = False

    def compile_one_epoch(self) -> None:
        t = time.perf_counter()
        self.one_epoch = self.run_fn.lower(self.state, self.hparams, self.data, 0, 1).compile()
        self.compile_seconds = time.perf_counter() - t
        self._timed = True

    def active(self) -> np.ndarray:
        return np.asarray([bool(self.state.active)])

    def run_chunk(self, epoch: int, num_epochs: int) -> ChunkOut:
        if self.one_epoch is not None:
            self.state, logs = self.one_epoch(self.state, self.hparams, self.data, epoch)
        else:
            self.state, logs = self.run_fn(self.state, self.hparams, self.data, epoch, num_epochs)
        logs = jax.device_get(logs)  # waits for the chunk
        ran = int(np.asarray(logs.ran).sum())
        detail = {}
        if not bool(self.state.active):
            detail = {
                "diverged": bool(self.state.diverged),
                "diverge_step": int(self.state.diverge_step),
                "diverge_reason": int(self.state.diverge_reason),
            }
        return ChunkOut({0: logs}, ran, num_epochs * self.num_batches, detail)

    def after_chunk(self, epoch: int) -> str:
        return ""

    def snapshot(self) -> dict:
        return {"state": jax.device_get(self.state)}

    def restore(self, flat, path) -> None:
        self.state = ckpt.restore_tree(flat, self.state, prefix="state", path=path)

    def finish(self, histories: list[dict], info) -> tuple[TrainResult, list[dict]]:
        history = histories[0]
        state, m, config = self.state, self.num_batches, self.config
        if bool(state.diverged):
            raise divergence_error(state, float(self.hparams.learning_rate), config, m, history)
        params = returned_params(state)
        metrics = {k: float(v) for k, v in self.eval_fn(params, self.hparams, self.data).items()}
        metrics["steps"] = int(len(history["step"]))
        # Epochs that ran (a run that stopped early ends inside its last chunk).
        metrics["epochs"] = int(history["step"][-1]) // m + 1 if metrics["steps"] else 0
        if config.early_stopping:
            metrics["early_stopping"] = early_stopping_summary(state, m)
        timing = None
        if self._timed:
            first = info.epoch - len(info.chunk_seconds)
            timing = {
                "compile_seconds": self.compile_seconds,
                "epoch": list(range(first, info.epoch)),
                "epoch_seconds": list(info.chunk_seconds),
                "steps": list(info.chunk_steps),
            }
            timing["run_seconds"] = float(sum(timing["epoch_seconds"]))
            timing["steps_per_second"] = sum(timing["steps"]) / max(timing["run_seconds"], 1e-9)
        result = TrainResult(
            jax.device_get(params),
            jax.device_get(state),
            history,
            metrics,
            info.wall_seconds,
            timing,
        )
        record = {**_hparams_dict(self.hparams), **metrics, "diverged": False}
        return result, [record]

    def close(self) -> None:
        pass


def _as_arrays(data: Data, hparams: HParams) -> tuple[Data, HParams]:
    """JAX arrays of the data and the hyper-parameters in the training features' float dtype."""
    x_train = jnp.asarray(data.x_train)
    data = Data(
        x_train,
        jnp.asarray(data.y_train),
        jnp.asarray(data.x_val, x_train.dtype),
        jnp.asarray(data.y_val),
    )
    hparams = HParams(
        *(jnp.asarray(v, x_train.dtype) for v in hparams[:3]), jnp.asarray(hparams.seed, jnp.int32)
    )
    return data, hparams


def measure_step_rate(
    config: TrainConfig,
    hparams: HParams,
    data: Data,
    *,
    model: Model | None = None,
    repeats: int = 1,
) -> float:
    """Steps per second of one compiled epoch without validation checks (warm, steady state).

    Compiles the one-epoch program of `config` with checks moved out of epoch 1, then
    times epoch 1 from the initial state (`repeats` times, the fastest counts): the speed
    of the update itself, as a benchmark or a plot's time axis needs it.

    Args:
      config: static config (its `eval_every` is replaced).
      hparams: scalar hyper-parameters.
      data: preprocessed arrays.
      model: a bound model (default: from `config` and the data).
      repeats: timed executions (>= 1).
    Returns:
      Steps per second.
    """
    if int(repeats) < 1:
        raise ValueError(f"measure_step_rate: repeats must be >= 1, got {repeats!r}")
    n, _, d = check_data(data, "measure_step_rate")
    _check_scalar_hparams(hparams, "measure_step_rate")
    check_inputs(config, data, "measure_step_rate", model)
    m = schedule_numbers(config, n).batches_per_epoch
    # Checks follow steps 0, E, 2E, ...: with E = 2M, none falls in epoch 1 (steps M..2M-1).
    quiet = dataclasses.replace(config, eval_every=2 * m)
    data, hparams = _as_arrays(data, hparams)
    x_train = data.x_train
    model = model if model is not None else model_for(quiet, d, x_train.dtype)
    engine = make_engine(quiet, model, n)
    state = jax.jit(engine.init)(hparams)
    run = jax.jit(engine.run, static_argnums=4).lower(state, hparams, data, 1, 1).compile()
    best = math.inf
    for _ in range(int(repeats)):
        t = time.perf_counter()
        out, _ = run(state, hparams, data, 1)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return m / best


def _jit_engine(engine: Engine):
    return jax.jit(engine.init), jax.jit(engine.run, static_argnums=4), jax.jit(engine.evaluate)


@functools.lru_cache(maxsize=32)
def _compiled_engine(config: TrainConfig, num_features: int, dtype: str, num_train: int):
    """Engine and jitted functions per (config, data shape, dtype): repeated fits reuse them."""
    engine = make_engine(config, model_for(config, num_features, jnp.dtype(dtype)), num_train)
    return (engine, *_jit_engine(engine))


def _hparams_dict(hparams: HParams, exact: bool = False) -> dict:
    """A run's knobs as Python numbers: as given (0.01 for a float32 0.01), or with `exact`
    the float32 value widened (what checkpoint fingerprints have always recorded)."""
    num = float if exact else (lambda v: float(format_number(v)))
    return {
        "learning_rate": num(hparams.learning_rate),
        "l2": num(hparams.l2),
        "momentum": num(hparams.momentum),
        "seed": int(hparams.seed),
    }


def num_steps(config: TrainConfig, num_train: int) -> int:
    """Steps of a full run of `config` on `num_train` examples."""
    return schedule_numbers(config, num_train).total_steps


__all__ = [
    "Engine",
    "fit",
    "make_engine",
    "measure_step_rate",
    "model_for",
    "num_steps",
    "returned_params",
]
