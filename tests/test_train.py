"""Tests of the training engine (`jaxlr.engine.train`), optimizers and checkpoints on small data."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core.testing import assert_tree_allclose
from jaxlr.engine import optim, step
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.results import TrainingDiverged
from jaxlr.engine.step import Data
from jaxlr.engine.train import (
    fit,
    make_engine,
    measure_step_rate,
    model_for,
    num_steps,
)
from jaxlr.host import checkpoint as ckpt


def synthetic(n=240, v=120, d=9, k=None, seed=0, noise=1.0, dtype=np.float64):
    """Linearly generated labels with noise; the last feature is the constant 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + v, d)).astype(dtype)
    x = np.concatenate([x, np.ones((n + v, 1), dtype)], axis=1)
    if k is None:
        w = rng.normal(size=d + 1)
        y = (x @ w + noise * rng.normal(size=n + v) > 0).astype(np.int32)
    else:
        w = rng.normal(size=(d + 1, k))
        y = np.argmax(x @ w + noise * rng.normal(size=(n + v, k)), axis=1).astype(np.int32)
    return Data(x[:n], y[:n], x[n:], y[n:])


BASE = TrainConfig(model="logistic", batch_size=16, num_epochs=3, epochs_per_call=1)


def test_analytic_and_autodiff_train_to_the_same_numbers():
    for model, k in (("logistic", None), ("softmax", 4)):
        data = synthetic(k=k)
        cfg = dataclasses.replace(BASE, model=model, num_classes=k or 10, shuffle=True)
        hp = make_hparams(0.1, l2=0.01)
        a = fit(cfg, hp, data)
        b = fit(dataclasses.replace(cfg, grad="autodiff"), hp, data)
        assert_tree_allclose(a.params, b.params, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.history["train_loss"], b.history["train_loss"], rtol=1e-10)
        np.testing.assert_allclose(a.history["val_loss"], b.history["val_loss"], rtol=1e-10)


def test_evaluation_cadence_follows_the_course():
    data = synthetic(n=240)  # 15 batches of 16 -> checks every 3 steps
    r = fit(BASE, make_hparams(0.1), data)
    m = 240 // 16
    e = max(1, m // 5)
    assert list(r.history["check_step"]) == list(range(0, 3 * m, e))
    assert list(r.history["step"]) == list(range(3 * m))
    assert r.metrics["steps"] == 3 * m
    r2 = fit(dataclasses.replace(BASE, eval_every=7), make_hparams(0.1), data)
    assert list(r2.history["check_step"]) == list(range(0, 3 * m, 7))


def test_first_step_loss_is_on_the_first_batch_without_shuffle():
    data = synthetic()
    cfg = dataclasses.replace(BASE, init="zeros")
    r = fit(cfg, make_hparams(0.1), data)
    assert r.history["train_loss"][0] == pytest.approx(np.log(2.0), rel=1e-12)
    # The second step's batch is examples 16..31, seen by the weights after one update.
    model = model_for(cfg, data.x_train.shape[1], jnp.float64)
    params = model.init(jax.random.PRNGKey(0))
    g = model.grad(params, data.x_train[:16], data.y_train[:16], 0.0)
    params = jax.tree.map(lambda p, gi: p - 0.1 * gi, params, g)
    _, ce = model.loss(params, data.x_train[16:32], data.y_train[16:32], 0.0)
    assert r.history["train_loss"][1] == pytest.approx(float(ce), rel=1e-12)


def _expected_stop(val_losses, patience):
    best, since = np.inf, 0
    for i, v in enumerate(val_losses):
        if v < best:
            best, since = v, 0
        else:
            since += 1
            if since >= patience:
                return i
    return None


def test_early_stopping_stops_where_the_rule_says_and_restores_best_weights():
    # Few examples, many features, no L2: the validation loss rises after a while.
    data = synthetic(n=64, v=200, d=40, noise=3.0)
    cfg = dataclasses.replace(BASE, batch_size=8, num_epochs=60, patience=5, eval_every=4)
    hp = make_hparams(0.5)
    full = fit(cfg, hp, data)
    i_stop = _expected_stop(full.history["val_loss"], cfg.patience)
    assert i_stop is not None, "test data should overfit"
    es = fit(dataclasses.replace(cfg, early_stopping=True), hp, data)
    info = es.metrics["early_stopping"]
    m = 64 // 8
    assert info["stopped"]
    assert info["step"] == full.history["check_step"][i_stop]
    assert info["epoch"] == info["step"] // m
    i_best = int(np.argmin(full.history["val_loss"][: i_stop + 1]))
    assert info["best_step"] == full.history["check_step"][i_best]
    assert info["best_val_loss"] == pytest.approx(full.history["val_loss"][i_best], rel=1e-12)
    # The returned weights are the best check's: their validation loss is the best one.
    assert es.metrics["val_loss"] == pytest.approx(info["best_val_loss"], rel=1e-10)
    # The history ends at the stopping step and equals the full run's up to there.
    assert es.history["step"][-1] == info["step"]
    n = len(es.history["train_loss"])
    np.testing.assert_array_equal(es.history["train_loss"], full.history["train_loss"][:n])


def test_divergence_is_reported_with_step_and_learning_rate():
    data = synthetic(k=4)
    cfg = dataclasses.replace(BASE, model="softmax", num_classes=4, init="normal", init_std=1.0)
    big = Data(data.x_train * 1e3, data.y_train, data.x_val * 1e3, data.y_val)
    with pytest.raises(TrainingDiverged, match=r"step \d+ .*learning rate 1e\+30"):
        fit(cfg, make_hparams(1e306), big)


def test_divergence_is_seen_at_the_step_whose_objective_is_not_finite():
    d = synthetic(k=4)
    data = Data(*map(jnp.asarray, (d.x_train * 1e3, d.y_train, d.x_val * 1e3, d.y_val)))
    cfg = dataclasses.replace(
        BASE, model="softmax", num_classes=4, batch_size=240, num_epochs=3, eval_every=100
    )
    model = model_for(cfg, data.x_train.shape[1], data.x_train.dtype)
    engine = make_engine(cfg, model, 240)
    run = jax.jit(engine.run, static_argnums=4)
    hp = make_hparams(1e307)
    state0 = engine.init(hp)
    # Epochs 1-3 (steps 1-3; no validation check, which runs at steps divisible by 100):
    # step 1 starts from finite weights and its update overflows them; step 2 sees it.
    state, logs = run(state0, hp, data, 1, 3)
    assert np.isfinite(logs.train_loss[0]) and not np.isfinite(logs.train_loss[1])
    assert bool(state.diverged) and int(state.diverge_step) == 2 and not bool(state.active)
    np.testing.assert_array_equal(logs.ran, [True, True, False])
    assert not all(np.all(np.isfinite(w)) for w in jax.tree.leaves(state.params))
    # Which rule fired is recorded: here a non-finite training objective.
    assert int(state.diverge_reason) == step.DIVERGE_NONFINITE
    # The same overflow in the chunk's last step is caught by the end-of-chunk check.
    state, logs = run(state0, hp, data, 1, 1)
    assert np.isfinite(logs.train_loss[0])
    assert bool(state.diverged) and int(state.diverge_step) == 1 and not bool(state.active)
    assert int(state.diverge_reason) == step.DIVERGE_PARAMS
    # So is one in a step with a validation check (step 0), by the check itself.
    state, logs = run(state0, hp, data, 0, 3)
    assert bool(state.diverged) and int(state.diverge_step) == 0
    assert int(state.diverge_reason) == step.DIVERGE_VAL_NONFINITE
    # Learning rate 0.1 on inputs scaled by 1e3 overflows nothing: without the factor rule
    # (diverge_factor=inf) neither non-finite check trips ...
    lenient = make_engine(dataclasses.replace(cfg, diverge_factor=np.inf), model, 240)
    hp = make_hparams(0.1)
    state, logs = jax.jit(lenient.run, static_argnums=4)(lenient.init(hp), hp, data, 0, 3)
    assert not bool(state.diverged) and int(state.diverge_step) == -1
    assert np.all(np.isfinite(logs.val_loss[np.asarray(logs.is_check)]))
    # ... but the validation objective after step 0 is thousands of times the initial ln 4:
    # with the default factor 1e3 that is divergence, caught by the check at step 0.
    state, _ = run(state0, hp, data, 0, 3)
    assert bool(state.diverged) and int(state.diverge_step) == 0
    assert int(state.diverge_reason) == step.DIVERGE_VAL_FACTOR
    assert float(state.initial_objective) == pytest.approx(np.log(4), rel=1e-12)
    assert float(state.diverge_value) > 1e3 * np.log(4)


def test_after_all_changes_no_value_and_spreads_no_nan():
    from jaxlr.engine.train import _after_all

    rng = np.random.default_rng(0)
    grads = {
        "layers": [
            {"w": jnp.asarray(rng.normal(size=(64, 32))), "b": jnp.asarray([np.nan, 1.0])},
            {"w": jnp.asarray(rng.normal(size=(32, 3))), "b": jnp.asarray([np.inf, 2.0, 3.0])},
        ]
    }
    out = jax.jit(_after_all)(grads)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(out)):
        np.testing.assert_array_equal(a, b)  # NaN == NaN here; no NaN reaches other leaves
    single = {"w": jnp.ones((3, 2))}
    assert _after_all(single) is single


def test_same_config_and_seed_give_bit_identical_results():
    data = synthetic(k=3)
    cfg = dataclasses.replace(
        BASE, model="softmax", num_classes=3, shuffle=True, init="normal", init_std=0.1
    )
    a = fit(cfg, make_hparams(0.05, seed=3), data)
    b = fit(cfg, make_hparams(0.05, seed=3), data)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.history["val_loss"], b.history["val_loss"])
    c = fit(cfg, make_hparams(0.05, seed=4), data)
    assert not np.array_equal(a.history["train_loss"], c.history["train_loss"])


def test_shuffling_changes_the_order_every_epoch():
    data = synthetic()
    cfg = dataclasses.replace(BASE, shuffle=True, init="normal", init_std=1.0)
    eng = make_engine(cfg, model_for(cfg, data.x_train.shape[1], jnp.float64), 240)
    # lr 0: losses depend only on which batch is drawn (make_hparams refuses lr 0, the
    # engine takes it).
    hp = make_hparams(1.0)._replace(learning_rate=jnp.asarray(0.0))
    state = eng.init(hp)
    jdata = Data(*(jnp.asarray(a) for a in data))
    _, logs = jax.jit(eng.run, static_argnums=4)(state, hp, jdata, 0, 2)
    m = eng.num_batches
    first, second = np.asarray(logs.train_loss[:m]), np.asarray(logs.train_loss[m:])
    assert not np.allclose(first, second)
    # Every epoch still sees each example once: the mean of batch losses is the same.
    assert np.mean(first) == pytest.approx(np.mean(second), rel=1e-12)


def test_keep_last_partial_batch():
    data = synthetic(n=250)
    cfg = dataclasses.replace(BASE, drop_last=False, num_epochs=1)
    r = fit(cfg, make_hparams(0.1), data)
    assert len(r.history["step"]) == 16  # 15 full batches + one of 10
    r2 = fit(dataclasses.replace(cfg, drop_last=True), make_hparams(0.1), data)
    assert len(r2.history["step"]) == 15


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_other_optimizers_reduce_the_loss(optimizer):
    data = synthetic(k=3)
    cfg = dataclasses.replace(
        BASE, model="softmax", num_classes=3, optimizer=optimizer, num_epochs=5
    )
    r = fit(cfg, make_hparams(0.01, momentum=0.9), data)
    assert r.metrics["train_loss"] < np.log(3) - 0.05


def test_annealing_schedule():
    sched = optim.anneal_schedule(0.1, 100.0)
    assert float(sched(0)) == pytest.approx(0.1)
    assert float(sched(100)) == pytest.approx(0.05)
    assert float(sched(300)) == pytest.approx(0.025)
    cfg = dataclasses.replace(BASE, schedule="anneal", anneal_steps=5.0)
    data = synthetic()
    r = fit(cfg, make_hparams(0.1), data)
    r0 = fit(BASE, make_hparams(0.1), data)
    assert not np.allclose(r.history["train_loss"], r0.history["train_loss"])
    for name in ("cosine", "exponential"):
        fit(dataclasses.replace(BASE, schedule=name, num_epochs=1), make_hparams(0.1), data)


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    data = synthetic(k=3)
    cfg = dataclasses.replace(
        BASE,
        model="softmax",
        num_classes=3,
        shuffle=True,
        optimizer="momentum",
        num_epochs=4,
        early_stopping=True,
    )
    hp = make_hparams(0.05, momentum=0.5, seed=1)
    full = fit(cfg, hp, data)
    path = tmp_path / "run.ckpt.npz"
    part = fit(cfg, hp, data, checkpoint_path=path, stop_after_epochs=2)
    assert len(part.history["step"]) < len(full.history["step"])
    resumed = fit(cfg, hp, data, checkpoint_path=path)
    for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(x, y)
    for k in full.history:
        np.testing.assert_array_equal(full.history[k], resumed.history[k])
    # The divergence rule's reference, the initial objective (zero weights: ln 3), comes
    # back from the checkpoint rather than from the first step after resuming.
    flat, _ = ckpt.load_flat(path)
    assert float(flat["state/initial_objective"]) == pytest.approx(np.log(3), rel=1e-12)
    assert float(resumed.state.initial_objective) == float(full.state.initial_objective)
    # (The first step after resuming, step 30, has another objective.)
    assert float(resumed.history["train_loss"][30]) < float(full.state.initial_objective)
    # Another config must not silently resume from this checkpoint.
    with pytest.raises(ckpt.CheckpointError, match=r"another run: config \(batch_size 16 -> 8\)"):
        fit(dataclasses.replace(cfg, batch_size=8), hp, data, checkpoint_path=path)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    params = {"w": np.arange(6.0).reshape(3, 2), "b": np.zeros(2)}
    path = ckpt.save_checkpoint(tmp_path / "c.npz", params, step=7, config={"model": "x"})
    got, meta = ckpt.load_checkpoint(path, params)
    np.testing.assert_array_equal(got["w"], params["w"])
    assert meta["step"] == 7 and meta["config"] == {"model": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind
    with pytest.raises(ckpt.CheckpointError, match="does not fit"):
        ckpt.load_checkpoint(path, {"w": params["w"]})
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        ckpt.load_checkpoint(path, {"w": np.zeros((2, 3)), "b": np.zeros(2)})
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(bad, params)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.npz", params)


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="hidden"):
        TrainConfig(model="mlp")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"nope": 1})
    cfg = TrainConfig(model="mlp", hidden=[4, 3])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_float32_run():
    data = synthetic(k=3, dtype=np.float32)
    cfg = dataclasses.replace(BASE, model="softmax", num_classes=3)
    r = fit(cfg, make_hparams(0.1, dtype=jnp.float32), data)
    assert jax.tree.leaves(r.params)[0].dtype == np.float32
    assert np.isfinite(r.metrics["val_loss"])


# ---------------------------------------------------------------------------------------------
# The rules of `jaxlr.engine.step`, each alone.


@pytest.mark.parametrize(
    "n, batch, drop_last, eval_every, epochs, expected",
    [
        # M = N // B; E = max(1, M // 5) (the course's cadence); T = epochs * M.
        (240, 16, True, 0, 3, (15, 3, 45)),
        (20000, 32, True, 0, 50, (625, 125, 31250)),
        (60000, 32, True, 938, 6, (1875, 938, 11250)),
        (64, 16, True, 0, 2, (4, 1, 8)),  # M < 5: a check after every step
        (250, 16, True, 0, 1, (15, 3, 15)),  # the last 10 examples dropped
        (250, 16, False, 0, 1, (16, 3, 16)),  # ... or kept as a masked 16th batch
        (240, 16, True, 7, 2, (15, 7, 30)),
    ],
)
def test_schedule_numbers(n, batch, drop_last, eval_every, epochs, expected):
    cfg = TrainConfig(
        batch_size=batch, drop_last=drop_last, eval_every=eval_every, num_epochs=epochs
    )
    sched = step.schedule_numbers(cfg, n)
    assert sched == step.Schedule(*expected)
    assert num_steps(cfg, n) == expected[2]
    model = model_for(cfg, 3, jnp.float64)
    assert make_engine(cfg, model, n).schedule == sched
    checks = [t for t in range(sched.total_steps) if step.is_check_step(t, sched.eval_every)]
    assert checks == list(range(0, sched.total_steps, sched.eval_every))


def test_schedule_numbers_refuse_an_epoch_without_a_batch():
    with pytest.raises(ValueError, match="batch_size=32 > num_examples=10"):
        step.schedule_numbers(TrainConfig(batch_size=32), 10)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "objective, initial, factor, reason",
    [
        (0.69, 0.69, 1e3, step.DIVERGE_NONE),
        (0.01, 0.69, 1e3, step.DIVERGE_NONE),
        (689.0, 0.69, 1e3, step.DIVERGE_NONE),  # below 1e3 x 0.69 = 690
        (691.0, 0.69, 1e3, step.DIVERGE_FACTOR),
        (5e5, 0.69, 1e3, step.DIVERGE_FACTOR),  # tdt4265_task2 --lr=1e6's loss
        (5e5, 0.69, 1e6, step.DIVERGE_NONE),
        (NAN, 0.69, 1e3, step.DIVERGE_NONFINITE),
        (INF, 0.69, 1e3, step.DIVERGE_NONFINITE),
        (-INF, 0.69, 1e3, step.DIVERGE_NONFINITE),
        (1e300, NAN, 1e3, step.DIVERGE_NONE),  # initial objective not known yet
        (1e300, 0.69, INF, step.DIVERGE_NONE),  # factor rule off
        (1e300, 0.0, INF, step.DIVERGE_NONE),  # inf x 0 is NaN: still off
        (NAN, 0.69, INF, step.DIVERGE_NONFINITE),
    ],
)
def test_divergence_rule(objective, initial, factor, reason):
    got = step.divergence_reason(jnp.asarray(objective), jnp.asarray(initial), factor)
    assert got.dtype == jnp.int32 and int(got) == reason
    # The validation check passes its own codes.
    codes = (step.DIVERGE_VAL_NONFINITE, step.DIVERGE_VAL_FACTOR)
    val = int(
        jax.jit(step.divergence_reason, static_argnums=(2, 3))(objective, initial, factor, codes)
    )
    assert val == {0: 0, 1: codes[0], 2: codes[1]}[reason]


def test_early_stopping_rule_alone():
    val = [1.0, 0.8, 0.9, 0.7, 0.75, 0.71, 0.72, 0.6, 0.65, 0.66, 0.67, 0.68]
    patience = 4
    active, best, since = jnp.array(True), jnp.array(jnp.inf), jnp.array(0, jnp.int32)
    stops, improvements = [], []
    for i, v in enumerate(val):
        improved, since, stop = step.early_stopping_rule(
            active, jnp.array(True), jnp.asarray(v), best, since, patience, True
        )
        best = jnp.where(improved, v, best)
        improvements.append(bool(improved))
        if bool(stop):
            stops.append(i)
            active = active & ~stop
    # By hand: new minima at 0, 1, 3, 7 (three checks without one after 3, fewer than four);
    # the fourth check without one after 7 is 11: stop there.
    assert improvements[:8] == [True, True, False, True, False, False, False, True]
    assert stops == [11] == [_expected_stop(val, patience)]
    # After stopping nothing counts any more.
    improved, since2, stop = step.early_stopping_rule(
        active, jnp.array(True), jnp.asarray(0.0), best, since, patience, True
    )
    assert not bool(improved) and int(since2) == int(since) and not bool(stop)
    # A check that diverged never improves; disabled early stopping never stops.
    improved, _, _ = step.early_stopping_rule(
        jnp.array(True), jnp.array(False), jnp.asarray(0.0), jnp.asarray(1.0), 0, 3, True
    )
    assert not bool(improved)
    _, since3, stop = step.early_stopping_rule(
        jnp.array(True), jnp.array(True), jnp.asarray(2.0), jnp.asarray(1.0), 5, 3, False
    )
    assert int(since3) == 6 and not bool(stop)


def _tiny_state(cfg, params):
    model = model_for(cfg, 3, jnp.float64)
    state = step.init_state(cfg, model, make_hparams(0.1), 10)
    return state._replace(params=params)


def test_chunk_end_rule_alone():
    cfg = TrainConfig(model="softmax", num_classes=2)
    good = {"w": jnp.ones((3, 2))}
    state = step.chunk_end_rule(_tiny_state(cfg, good), jnp.asarray(41, jnp.int32))
    assert bool(state.active) and not bool(state.diverged) and int(state.diverge_step) == -1
    assert int(state.diverge_reason) == step.DIVERGE_NONE
    bad = {"w": jnp.ones((3, 2)).at[1, 0].set(jnp.inf)}
    state = step.chunk_end_rule(_tiny_state(cfg, bad), jnp.asarray(41, jnp.int32))
    assert not bool(state.active) and bool(state.diverged) and int(state.diverge_step) == 41
    assert int(state.diverge_reason) == step.DIVERGE_PARAMS and np.isnan(state.diverge_value)
    # A run that had already stopped is not flagged again.
    stopped = _tiny_state(cfg, bad)._replace(active=jnp.array(False))
    state = step.chunk_end_rule(stopped, jnp.asarray(41, jnp.int32))
    assert not bool(state.diverged) and int(state.diverge_step) == -1


def test_train_step_alone_applies_sgd_and_refuses_a_step_above_the_factor():
    data = Data(*map(jnp.asarray, synthetic(k=3)))
    cfg = dataclasses.replace(BASE, model="softmax", num_classes=3, eval_every=5)
    model = model_for(cfg, data.x_train.shape[1], jnp.float64)
    sched = step.schedule_numbers(cfg, 240)
    hp = make_hparams(0.1, l2=0.01)
    state0 = step.init_state(cfg, model, hp, sched.total_steps)
    assert np.isnan(state0.initial_objective)
    idx = jnp.arange(16, 32, dtype=jnp.int32)
    batch = step.Batch(idx, jnp.ones(16, bool), jnp.asarray(1, jnp.int32))  # no check at 1
    state, out = step.train_step(state0, hp, data, batch, config=cfg, model=model, schedule=sched)
    # By hand: w - lr * grad on examples 16..31; the logged loss is the cross-entropy.
    x, y = data.x_train[16:32], data.y_train[16:32]
    obj, ce = model.loss(state0.params, x, y, 0.01)
    g = model.grad(state0.params, x, y, 0.01)
    np.testing.assert_allclose(state.params["w"], state0.params["w"] - 0.1 * g["w"], rtol=1e-14)
    assert float(out.train_loss) == pytest.approx(float(ce), rel=1e-14)
    assert bool(out.ran) and not bool(out.is_check) and np.isnan(out.val_loss)
    assert float(state.initial_objective) == pytest.approx(float(obj), rel=1e-14)
    # The same step against an initial objective 1e4 times smaller: above the factor, the
    # update is refused and the run frozen where the objective was computed.
    low = state0._replace(initial_objective=jnp.asarray(float(obj) * 1e-4))
    state, out = step.train_step(low, hp, data, batch, config=cfg, model=model, schedule=sched)
    assert bool(out.ran) and not bool(state.active) and bool(state.diverged)
    assert int(state.diverge_step) == 1 and int(state.diverge_reason) == step.DIVERGE_FACTOR
    assert float(state.diverge_value) == pytest.approx(float(obj), rel=1e-14)
    np.testing.assert_array_equal(state.params["w"], state0.params["w"])
    # A frozen run stays frozen: nothing changes, nothing is logged.
    again, out = step.train_step(state, hp, data, batch, config=cfg, model=model, schedule=sched)
    assert not bool(out.ran) and np.isnan(out.train_loss)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation_check_alone():
    data = Data(*map(jnp.asarray, synthetic(k=3)))
    cfg = dataclasses.replace(
        BASE, model="softmax", num_classes=3, early_stopping=True, train_eval_size=100
    )
    model = model_for(cfg, data.x_train.shape[1], jnp.float64)
    hp = make_hparams(0.1, l2=0.01)
    rng = np.random.default_rng(1)
    state0 = step.init_state(cfg, model, hp, 10)
    state0 = state0._replace(
        params={"w": jnp.asarray(rng.normal(size=(10, 3)))},
        initial_objective=jnp.asarray(np.log(3.0)),
    )
    t = jnp.asarray(6, jnp.int32)
    state, (val_loss, val_acc, train_acc) = step.validation_check(
        state0, hp, data, t, config=cfg, model=model
    )
    obj, ce = model.loss(state0.params, data.x_val, data.y_val, 0.01)
    assert float(val_loss) == pytest.approx(float(ce), rel=1e-14)
    acc = model.accuracy(model.apply(state0.params, data.x_val), data.y_val)
    assert float(val_acc) == pytest.approx(float(acc), rel=1e-14)
    acc_t = model.accuracy(model.apply(state0.params, data.x_train[:100]), data.y_train[:100])
    assert float(train_acc) == pytest.approx(float(acc_t), rel=1e-14)
    # The first check improves on inf: best numbers and weights recorded.
    assert int(state.best_step) == 6 and float(state.best_loss) == float(val_loss)
    np.testing.assert_array_equal(state.best_params["w"], state0.params["w"])
    assert bool(state.active) and not bool(state.diverged)
    # The same check with a tiny initial objective: the validation factor rule fires.
    tiny = state0._replace(initial_objective=jnp.asarray(float(obj) / 2e3))
    state, _ = step.validation_check(tiny, hp, data, t, config=cfg, model=model)
    assert bool(state.diverged) and not bool(state.active) and int(state.diverge_step) == 6
    assert int(state.diverge_reason) == step.DIVERGE_VAL_FACTOR
    assert float(state.diverge_value) == pytest.approx(float(obj), rel=1e-14)
    assert int(state.best_step) == -1  # a diverged check is never the best


# ---------------------------------------------------------------------------------------------
# fit: divergence by the factor, input guards, epoch timing.


def test_a_finite_blow_up_is_divergence_with_step_rate_and_rule():
    """Like `tdt4265_task2 --lr=1e6`: the loss stays finite but is 1e5 x the initial one."""
    data = synthetic()
    cfg = dataclasses.replace(BASE, num_epochs=2)
    with pytest.raises(TrainingDiverged) as err:
        fit(cfg, make_hparams(1e6), data)
    e = err.value
    assert e.reason in (step.DIVERGE_FACTOR, step.DIVERGE_VAL_FACTOR)
    assert e.initial_objective == pytest.approx(np.log(2), rel=1e-12)  # zero weights
    assert e.value > 1e3 * np.log(2) and np.isfinite(e.value)
    assert e.learning_rate == 1e6 and e.epoch == e.step // 15 and e.step >= 0
    msg = str(e)
    assert "\n" not in msg
    assert f"step {e.step} " in msg and "learning rate 1e+06" in msg
    assert "exceeded diverge_factor 1000" in msg and f"rule {e.reason}" in msg
    # The exception carries the frozen state and the history up to the divergence.
    assert bool(e.state.diverged) and int(e.state.diverge_step) == e.step
    assert e.history["step"][-1] == e.step
    # Without the factor rule the same run goes on to the end with a huge finite loss.
    r = fit(dataclasses.replace(cfg, diverge_factor=np.inf), make_hparams(1e6), data)
    assert np.isfinite(r.metrics["val_loss"]) and r.metrics["val_loss"] > 1e3 * np.log(2)
    # A sound rate never comes near the factor.
    ok = fit(cfg, make_hparams(0.1), data)
    assert np.max(ok.history["train_loss"]) <= np.log(2) * 1.0 + 1e-12


def test_diverge_factor_is_validated():
    for bad in (1.0, 0.5, -3.0, float("nan")):
        with pytest.raises(ValueError, match=r"diverge_factor=.*: must be a number > 1"):
            TrainConfig(diverge_factor=bad)
    assert TrainConfig(diverge_factor=np.inf).diverge_factor == np.inf


def _with(data, **changes):
    return data._replace(**changes)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (
            lambda d: _with(d, y_train=d.y_train[:-1]),
            r"data\.x_train has 240 examples but data\.y_train has 239 labels",
        ),
        (
            lambda d: _with(d, y_val=d.y_val[:100]),
            r"data\.x_val has 120 examples but data\.y_val has 100 labels",
        ),
        (
            lambda d: _with(d, y_train=d.y_train[:, None]),
            r"data\.y_train must be integer labels \[examples\], got shape \(240, 1\)",
        ),
        (
            lambda d: _with(d, x_val=d.x_val[:, :5]),
            r"data\.x_train has 10 features but data\.x_val has 5",
        ),
        (
            lambda d: _with(d, x_train=d.x_train[:, 0]),
            r"data\.x_train must be \[examples, features\], got shape \(240,\)",
        ),
        (
            lambda d: _with(d, x_val=d.x_val[:0], y_val=d.y_val[:0]),
            r"data\.x_val has no examples",
        ),
        (
            lambda d: _with(d, x_train=(d.x_train * 100).astype(np.uint8)),
            r"data\.x_train must be floating point .* got uint8",
        ),
    ],
)
def test_fit_reports_malformed_data_in_words(change, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        fit(BASE, make_hparams(0.1), change(synthetic()))
    assert "\n" not in str(err.value)


def test_fit_refuses_a_grid_of_hparams():
    with pytest.raises(ValueError, match=r"hparams\.learning_rate must be a scalar .*run_sweep"):
        fit(BASE, make_hparams([0.1, 0.2]), synthetic())


def test_time_epochs_times_each_epoch_and_changes_no_number():
    data = synthetic(k=3)
    cfg = dataclasses.replace(
        BASE, model="softmax", num_classes=3, shuffle=True, num_epochs=4, epochs_per_call=2
    )
    hp = make_hparams(0.1, seed=2)
    plain = fit(cfg, hp, data)
    timed = fit(cfg, hp, data, time_epochs=True)
    assert plain.timing is None
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(timed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for k in plain.history:
        np.testing.assert_array_equal(plain.history[k], timed.history[k])
    t = timed.timing
    assert t["epoch"] == [0, 1, 2, 3] and t["steps"] == [15] * 4
    assert t["compile_seconds"] > 0 and all(s > 0 for s in t["epoch_seconds"])
    assert t["run_seconds"] == pytest.approx(sum(t["epoch_seconds"]))
    assert t["steps_per_second"] == pytest.approx(60 / t["run_seconds"])
    # The timed loop and compilation both sit inside the loop's wall time.
    assert timed.wall_seconds >= t["compile_seconds"] + t["run_seconds"]


def test_measure_step_rate():
    data = synthetic(k=3)
    cfg = dataclasses.replace(BASE, model="softmax", num_classes=3)
    rate = measure_step_rate(cfg, make_hparams(0.1), data, repeats=2)
    assert np.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_step_rate(cfg, make_hparams(0.1), data, repeats=0)


# ---------------------------------------------------------------------------------------------
# What enters the library: labels the model can represent, finite data, a batch that fits,
# hyper-parameters a run can train with (jaxlr.core.inputs; refused before anything compiles).


def _labels(data, split, y):
    return data._replace(**{f"y_{split}": np.asarray(y)})


@pytest.mark.parametrize(
    "model, split, bad, pattern",
    [
        ("logistic", "train", 5, r"fit: data\.y_train holds label 5 but the logistic model is"),
        ("logistic", "val", -1, r"data\.y_val holds label -1 .*labels must be 0 or 1"),
        (
            "softmax",
            "val",
            12,
            r"fit: data\.y_val holds label 12 but the softmax model has 10 classes "
            r"\(labels must be in \[0, 10\)\)",
        ),
        ("softmax", "train", 12, r"data\.y_train holds label 12"),
    ],
)
def test_fit_refuses_labels_the_model_cannot_represent(model, split, bad, pattern):
    from jaxlr.core.inputs import InputError

    data = synthetic(k=None if model == "logistic" else 10)
    y = np.array(getattr(data, f"y_{split}"))
    y[3] = bad
    cfg = dataclasses.replace(BASE, model=model)
    with pytest.raises(InputError, match=pattern):
        fit(cfg, make_hparams(0.1), _labels(data, split, y), progress=False)


def test_fit_refuses_float_labels_and_non_finite_data():
    from jaxlr.core.inputs import InputError

    data = synthetic()
    y = data.y_train.astype(np.float64)
    y[7] = 0.5
    with pytest.raises(InputError, match=r"data\.y_train must hold integer .*e\.g\. 0\.5"):
        fit(BASE, make_hparams(0.1), data._replace(y_train=y), progress=False)
    x = np.array(data.x_val)
    x[4, 2] = np.nan
    with pytest.raises(InputError, match=r"data\.x_val holds nan at row 4, feature 2"):
        fit(BASE, make_hparams(0.1), data._replace(x_val=x), progress=False)
    x = np.array(data.x_train)
    x[0, 0] = -np.inf
    with pytest.raises(InputError, match=r"measure_step_rate: data\.x_train holds -inf"):
        measure_step_rate(BASE, make_hparams(0.1), data._replace(x_train=x))


def test_batch_larger_than_the_data_is_refused_in_one_line():
    from jaxlr.core.inputs import InputError
    from jaxlr.engine.grid import make_grid
    from jaxlr.engine.sweep import run_sweep

    data = synthetic(n=40)
    for drop_last in (True, False):
        cfg = dataclasses.replace(BASE, batch_size=64, drop_last=drop_last)
        with pytest.raises(InputError, match="fit: batch_size 64 is larger than the 40 training"):
            fit(cfg, make_hparams(0.1), data, progress=False)
    with pytest.raises(InputError, match="run_sweep: batch_size 64 is larger than the 40"):
        run_sweep(cfg, make_grid(learning_rate=(0.1,)), data, progress=False)


def test_train_eval_size_larger_than_the_data_is_refused_in_one_line():
    from jaxlr.core.inputs import InputError
    from jaxlr.engine.grid import make_grid
    from jaxlr.engine.sweep import run_sweep

    data = synthetic(n=40)
    cfg = dataclasses.replace(BASE, batch_size=8, train_eval_size=41)
    msg = r"fit: train_eval_size 41 is larger than the 40 training examples .* 0 \(all of them\) to"
    with pytest.raises(InputError, match=msg):
        fit(cfg, make_hparams(0.1), data, progress=False)
    with pytest.raises(InputError, match="run_sweep: train_eval_size 41 is larger than the 40"):
        run_sweep(cfg, make_grid(learning_rate=(0.1,)), data, progress=False)
    # All of them is allowed, and so is 0 ("all").
    for size in (40, 0):
        fit(dataclasses.replace(cfg, train_eval_size=size, num_epochs=1), make_hparams(0.1),
            data, progress=False)  # fmt: skip


def test_run_sweep_refuses_labels_data_and_knobs_before_training():
    from jaxlr.core.inputs import InputError
    from jaxlr.engine.grid import grid_from_points, make_grid
    from jaxlr.engine.sweep import run_sweep

    data = synthetic(k=10)
    cfg = dataclasses.replace(BASE, model="softmax", num_classes=3)
    with pytest.raises(InputError, match=r"run_sweep: data\.y_train holds label \d but the "):
        run_sweep(cfg, make_grid(learning_rate=(0.1,)), data, progress=False)
    y = data.y_val.astype(np.float32)
    with pytest.raises(InputError, match=r"data\.y_val must hold integer class labels"):
        run_sweep(BASE, make_grid(learning_rate=(0.1,)), synthetic()._replace(y_val=y))
    points = [{"learning_rate": 0.01}, {"learning_rate": -0.01}]
    with pytest.raises(
        InputError, match=r"^grid: learning_rate must be finite and > 0, got -0\.01 "
    ):
        grid_from_points(points, np.float32)
    with pytest.raises(InputError, match=r"^grid: l2 1e\+39 \(point 1\) becomes inf in float32"):
        make_grid(learning_rate=0.1, l2=(0.0, 1e39), dtype=np.float32)
    good = grid_from_points([{"learning_rate": 0.01}] * 2, np.float32)
    grid = good._replace(hparams=good.hparams._replace(momentum=np.float32([0.0, 1.0])))
    with pytest.raises(
        InputError, match=r"run_sweep: grid: momentum must be in \[0, 1\), got 1\.0"
    ):
        run_sweep(BASE, grid, synthetic(), progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rate=0.0), "learning_rate must be finite and > 0, got 0.0"),
        (dict(learning_rate=-0.01), "learning_rate must be finite and > 0, got -0.01"),
        (dict(learning_rate=np.float32(-0.01)), "got -0.01"),  # not -0.009999999776482582
        (dict(learning_rate=float("inf")), "learning_rate must be finite and > 0, got inf"),
        (dict(learning_rate=0.1, l2=-0.01), "l2 must be finite and >= 0, got -0.01"),
        (dict(learning_rate=0.1, l2=float("nan")), "l2 must be finite and >= 0, got nan"),
        (dict(learning_rate=0.1, momentum=1.0), "momentum must be in [0, 1), got 1.0"),
        (dict(learning_rate=0.1, momentum=-0.5), "momentum must be in [0, 1), got -0.5"),
        (dict(learning_rate=[0.1, 0.0]), "got 0.0 (point 1)"),
        (dict(learning_rate=1e300), "learning_rate 1e+300 becomes inf in float32"),
        (dict(learning_rate=1e-50), "learning_rate 1e-50 becomes 0.0 in float32"),
    ],
)
def test_make_hparams_refuses_knobs_no_run_trains_with(kwargs, message):
    import warnings

    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning beside the one line
        make_hparams(**kwargs, dtype=jnp.float32)
    text = str(info.value)
    assert text.startswith("make_hparams: ") and message in text and "\n" not in text


def test_fit_records_knobs_as_given_not_as_float32():
    from jaxlr.engine.events import Observer

    class Keep(Observer):
        def on_start(self, start):
            self.points = start.points

        def on_end(self, end):
            self.records = end.records

    keep = Keep()
    data = synthetic(dtype=np.float32)
    hp = make_hparams(0.01, l2=0.001, dtype=jnp.float32)
    fit(dataclasses.replace(BASE, num_epochs=1), hp, data, observers=[keep], progress=False)
    for d in (keep.points[0], keep.records[0]):
        assert (d["learning_rate"], d["l2"]) == (0.01, 0.001), d


def test_solver_refuses_labels_the_model_cannot_represent():
    from jaxlr.core import optimum, solver
    from jaxlr.core.inputs import InputError

    data = synthetic()
    model = model_for(BASE, data.x_train.shape[1], jnp.float64)
    y = np.array(data.y_train)
    y[0] = 5
    with pytest.raises(InputError, match=r"optimum_report: y_N holds label 5 but the logistic"):
        optimum.optimum_report(model, data.x_train, y, [0.01], progress=False)
    x = np.array(data.x_train)
    x[1, 1] = np.nan
    with pytest.raises(InputError, match=r"solve_path: x_ND holds nan at row 1, feature 1"):
        solver.solve_path(model, x, data.y_train, [0.01])
    with pytest.raises(InputError, match=r"solve: y_N must hold integer class labels"):
        solver.solve(model, None, data.x_train, data.y_train.astype(np.float64), 0.01)


def test_solver_prints_a_float32_lambda_as_given():
    from jaxlr.core import solver

    data = synthetic()
    model = model_for(BASE, data.x_train.shape[1], jnp.float64)
    with pytest.raises(ValueError, match=r"l2 must be finite and >= 0, got \[0\.01, -0\.01\]$"):
        solver.solve_path(model, data.x_train, data.y_train, np.float32([0.01, -0.01]))


def test_a_checkpoint_of_another_run_names_the_change_as_given(tmp_path):
    data = synthetic(dtype=np.float32)
    cfg = dataclasses.replace(BASE, num_epochs=1)
    path = tmp_path / "run.npz"
    fit(cfg, make_hparams(0.025, dtype=jnp.float32), data, checkpoint_path=path, progress=False)
    with pytest.raises(ckpt.CheckpointError) as info:
        fit(cfg, make_hparams(0.1, dtype=jnp.float32), data, checkpoint_path=path)
    assert "hparams (learning_rate 0.025 -> 0.1)" in str(info.value), str(info.value)
