"""Tests of the training engine (`jaxlr.train`), optimizers and checkpoints on small data."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr import checkpoint as ckpt
from jaxlr import optim
from jaxlr.config import TrainConfig, make_hparams
from jaxlr.testing import assert_tree_allclose
from jaxlr.train import Data, TrainingDiverged, fit, make_engine, model_for


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
    hp = make_hparams(1e307)
    state0 = engine.init(hp)
    # Epochs 1-3 (steps 1-3; no validation check, which runs at steps divisible by 100):
    # step 1 starts from finite weights and its update overflows them; step 2 sees it.
    state, logs = engine.run(state0, hp, data, 1, 3)
    assert np.isfinite(logs.train_loss[0]) and not np.isfinite(logs.train_loss[1])
    assert bool(state.diverged) and int(state.diverge_step) == 2 and not bool(state.active)
    np.testing.assert_array_equal(logs.ran, [True, True, False])
    assert not all(np.all(np.isfinite(w)) for w in jax.tree.leaves(state.params))
    # The same overflow in the chunk's last step is caught by the end-of-chunk check.
    state, logs = engine.run(state0, hp, data, 1, 1)
    assert np.isfinite(logs.train_loss[0])
    assert bool(state.diverged) and int(state.diverge_step) == 1 and not bool(state.active)
    # So is one in a step with a validation check (step 0), by the check itself.
    state, logs = engine.run(state0, hp, data, 0, 2)
    assert bool(state.diverged) and int(state.diverge_step) == 0
    # A learning rate that does not overflow never trips either check.
    state, _ = engine.run(state0, make_hparams(0.1), data, 0, 3)
    assert not bool(state.diverged) and int(state.diverge_step) == -1


def test_after_all_changes_no_value_and_spreads_no_nan():
    from jaxlr.train import _after_all

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
    hp = make_hparams(0.0)  # lr 0: losses depend only on which batch is drawn
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
    # Another config must not silently resume from this checkpoint.
    with pytest.raises(ckpt.CheckpointError, match="another config"):
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
