"""The training engine: a pure step, whole epochs as one `lax.scan`, a thin host loop.

Dimensions: N training examples, V validation examples, D features, B batch size,
M batches per epoch, E steps between checks, T steps, S sweep points.

`make_engine` returns pure functions (`init`, `run`, `evaluate`) of one run. They are written
so that `jax.vmap` over `HParams` turns them into a sweep (see `jaxlr.sweep`): the global step
is an unbatched argument, so the check schedule stays a real `lax.cond` under `vmap`, and
stopping (early or on divergence) is a per-run `active` flag that freezes every state leaf.
`fit` is the host loop of a single run: it calls the compiled `run` one chunk of epochs at a
time, logs progress, writes checkpoints, resumes from them and stops early.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlr import checkpoint as ckpt
from jaxlr.config import HParams, TrainConfig
from jaxlr.data import epoch_batches, num_batches
from jaxlr.objective import Model, make_model
from jaxlr.optim import make_optimizer

log = logging.getLogger("jaxlr.train")


class Data(NamedTuple):
    """Preprocessed arrays of one experiment.

    Attributes:
      x_train: [N, D] float features.
      y_train: [N] integer labels (binary: 1 = positive class).
      x_val: [V, D] float features.
      y_val: [V] integer labels.
    """

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any


class TrainState(NamedTuple):
    """Everything that changes during one run (leaves gain a leading [S] axis in a sweep).

    Attributes:
      params: model parameters.
      opt_state: optax state.
      best_params: parameters at the best check (None without early stopping).
      best_loss: lowest validation loss seen at a check (inf before the first).
      best_step: step of that check (-1 before the first).
      since_best: checks since the validation loss last reached a new minimum.
      active: False once the run stopped early or diverged; then nothing changes again.
      stop_step: step after whose check early stopping fired (-1 if it did not).
      diverged: True when a non-finite objective (or, after a `run` chunk's last step,
        a non-finite parameter) appeared; the parameters are then those it appeared at.
      diverge_step: the step that diverged (-1 if none); its update was not applied.
    """

    params: Any
    opt_state: Any
    best_params: Any
    best_loss: Any
    best_step: Any
    since_best: Any
    active: Any
    stop_step: Any
    diverged: Any
    diverge_step: Any


class StepLog(NamedTuple):
    """What the compiled loop reports per step (stacked to [T], or [S, T] in a sweep).

    Attributes:
      ran: the run was active when the step began.
      train_loss: loss of the step's batch before its update (NaN if not ran).
      is_check: a validation check followed this step's update.
      val_loss, val_accuracy, train_accuracy: the check's numbers (NaN when no check).
    """

    ran: Any
    train_loss: Any
    is_check: Any
    val_loss: Any
    val_accuracy: Any
    train_accuracy: Any


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


def keys_for(seed) -> tuple[jax.Array, jax.Array]:
    """(init_key, data_key) derived from an integer seed (traceable)."""
    key = jax.random.PRNGKey(seed)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def tree_where(cond, new, old):
    """Leaf-wise `where(cond, new, old)` for a scalar boolean `cond`."""
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def _tree_all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _after_all(grads):
    """`grads` with every leaf made to depend on the small leaves (biases), values unchanged.

    In an MLP step the backward product delta W^T reads a weight that the weight's own
    gradient does not need, so XLA cannot prove that the read happens before the weight's
    in-place update and copies the weight every step (20 MB a step in the hw3 network,
    about a tenth of its step time; WORKSPACE.md). The bias gradients sum the deltas, which
    come after every backward product, so adding to each leaf an exact zero computed from
    one element of each bias gradient orders every update after the backward pass. The
    zero is `isnan(t) * 0`, never NaN, and XLA does not fold it away (a float `x * 0` may
    be NaN). Only small leaves feed it: XLA fuses it into each update, and a weight read
    there would in turn have to be copied. Models without small leaves are left as they are.
    """
    leaves = [a for a in jax.tree.leaves(grads) if jnp.ndim(a) > 0]
    if len(leaves) < 2:
        return grads
    largest = max(a.size for a in leaves)
    small = [a for a in leaves if a.size * 64 <= largest]
    if not small:
        return grads
    token = sum(jnp.ravel(a)[0].astype(jnp.float32) for a in small)
    zero = jnp.isnan(token).astype(jnp.float32) * 0
    return jax.tree.map(lambda a: a + zero.astype(a.dtype), grads)


def make_engine(config: TrainConfig, model: Model, num_train: int) -> Engine:
    """Builds the pure functions of one training run.

    Args:
      config: static config.
      model: the bound model (`jaxlr.objective.make_model`).
      num_train: N, number of training examples (static).
    Returns:
      An `Engine`.
    """
    m = num_batches(num_train, config.batch_size, config.drop_last)
    e = config.eval_every or max(1, m // 5)
    total_steps = config.num_epochs * m
    n_train_eval = min(config.train_eval_size or num_train, num_train)

    def logged(obj, ce):
        return obj if config.log_loss == "objective" else ce

    def loss_and_grad(params, x, y, l2, mask):
        if config.grad == "autodiff":
            (obj, ce), g = jax.value_and_grad(model.loss, has_aux=True)(params, x, y, l2, mask)
        else:
            obj, ce = model.loss(params, x, y, l2, mask)
            g = model.grad(params, x, y, l2, mask)
        return obj, ce, g

    def init(hparams: HParams) -> TrainState:
        init_key, _ = keys_for(hparams.seed)
        params = model.init(init_key)
        opt_state = make_optimizer(config, hparams, total_steps).init(params)
        dtype = jax.tree.leaves(params)[0].dtype
        return TrainState(
            params=params,
            opt_state=opt_state,
            best_params=params if config.early_stopping else None,
            best_loss=jnp.array(jnp.inf, dtype),
            best_step=jnp.array(-1, jnp.int32),
            since_best=jnp.array(0, jnp.int32),
            active=jnp.array(True),
            stop_step=jnp.array(-1, jnp.int32),
            diverged=jnp.array(False),
            diverge_step=jnp.array(-1, jnp.int32),
        )

    def check(state: TrainState, hparams: HParams, data: Data, step):
        """Validation after this step's update, and the early-stopping bookkeeping."""
        obj, ce = model.loss(state.params, data.x_val, data.y_val, hparams.l2)
        val_loss = logged(obj, ce)
        val_acc = model.accuracy(model.apply(state.params, data.x_val), data.y_val)
        x_t, y_t = data.x_train[:n_train_eval], data.y_train[:n_train_eval]
        train_acc = model.accuracy(model.apply(state.params, x_t), y_t)
        finite = jnp.isfinite(val_loss)
        improved = state.active & finite & (val_loss < state.best_loss)
        since_best = jnp.where(improved, 0, state.since_best + state.active.astype(jnp.int32))
        stop = state.active & (since_best >= config.patience) & config.early_stopping
        diverge = state.active & ~finite
        state = state._replace(
            best_params=(
                tree_where(improved, state.params, state.best_params)
                if config.early_stopping
                else None
            ),
            best_loss=jnp.where(improved, val_loss, state.best_loss),
            best_step=jnp.where(improved, step, state.best_step),
            since_best=since_best,
            active=state.active & ~stop & ~diverge,
            stop_step=jnp.where(stop, step, state.stop_step),
            diverged=state.diverged | diverge,
            diverge_step=jnp.where(diverge, step, state.diverge_step),
        )
        return state, (val_loss, val_acc, train_acc)

    def run(state: TrainState, hparams: HParams, data: Data, start_epoch, num_epochs: int):
        tx = make_optimizer(config, hparams, total_steps)
        _, data_key = keys_for(hparams.seed)
        nan = jnp.array(jnp.nan, state.best_loss.dtype)

        def step_fn(state: TrainState, inputs):
            idx_B, mask_B, step = inputs
            x, y = data.x_train[idx_B], data.y_train[idx_B]
            mask = None if config.drop_last else mask_B
            obj, ce, grads = loss_and_grad(state.params, x, y, hparams.l2, mask)
            grads = _after_all(grads)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            # The divergence check reads no parameter: the objective is finite only if the
            # parameters it was computed at are (lambda * sum w^2 covers every penalised
            # weight, 0 * inf being NaN at lambda = 0 too, and a non-finite weight or bias
            # makes the logits non-finite), so a finite objective certifies this step's
            # starting point. A non-finite one stops the run before this step's update,
            # with the parameters it was computed at. A separate pass over the new
            # parameters cost a third of the step time of the 7.4M-parameter hw3 network
            # (WORKSPACE.md); the parameters after the last step are checked in `run`.
            finite = jnp.isfinite(obj)
            ran = state.active
            update = ran & finite
            diverge = ran & ~finite
            state = state._replace(
                params=tree_where(update, params, state.params),
                opt_state=tree_where(update, opt_state, state.opt_state),
                active=update,
                diverged=state.diverged | diverge,
                diverge_step=jnp.where(diverge, step, state.diverge_step),
            )
            # `step` is not batched under vmap, so this stays a real branch in a sweep.
            state, (val_loss, val_acc, train_acc) = jax.lax.cond(
                step % e == 0,
                lambda s: check(s, hparams, data, step),
                lambda s: (s, (nan, nan, nan)),
                state,
            )
            is_check = (step % e == 0) & update
            out = StepLog(
                ran=ran,
                train_loss=jnp.where(ran, logged(obj, ce), nan),
                is_check=is_check,
                val_loss=jnp.where(is_check, val_loss, nan),
                val_accuracy=jnp.where(is_check, val_acc, nan),
                train_accuracy=jnp.where(is_check, train_acc, nan),
            )
            return state, out

        def epoch_fn(state, epoch):
            key = jax.random.fold_in(data_key, epoch)
            idx_MB, mask_MB = epoch_batches(
                key,
                num_train,
                config.batch_size,
                shuffle=config.shuffle,
                drop_last=config.drop_last,
            )
            steps = epoch * m + jnp.arange(m, dtype=jnp.int32)
            return jax.lax.scan(step_fn, state, (idx_MB, mask_MB, steps))

        epochs = jnp.asarray(start_epoch, jnp.int32) + jnp.arange(num_epochs, dtype=jnp.int32)
        state, logs = jax.lax.scan(epoch_fn, state, epochs)
        # The last update of the chunk has no later objective to certify it: check its
        # result once (a unit saturated by an infinite unpenalised bias also only shows here).
        bad = state.active & ~_tree_all_finite(state.params)
        last_step = (epochs[-1] + 1) * m - 1
        state = state._replace(
            active=state.active & ~bad,
            diverged=state.diverged | bad,
            diverge_step=jnp.where(bad, last_step, state.diverge_step),
        )
        return state, jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), logs)

    def evaluate(params, hparams: HParams, data: Data) -> dict:
        out = {}
        for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val)):
            obj, ce = model.loss(params, x, y, hparams.l2)
            out[f"{split}_loss"] = logged(obj, ce)
            out[f"{split}_cross_entropy"] = ce
            out[f"{split}_objective"] = obj
            out[f"{split}_accuracy"] = model.accuracy(model.apply(params, x), y)
        return out

    return Engine(config, model, m, e, total_steps, init, run, evaluate)


def returned_params(state: TrainState):
    """The parameters a run returns: those of the best check with early stopping."""
    return state.best_params if state.best_params is not None else state.params


class TrainingDiverged(RuntimeError):
    """A run produced a non-finite loss or parameter."""


@dataclasses.dataclass
class TrainResult:
    """What `fit` returns (host-side numpy values).

    Attributes:
      params: returned parameters (best check's with early stopping).
      state: final `TrainState`.
      history: dict of numpy arrays (see `history_from_logs`).
      metrics: final numbers from `params`, plus "steps" and "early_stopping".
      wall_seconds: host time of the training loop (compilation included).
    """

    params: Any
    state: TrainState
    history: dict
    metrics: dict
    wall_seconds: float


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


def concat_histories(parts: list[dict]) -> dict:
    """Concatenates histories of consecutive chunks."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    mnt, s = divmod(rem, 60)
    return f"{h}:{mnt:02d}:{s:02d}" if h else f"{mnt:d}:{s:02d}"


def fit(
    config: TrainConfig,
    hparams: HParams,
    data: Data,
    *,
    model: Model | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    log_fn: Callable[[str], None] | None = None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Trains one run: compiled chunks of epochs, progress lines, checkpoints, early stopping.

    Args:
      config: static config.
      hparams: scalar hyper-parameters of the run.
      data: preprocessed arrays; their float dtype is the compute dtype.
      model: a bound model (default: built from `config` and the data's shape and dtype).
      checkpoint_path: file to checkpoint into after every chunk (atomically); with `resume`
        an existing checkpoint of the same config and hparams is continued.
      resume: continue from `checkpoint_path` if it exists.
      log_fn: where progress lines go (default: the "jaxlr.train" logger at INFO).
      stop_after_epochs: end the loop after this many epochs of this call (for tests of
        resuming: an interrupted run).
    Returns:
      `TrainResult`.
    Raises:
      TrainingDiverged: a non-finite loss or parameter appeared; names step and learning rate.
    """
    log_fn = log_fn or log.info
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
    if model is None:
        engine, init_fn, run_fn, eval_fn = _compiled_engine(
            config, x_train.shape[1], np.dtype(x_train.dtype).name, x_train.shape[0]
        )
    else:
        engine = make_engine(config, model, x_train.shape[0])
        init_fn, run_fn, eval_fn = _jit_engine(engine)
    m = engine.num_batches

    state = init_fn(hparams)
    start_epoch, parts = 0, []
    meta = {"config": config.to_dict(), "hparams": _hparams_dict(hparams)}
    if checkpoint_path is not None and resume and os.path.exists(checkpoint_path):
        state, start_epoch, parts = _restore_run(checkpoint_path, state, meta)
        log_fn(f"resumed from {checkpoint_path} at epoch {start_epoch}")

    t0 = time.perf_counter()
    epoch = start_epoch
    epochs_this_call = 0
    while epoch < config.num_epochs and bool(state.active):
        n = min(config.epochs_per_call, config.num_epochs - epoch)
        t_chunk = time.perf_counter()
        state, logs = run_fn(state, hparams, data, epoch, n)
        part = history_from_logs(jax.device_get(logs), m, start_step=epoch * m)
        parts.append(part)
        epoch += n
        epochs_this_call += n
        dt = time.perf_counter() - t_chunk
        _log_progress(
            log_fn,
            config,
            epoch,
            part,
            len(part["step"]) / max(dt, 1e-9),
            time.perf_counter() - t0,
            epochs_this_call,
            state,
        )
        if checkpoint_path is not None:
            _save_run(checkpoint_path, state, epoch, parts, meta)
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
    wall = time.perf_counter() - t0

    history = concat_histories(parts)
    if bool(state.diverged):
        step = int(state.diverge_step)
        raise TrainingDiverged(
            f"training diverged at step {step} (epoch {step // m}) with learning rate "
            f"{float(hparams.learning_rate):g}: the loss or the parameters became non-finite. "
            "Lower the learning rate (or the L2 strength); no weights were returned."
        )
    params = returned_params(state)
    metrics = {k: float(v) for k, v in eval_fn(params, hparams, data).items()}
    metrics["steps"] = int(len(history.get("step", [])))
    # Epochs that ran (a run that stopped early ends inside its last chunk).
    metrics["epochs"] = int(history["step"][-1]) // m + 1 if metrics["steps"] else 0
    if config.early_stopping:
        metrics["early_stopping"] = early_stopping_summary(state, m)
    return TrainResult(jax.device_get(params), jax.device_get(state), history, metrics, wall)


def _jit_engine(engine: Engine):
    return jax.jit(engine.init), jax.jit(engine.run, static_argnums=4), jax.jit(engine.evaluate)


@functools.lru_cache(maxsize=32)
def _compiled_engine(config: TrainConfig, num_features: int, dtype: str, num_train: int):
    """Engine and jitted functions per (config, data shape, dtype): repeated fits reuse them."""
    engine = make_engine(config, model_for(config, num_features, jnp.dtype(dtype)), num_train)
    return (engine, *_jit_engine(engine))


def _hparams_dict(hparams: HParams) -> dict:
    return {
        "learning_rate": float(hparams.learning_rate),
        "l2": float(hparams.l2),
        "momentum": float(hparams.momentum),
        "seed": int(hparams.seed),
    }


def _log_progress(log_fn, config, epoch, part, steps_per_s, elapsed, done_epochs, state):
    loss = float(np.mean(part["train_loss"])) if len(part["train_loss"]) else float("nan")
    msg = f"epoch {epoch}/{config.num_epochs}  train_loss {loss:.4f}"
    if len(part["val_loss"]):
        msg += (
            f"  val_loss {part['val_loss'][-1]:.4f}  val_acc {part['val_accuracy'][-1]:.4f}"
            f"  train_acc {part['train_accuracy'][-1]:.4f}"
        )
    left = (config.num_epochs - epoch) * elapsed / max(done_epochs, 1)
    msg += f"  {steps_per_s:,.0f} steps/s  elapsed {_fmt_time(elapsed)}  left {_fmt_time(left)}"
    if not bool(state.active):
        msg += "  (stopped)" if not bool(state.diverged) else "  (DIVERGED)"
    log_fn(msg)


def _save_run(path, state: TrainState, epoch: int, parts: list[dict], meta: dict) -> None:
    history = concat_histories(parts)
    ckpt.save_checkpoint(
        path,
        {"state": jax.device_get(state), "history": history},
        step=epoch,
        meta={**meta, "epoch": epoch, "kind": "train_run"},
    )


def _restore_run(path, template: TrainState, meta: dict):
    flat, saved_meta = ckpt.load_flat(path)
    for key in ("config", "hparams"):
        if saved_meta.get(key) != meta[key]:
            raise ckpt.CheckpointError(
                f"checkpoint {path} was written by a run with another {key}: "
                f"{saved_meta.get(key)} != {meta[key]}; remove it or use another path"
            )
    state = ckpt.restore_tree(flat, template, prefix="state", path=path)
    history = {k[len("history/") :]: v for k, v in flat.items() if k.startswith("history/")}
    epoch = int(saved_meta["epoch"])
    return state, epoch, [history] if history else []


def num_steps(config: TrainConfig, num_train: int) -> int:
    """Steps of a full run of `config` on `num_train` examples."""
    return config.num_epochs * num_batches(num_train, config.batch_size, config.drop_last)


__all__ = [
    "Data",
    "TrainState",
    "StepLog",
    "Engine",
    "TrainResult",
    "TrainingDiverged",
    "make_engine",
    "model_for",
    "fit",
    "returned_params",
    "history_from_logs",
    "history_records",
    "concat_histories",
    "early_stopping_summary",
    "keys_for",
    "tree_where",
    "num_steps",
]
