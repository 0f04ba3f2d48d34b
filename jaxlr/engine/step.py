"""The rules of the training loop, each a module-level pure function that can be tested alone.

`jaxlr.engine.train.make_engine` binds these to one config and model and nests them in `lax.scan`;
`jaxlr.engine.sweep` vmaps the result. Nothing here reads the host, a file or a flag.

- `schedule_numbers`: batches per epoch, steps between checks, total steps.
- `init_state`: the `TrainState` of a fresh run.
- `train_step`: one SGD/optax update, the divergence rule on its objective, and (at check
  steps) `validation_check`.
- `validation_check`: validation numbers, the early-stopping rule and the divergence rule.
- `divergence_reason`, `early_stopping_rule`, `is_check_step`, `chunk_end_rule`: the rules.
- `points_in_groups`: a function whose vmap computes the points in groups of a fixed size,
  so that a point's numbers on shared data do not depend on how many points are vmapped
  together (`group_size`: the widest group a point's shapes allow).

Dimensions: N training examples, V validation examples, D features, B batch size,
M batches per epoch, E steps between checks, T steps, S sweep points.

Divergence. A run has diverged when its objective (cross-entropy plus the L2 term) is
non-finite, or exceeds `TrainConfig.diverge_factor` times its initial objective: the
objective of the run's first step, at the initial parameters, stored in the state (so a
resumed run compares with the same number). The rule is applied to the objective of every
step's batch and, at each check, to the validation objective, and both are numbers the loop
computes anyway: no step makes an extra pass over the parameters. A finite objective
certifies that the parameters it was computed at are finite (lambda * sum w^2 covers every
penalised weight, 0 * inf is NaN at lambda = 0 too, and a non-finite weight or bias makes the
logits non-finite); only the parameters after a chunk's last step, which no objective
certifies, are checked once by `chunk_end_rule`. A step whose objective diverges is not
applied: the run is frozen with the parameters that objective was computed at; a check that
diverges freezes the run with the parameters it checked. `TrainState.diverge_reason` says
which rule fired (`DIVERGE_REASONS`). With small batches the factor rule compares one
batch's objective with the first batch's: measured on the default experiments, sound runs
stay below 10x (online SGD, batch 1: 9.0x), far below the default factor 1e3.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlr.core.objective import Model
from jaxlr.engine.batches import epoch_batches, num_batches
from jaxlr.engine.config import HParams, TrainConfig
from jaxlr.engine.optim import make_optimizer

__all__ = [
    "DIVERGE_FACTOR",
    "DIVERGE_NONE",
    "DIVERGE_NONFINITE",
    "DIVERGE_PARAMS",
    "DIVERGE_REASONS",
    "DIVERGE_VAL_FACTOR",
    "DIVERGE_VAL_NONFINITE",
    "Batch",
    "Data",
    "Schedule",
    "StepLog",
    "TrainState",
    "after_all",
    "chunk_end_rule",
    "points_in_groups",
    "describe_divergence",
    "divergence_reason",
    "early_stopping_rule",
    "epoch_inputs",
    "init_state",
    "is_check_step",
    "keys_for",
    "logged_loss",
    "loss_and_grad",
    "schedule_numbers",
    "train_step",
    "tree_all_finite",
    "tree_where",
    "validation_check",
]

# Codes of `TrainState.diverge_reason` (0: the run has not diverged).
DIVERGE_NONE = 0
DIVERGE_NONFINITE = 1  # a step's training objective was NaN or infinite
DIVERGE_FACTOR = 2  # a step's training objective exceeded diverge_factor x the initial one
DIVERGE_PARAMS = 3  # a parameter was non-finite after the last step of a `run` chunk
DIVERGE_VAL_NONFINITE = 4  # the validation objective at a check was NaN or infinite
DIVERGE_VAL_FACTOR = 5  # the validation objective exceeded diverge_factor x the initial one

DIVERGE_REASONS = {
    DIVERGE_NONE: "did not diverge",
    DIVERGE_NONFINITE: "training objective not finite",
    DIVERGE_FACTOR: "training objective above diverge_factor x initial objective",
    DIVERGE_PARAMS: "parameter not finite after the last step of a chunk",
    DIVERGE_VAL_NONFINITE: "validation objective not finite",
    DIVERGE_VAL_FACTOR: "validation objective above diverge_factor x initial objective",
}


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
      diverged: True once a divergence rule fired (see the module docstring); the
        parameters are then those the offending objective was computed at.
      diverge_step: the step that diverged (-1 if none); its update was not applied.
      initial_objective: objective of the run's first step, at the initial parameters
        (NaN before it); the reference of the `diverge_factor` rule.
      diverge_reason: which rule fired, a key of `DIVERGE_REASONS` (0 if none).
      diverge_value: the objective that fired it (NaN for `DIVERGE_PARAMS` or none).
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
    initial_objective: Any = None
    diverge_reason: Any = None
    diverge_value: Any = None


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


class Batch(NamedTuple):
    """The scanned inputs of one step.

    Attributes:
      idx_B: int32 example indices of the batch.
      mask_B: bool, False on padding of a kept last partial batch.
      step: int32 global step (0-based, counted from the start of the run).
    """

    idx_B: Any
    mask_B: Any
    step: Any


class Schedule(NamedTuple):
    """The numbers of a run's step schedule.

    Attributes:
      batches_per_epoch: M.
      eval_every: E, steps between validation checks (checks after steps 0, E, 2E, ...).
      total_steps: steps of the full run, num_epochs * M.
    """

    batches_per_epoch: int
    eval_every: int
    total_steps: int


# ---------------------------------------------------------------------------------------------
# Small helpers.


def keys_for(seed) -> tuple[jax.Array, jax.Array]:
    """(init_key, data_key) derived from an integer seed (traceable)."""
    key = jax.random.PRNGKey(seed)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def tree_where(cond, new, old):
    """Leaf-wise `where(cond, new, old)` for a scalar boolean `cond`."""
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def tree_all_finite(tree) -> jax.Array:
    """True when every element of every leaf of `tree` is finite (True for no leaves)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


# Points of a sweep block are computed in groups of a fixed number of points
# (`points_in_groups`). The widest group a point's shapes allow (`group_size`): a group's
# batched arguments hold at most GROUP_NUMBERS numbers, and a group has at most MAX_GROUP
# points (a power of two). A sweep picks its width once, from the whole sweep
# (`jaxlr.engine.blocks.sweep_group`), so every block, shard and resumed run of it computes
# a point in a group of the same width.
GROUP_NUMBERS = 1 << 19
MAX_GROUP = 256


def group_size(numbers_per_point: int) -> int:
    """The widest group for a point whose batched arguments hold `numbers_per_point` numbers.

    The largest power of two <= MAX_GROUP whose group holds at most GROUP_NUMBERS numbers
    (1 for a large point): 256 for logistic regression on MNIST (786 numbers a point: 785
    weights and lambda), 64 for softmax regression (7,851), 1 for the hw3 network. It
    depends on a point's shapes only, never on how many points are vmapped together.
    """
    g = 1
    while g * 2 <= MAX_GROUP and g * 2 * max(1, int(numbers_per_point)) <= GROUP_NUMBERS:
        g *= 2
    return g


def points_in_groups(fn, group: int | None = 0):
    """`fn` whose vmap (on CPU) computes the points in groups of `group` points.

    Under vmap XLA's CPU backend computes a point's numbers in an order that depends on G,
    the number of points vmapped together: a product of batched parameters [G, D, K] with
    shared data [N, D] is one product [N, D] x [D, G K] whose sums depend on G K, and a
    reduction of [G, B, K] over B (a loss's mean, a gradient's sum) is vectorised one way
    for a few points and another for more (measured, float32: a point's validation loss
    moved by up to 2.4e-7 between blocks of 1-12 and 16-36 points). Here the G points are
    padded (with copies of the first point, whose results are dropped) to a multiple of
    `group` and computed by `lax.map` over groups, each group a plain vmap of width
    `group`: every group has the same shapes in a block of any width, so a point's numbers
    are the same bits in any block, and the points of a group share one pass over the
    shared data (one product [N, D] x [D, group K]). With `group` = 1 each point runs
    unvmapped (an unvmapped run's bits). Same bits at every position of a group, whatever
    the other points, is measured, not structural (a column's sums in one product do not
    depend on the other columns): `tests/test_shards.py` checks it, for the models and
    group widths the sweeps use. `fn` itself is not differentiated (`custom_vmap` has no
    derivative rule here), though it may differentiate inside. On other backends, where one
    wide product is what the hardware wants, the plain vmap is kept.

    Args:
      fn: a function of arrays (pytrees of arrays) to arrays.
      group: points per group (static); 0: `group_size` of the batched arguments; None:
        no groups, `fn` itself (a plain vmap, whose bits depend on the block's width).
    Returns:
      The same function; under `jax.vmap` the batched arguments are mapped group by group.
    """
    if group is None:
        return fn
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        leaves, treedef = jax.tree.flatten(args)
        flags = jax.tree.leaves(in_batched)
        axes = tuple(jax.tree.unflatten(treedef, [0 if b else None for b in flags]))
        if jax.default_backend() != "cpu":
            out = jax.vmap(fn, in_axes=axes)(*args)
            return out, jax.tree.map(lambda _: True, out)

        batched = [a for a, b in zip(leaves, flags, strict=True) if b]
        g = int(group) or group_size(sum(a.size // axis_size for a in batched))

        def point_args(part):
            it = iter(part)
            point = [next(it) if b else a for a, b in zip(leaves, flags, strict=True)]
            return jax.tree.unflatten(treedef, point)

        if g == 1:
            out = jax.lax.map(lambda one: wrapped(*point_args(one)), batched)
            return out, jax.tree.map(lambda _: True, out)

        n = -(-axis_size // g) * g

        def grouped(a):
            if n > axis_size:
                a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (n - axis_size, *a.shape[1:]))])
            return a.reshape((n // g, g, *a.shape[1:]))

        out = jax.lax.map(
            lambda part: jax.vmap(fn, in_axes=axes)(*point_args(part)),
            [grouped(a) for a in batched],
        )
        out = jax.tree.map(lambda o: o.reshape((n, *o.shape[2:]))[:axis_size], out)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def after_all(grads):
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


# ---------------------------------------------------------------------------------------------
# The rules.


def schedule_numbers(config: TrainConfig, num_train: int) -> Schedule:
    """The schedule of a run of `config` on `num_train` examples.

    The one place these numbers are computed: M = `jaxlr.engine.batches.num_batches`, E =
    `config.eval_every`, or max(1, M // 5) when it is 0 (the course's five checks per
    epoch), and T = num_epochs * M.

    Args:
      config: static config.
      num_train: N, training examples.
    Returns:
      `Schedule(batches_per_epoch, eval_every, total_steps)` of Python ints.
    Raises:
      ValueError: N or the batch size is not positive, or no full batch with drop_last.
    """
    m = num_batches(num_train, config.batch_size, config.drop_last)
    e = int(config.eval_every) or max(1, m // 5)
    return Schedule(m, e, int(config.num_epochs) * m)


def train_eval_count(config: TrainConfig, num_train: int) -> int:
    """How many training examples the training accuracy of a check uses: the first
    `config.train_eval_size` (all when 0). A size above N is refused at `fit` / `run_sweep`
    entry (`jaxlr.engine.data_checks.check_inputs`); the `min` only keeps direct engine
    callers in bounds."""
    return min(int(config.train_eval_size) or int(num_train), int(num_train))


def is_check_step(step, eval_every: int):
    """True where a validation check follows the update of `step` (steps 0, E, 2E, ...)."""
    return step % eval_every == 0


def divergence_reason(
    objective,
    initial_objective,
    factor: float,
    codes: tuple[int, int] = (DIVERGE_NONFINITE, DIVERGE_FACTOR),
) -> jax.Array:
    """Which divergence rule an objective trips: 0 (none), codes[0] or codes[1].

    codes[0] when `objective` is NaN or infinite; else codes[1] when it exceeds
    `factor * initial_objective` (never while the initial objective is NaN, i.e. unknown,
    nor with `factor` = inf).

    Args:
      objective: scalar (or array) objective.
      initial_objective: the run's initial objective (NaN: unknown).
      factor: `TrainConfig.diverge_factor` (static).
      codes: the reason codes for (non-finite, above the factor).
    Returns:
      int32 array of the shape of `objective`.
    """
    objective = jnp.asarray(objective)
    nonfinite = ~jnp.isfinite(objective)
    above = objective > factor * initial_objective
    none = jnp.zeros(objective.shape, jnp.int32)
    return jnp.where(nonfinite, codes[0], jnp.where(above, codes[1], none)).astype(jnp.int32)


def early_stopping_rule(active, ok, val_loss, best_loss, since_best, patience: int, enabled: bool):
    """The early-stopping bookkeeping of one check.

    A check improves when the run is active, the check is sound (`ok`, no divergence) and
    the validation loss is below the best so far; `since_best` counts the active checks
    since the last improvement; the run stops when it reaches `patience` (only if
    `enabled`). This is the issue's rule: checks since the global minimum.

    Args:
      active, ok: scalar bools.
      val_loss, best_loss: scalars.
      since_best: int32 scalar, the count before this check.
      patience: static int.
      enabled: static bool, `config.early_stopping`.
    Returns:
      (improved, since_best, stop): bool, int32, bool.
    """
    improved = active & ok & (val_loss < best_loss)
    since_best = jnp.where(improved, 0, since_best + active.astype(jnp.int32))
    stop = active & (since_best >= patience) & enabled
    return improved, since_best, stop


def _flag_divergence(state: TrainState, diverge, step, reason, value) -> TrainState:
    return state._replace(
        diverged=state.diverged | diverge,
        diverge_step=jnp.where(diverge, step, state.diverge_step),
        diverge_reason=jnp.where(diverge, reason, state.diverge_reason),
        diverge_value=jnp.where(diverge, value, state.diverge_value).astype(
            state.diverge_value.dtype
        ),
    )


def chunk_end_rule(state: TrainState, last_step) -> TrainState:
    """The parameters after a chunk's last step, which no objective certifies: checked once.

    An active run with a non-finite parameter is frozen as diverged at `last_step` with
    reason `DIVERGE_PARAMS` (a unit saturated by an infinite unpenalised bias also only
    shows here).
    """
    bad = state.active & ~tree_all_finite(state.params)
    state = state._replace(active=state.active & ~bad)
    nan = jnp.full((), jnp.nan, state.diverge_value.dtype)
    return _flag_divergence(state, bad, last_step, DIVERGE_PARAMS, nan)


def init_state(config: TrainConfig, model: Model, hparams: HParams, total_steps: int):
    """The `TrainState` of a fresh run: initial parameters from the seed, nothing seen yet."""
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
        initial_objective=jnp.array(jnp.nan, dtype),
        diverge_reason=jnp.array(DIVERGE_NONE, jnp.int32),
        diverge_value=jnp.array(jnp.nan, dtype),
    )


def logged_loss(config: TrainConfig, objective, cross_entropy):
    """The loss that is logged and early-stopped on (`config.log_loss`)."""
    return objective if config.log_loss == "objective" else cross_entropy


def loss_and_grad(config: TrainConfig, model: Model, params, x, y, l2, mask):
    """(objective, cross_entropy, grads) of a batch, by the analytic or autodiff gradient."""
    if config.grad == "autodiff":
        (obj, ce), g = jax.value_and_grad(model.loss, has_aux=True)(params, x, y, l2, mask)
    else:
        obj, ce = model.loss(params, x, y, l2, mask)
        g = model.grad(params, x, y, l2, mask)
    return obj, ce, g


def validation_check(
    state: TrainState,
    hparams: HParams,
    data: Data,
    step,
    *,
    config: TrainConfig,
    model: Model,
    group: int | None = 0,
):
    """Validation after `step`'s update: numbers, early-stopping rule, divergence rule.

    Args:
      state: the state after the step's update.
      hparams, data: the run's.
      step: the global step.
      config, model: static, bound by the engine.
      group: points per group in a sweep on CPU (`points_in_groups`; 0: from the shapes;
        None: a plain vmap).
    Returns:
      (state, (val_loss, val_accuracy, train_accuracy)); train accuracy on the first
      `config.train_eval_size` training examples (all when 0).
    """
    num_train = data.x_train.shape[0]
    n_eval = train_eval_count(config, num_train)
    x_t, y_t = data.x_train[:n_eval], data.y_train[:n_eval]

    def numbers(params, l2, x_val, y_val, x_t, y_t):
        obj, ce = model.loss(params, x_val, y_val, l2)
        val_acc = model.accuracy(model.apply(params, x_val), y_val)
        return (
            obj,
            logged_loss(config, obj, ce),
            val_acc,
            model.accuracy(model.apply(params, x_t), y_t),
        )

    # In fixed groups of points in a sweep: a point's check does not depend on its block's width.
    obj, val_loss, val_acc, train_acc = points_in_groups(numbers, group)(
        state.params, hparams.l2, data.x_val, data.y_val, x_t, y_t
    )
    # A non-finite cross-entropy makes the objective non-finite, so checking the objective
    # also catches a non-finite logged loss.
    reason = divergence_reason(
        obj,
        state.initial_objective,
        config.diverge_factor,
        (DIVERGE_VAL_NONFINITE, DIVERGE_VAL_FACTOR),
    )
    ok = reason == DIVERGE_NONE
    improved, since_best, stop = early_stopping_rule(
        state.active,
        ok,
        val_loss,
        state.best_loss,
        state.since_best,
        config.patience,
        config.early_stopping,
    )
    diverge = state.active & ~ok
    state = state._replace(
        best_params=(
            tree_where(improved, state.params, state.best_params) if config.early_stopping else None
        ),
        best_loss=jnp.where(improved, val_loss, state.best_loss),
        best_step=jnp.where(improved, step, state.best_step),
        since_best=since_best,
        active=state.active & ~stop & ~diverge,
        stop_step=jnp.where(stop, step, state.stop_step),
    )
    state = _flag_divergence(state, diverge, step, reason, obj)
    return state, (val_loss, val_acc, train_acc)


def train_step(
    state: TrainState,
    hparams: HParams,
    data: Data,
    batch: Batch,
    *,
    config: TrainConfig,
    model: Model,
    schedule: Schedule,
    group: int | None = 0,
):
    """One step of a run: update, divergence rule, and a check at check steps.

    The update is applied only when the run is active and the step's objective passes the
    divergence rule (`divergence_reason`); the objective is that of the parameters the step
    starts from, so a failing step freezes the run at those parameters.

    Args:
      state: the run's state.
      hparams: the run's hyper-parameters (scalars, traced).
      data: the run's arrays.
      batch: the step's `Batch`.
      config, model, schedule: static, bound by the engine.
      group: points per group in a sweep on CPU (`points_in_groups`; 0: from the shapes;
        None: a plain vmap).
    Returns:
      (state, StepLog of scalars).
    """
    tx = make_optimizer(config, hparams, schedule.total_steps)
    idx_B, mask_B, step = batch
    x, y = data.x_train[idx_B], data.y_train[idx_B]
    mask = None if config.drop_last else mask_B
    # In fixed groups of points in a sweep (on CPU): XLA CPU's reductions over a batch of G
    # points (the loss's mean, the gradient's sums) round in an order that depends on G.
    step_numbers = points_in_groups(
        lambda p, x, y, l2, m: loss_and_grad(config, model, p, x, y, l2, m), group
    )
    obj, ce, grads = step_numbers(state.params, x, y, hparams.l2, mask)
    grads = after_all(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ran = state.active
    # The first objective of the run is the reference of the factor rule.
    initial = jnp.where(ran & jnp.isnan(state.initial_objective), obj, state.initial_objective)
    reason = divergence_reason(obj, initial, config.diverge_factor)
    update = ran & (reason == DIVERGE_NONE)
    diverge = ran & (reason != DIVERGE_NONE)
    state = state._replace(
        params=tree_where(update, params, state.params),
        opt_state=tree_where(update, opt_state, state.opt_state),
        active=update,
        initial_objective=initial,
    )
    state = _flag_divergence(state, diverge, step, reason, obj)
    nan = jnp.array(jnp.nan, state.best_loss.dtype)
    check = is_check_step(step, schedule.eval_every)
    # `step` is not batched under vmap, so this stays a real branch in a sweep.
    state, (val_loss, val_acc, train_acc) = jax.lax.cond(
        check,
        lambda s: validation_check(s, hparams, data, step, config=config, model=model, group=group),
        lambda s: (s, (nan, nan, nan)),
        state,
    )
    is_check = check & update
    out = StepLog(
        ran=ran,
        train_loss=jnp.where(ran, logged_loss(config, obj, ce), nan),
        is_check=is_check,
        val_loss=jnp.where(is_check, val_loss, nan),
        val_accuracy=jnp.where(is_check, val_acc, nan),
        train_accuracy=jnp.where(is_check, train_acc, nan),
    )
    return state, out


def epoch_inputs(config: TrainConfig, schedule: Schedule, num_train: int, data_key, epoch):
    """The `Batch` inputs [M] of one epoch (its permutation from `fold_in(data_key, epoch)`)."""
    key = jax.random.fold_in(data_key, epoch)
    idx_MB, mask_MB = epoch_batches(
        key, num_train, config.batch_size, shuffle=config.shuffle, drop_last=config.drop_last
    )
    m = schedule.batches_per_epoch
    steps = epoch * m + jnp.arange(m, dtype=jnp.int32)
    return Batch(idx_MB, mask_MB, steps)


def describe_divergence(reason: int, value: float, initial: float, factor: float) -> str:
    """The rule that fired, in words with its numbers (for messages and reports)."""
    reason = int(reason)
    if reason in (DIVERGE_NONFINITE, DIVERGE_VAL_NONFINITE):
        which = "training" if reason == DIVERGE_NONFINITE else "validation"
        return f"the {which} objective was {float(value)} (not finite)"
    if reason in (DIVERGE_FACTOR, DIVERGE_VAL_FACTOR):
        which = "training" if reason == DIVERGE_FACTOR else "validation"
        return (
            f"the {which} objective {float(value):.4g} exceeded diverge_factor {factor:g} x "
            f"the initial objective {float(initial):.4g}"
        )
    if reason == DIVERGE_PARAMS:
        return "a parameter was not finite after the last step of a chunk"
    return DIVERGE_REASONS.get(reason, f"unknown divergence reason {reason}")
