"""Tests of vmapped sweeps (`jaxlr.engine.sweep`): equal to single runs, blocked, sharded."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core.testing import assert_tree_allclose, count_traces, tolerance
from jaxlr.data import idx as jidx
from jaxlr.data import registry as jregistry
from jaxlr.engine import blocks as jblocks
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine import sweep_result as jsweep_result
from jaxlr.engine.config import HParams, TrainConfig, make_hparams
from jaxlr.engine.step import Data
from jaxlr.engine.train import fit, model_for
from jaxlr.report import tables

REPO = Path(__file__).resolve().parents[1]

# Rounding-level agreement: a sweep multiplies the shared batch by all points' weights in one
# matrix product, whose summation order may differ from a single run's by an ulp or so.
TOL = tolerance(np.float64, "grad_vs_autodiff")


def synthetic(n=240, v=120, d=9, k=None, seed=0, noise=1.0):
    """Linearly generated labels with noise; the last feature is the constant 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + v, d))
    x = np.concatenate([x, np.ones((n + v, 1))], axis=1)
    if k is None:
        w = rng.normal(size=d + 1)
        y = (x @ w + noise * rng.normal(size=n + v) > 0).astype(np.int32)
    else:
        w = rng.normal(size=(d + 1, k))
        y = np.argmax(x @ w + noise * rng.normal(size=(n + v, k)), axis=1).astype(np.int32)
    return Data(x[:n], y[:n], x[n:], y[n:])


SOFTMAX = TrainConfig(
    model="softmax", num_classes=3, batch_size=16, num_epochs=3, shuffle=True, epochs_per_call=3
)
# Few examples, many features, no L2: the validation loss turns up after a while.
OVERFIT = TrainConfig(
    model="logistic",
    batch_size=8,
    num_epochs=40,
    patience=5,
    eval_every=4,
    early_stopping=True,
    epochs_per_call=8,
)


def overfit_data():
    return synthetic(n=64, v=200, d=40, noise=3.0)


def _fit_point(cfg, grid, i, data):
    p = grid.point(i)
    return fit(cfg, make_hparams(p["learning_rate"], p["l2"], p["momentum"], p["seed"]), data)


def _quiet(msg):
    pass


def test_make_grid_order_axes_and_reshape():
    g = jgrid.make_grid(learning_rate=(0.1, 0.2, 0.3), l2=(0.0, 1.0), seed=(0, 1))
    assert g.axes == ("l2", "learning_rate", "seed")
    assert g.shape == (2, 3, 2) and g.size == 12
    assert g.values["learning_rate"] == (0.1, 0.2, 0.3)
    # Row-major: the seed varies fastest, lambda slowest.
    assert [g.point(i)["seed"] for i in range(4)] == [0, 1, 0, 1]
    assert g.point(2) == {"learning_rate": 0.2, "l2": 0.0, "momentum": 0.0, "seed": 0}
    assert g.point(6)["l2"] == 1.0 and g.point(6)["learning_rate"] == 0.1
    gm = jgrid.make_grid(learning_rate=0.1, momentum=(0.0, 0.9))
    assert gm.axes == ("l2", "learning_rate", "momentum", "seed") and gm.shape == (1, 1, 2, 1)
    assert list(gm.hparams.momentum) == [0.0, 0.9]
    gp = jgrid.grid_from_points([{"learning_rate": 0.1}, {"learning_rate": 0.5, "seed": 3}])
    assert gp.axes == ("point",) and gp.shape == (2,)
    assert gp.point(1) == {"learning_rate": 0.5, "l2": 0.0, "momentum": 0.0, "seed": 3}
    with pytest.raises(ValueError, match="unknown keys"):
        jgrid.grid_from_points([{"learning_rate": 0.1, "lambda": 1.0}])
    # reshape / mean_over / best_index on a hand-built result.
    val = np.arange(12.0)
    res = jsweep_result.SweepResult(
        grid=g,
        params={},
        metrics={"val_loss": val, "val_accuracy": val / 100},
        early_stopping={},
        diverged=np.arange(12) == 0,
        diverge_step=np.full(12, -1),
        histories=[],
        wall_seconds=0.0,
    )
    assert res.reshape(val)[1, 2, 0] == 10.0
    assert res.best_index("val_loss") == 1  # point 0 diverged
    assert res.best_index("val_accuracy") == 11
    # Ties of the first metric go to the better second one, then to the lower index.
    tied = dataclasses.replace(
        res,
        metrics={
            "val_accuracy": np.array([0.9, 0.8, 0.9, 0.9, 0.7] + [0.1] * 7),
            "val_cross_entropy": np.array([0.1, 0.1, 0.3, 0.2, 0.1] + [0.5] * 7),
        },
    )
    assert tied.best_index("val_accuracy") == 2  # point 0 diverged; first of the ties
    assert tied.best_index("val_accuracy", then="val_cross_entropy") == 3
    with pytest.raises(ValueError, match="unknown metric 'val_ce'"):
        tied.best_index("val_accuracy", then="val_ce")
    means = jsweep_result.mean_over(res, val)
    assert means.shape == (2, 3)
    assert np.isnan(means[0, 0]) and means[1, 2] == pytest.approx(10.5)


def test_sweep_equals_loop_of_single_runs():
    data = synthetic(k=3)
    grid = jgrid.make_grid(learning_rate=(0.05, 0.5), l2=(0.01,), seed=(0, 1))
    res = jsweep.run_sweep(SOFTMAX, grid, data, log_fn=_quiet)
    assert res.grid is grid and len(res.histories) == grid.size
    for i in range(grid.size):
        single = _fit_point(SOFTMAX, grid, i, data)
        assert_tree_allclose(res.point_params(i), single.params, **TOL, err_msg=f"point {i}")
        for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert res.metrics[k][i] == pytest.approx(single.metrics[k], rel=1e-10), k
        assert res.metrics["steps"][i] == single.metrics["steps"]
        for k, v in single.history.items():
            np.testing.assert_allclose(res.histories[i][k], v, rtol=1e-10, err_msg=k)
    assert not res.diverged.any()
    # The points do differ: different seeds shuffle differently.
    assert res.metrics["val_loss"][0] != res.metrics["val_loss"][1]


def test_early_stopping_per_point_equals_single_runs():
    data = overfit_data()
    # Stops at steps 96 and 20; the smallest rate never stops.
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1, 2.0), l2=(0.03,))
    res = jsweep.run_sweep(OVERFIT, grid, data, log_fn=_quiet)
    es = res.early_stopping
    assert es["stopped"].sum() >= 2, "test data should make several points stop early"
    assert len(set(es["step"][es["stopped"]])) >= 2, "points should stop at different steps"
    for i in range(grid.size):
        single = _fit_point(OVERFIT, grid, i, data)
        info = single.metrics["early_stopping"]
        assert bool(es["stopped"][i]) == info["stopped"], i
        assert es["step"][i] == (info["step"] if info["stopped"] else -1), i
        assert es["best_step"][i] == info["best_step"], i
        assert es["best_val_loss"][i] == pytest.approx(info["best_val_loss"], rel=1e-10)
        assert_tree_allclose(res.point_params(i), single.params, **TOL, err_msg=f"point {i}")
        assert res.histories[i]["step"][-1] == single.history["step"][-1]
    i = int(np.argmax(es["stopped"]))
    assert res.metrics["val_loss"][i] == pytest.approx(es["best_val_loss"][i], rel=1e-10)


def test_a_stopped_point_never_changes_again():
    data = overfit_data()
    cfg = OVERFIT
    model = model_for(cfg, data.x_train.shape[1], jnp.float64)
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1, 2.0), l2=(0.0, 0.03))
    fns = jsweep.sweep_functions(cfg, model, data.x_train.shape[0], (jax.devices()[0],))
    hp = HParams(*(jnp.asarray(v) for v in grid.hparams))
    jdata = Data(*(jnp.asarray(a) for a in data))
    state = fns.init(hp)
    params, active = [], []
    for epoch in range(cfg.num_epochs):
        state, _ = fns.run(state, hp, jdata, epoch, 1)
        params.append(np.asarray(state.params["w"]))
        active.append(np.asarray(state.active))
    params, active = np.stack(params), np.stack(active)  # [epochs, S, D]
    stopped_at = [int(np.argmin(a)) if not a.all() else None for a in active.T]
    assert sum(s is not None for s in stopped_at) >= 2
    assert any(s is None for s in stopped_at), "some point should train to the end"
    for i, s in enumerate(stopped_at):
        if s is None:
            assert not np.array_equal(params[-1, i], params[-2, i])
            continue
        # Inactive from epoch s on, then frozen bit for bit (the best weights too).
        assert not active[s:, i].any()
        for e in range(s + 1, cfg.num_epochs):
            np.testing.assert_array_equal(params[e, i], params[s, i])
    assert int(state.stop_step.max()) < cfg.num_epochs * 8


def test_blocked_equals_unblocked():
    data = synthetic(k=3)
    # Several seeds: each point gathers its own batches (a batched product over points), so
    # blocks of 2 or more points (the last one padded) reproduce every bit. A block of one
    # point lets XLA drop the batch dimension and use another kernel: equal up to rounding.
    grid = jgrid.make_grid(learning_rate=(0.05, 0.5, 0.2), l2=(0.0, 0.01), seed=(0, 1))
    whole = jsweep.run_sweep(SOFTMAX, grid, data, log_fn=_quiet)
    one = jsweep.run_sweep(SOFTMAX, grid, data, block_size=1, log_fn=_quiet)
    assert_tree_allclose(one.params, whole.params, **TOL)
    for block in (5,):  # three blocks of 4 points
        blocked = jsweep.run_sweep(SOFTMAX, grid, data, block_size=block, log_fn=_quiet)
        assert_tree_allclose(blocked.params, whole.params, rtol=0, atol=0)
        # Evaluations multiply the shared data by all points' weights in one product whose
        # summation order depends on the number of points: equal up to rounding.
        for k, v in whole.metrics.items():
            np.testing.assert_allclose(blocked.metrics[k], v, rtol=TOL["rtol"], err_msg=k)
        for a, b in zip(blocked.histories, whole.histories, strict=True):
            np.testing.assert_array_equal(a["step"], b["step"])
            np.testing.assert_array_equal(a["train_loss"], b["train_loss"])
            np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=TOL["rtol"])
    # One seed, no shuffle: every point shares the batch; equal up to rounding.
    data2 = overfit_data()
    grid2 = jgrid.make_grid(learning_rate=(0.005, 0.1, 2.0), l2=(0.0, 0.03))
    whole2 = jsweep.run_sweep(OVERFIT, grid2, data2, log_fn=_quiet)
    blocked2 = jsweep.run_sweep(OVERFIT, grid2, data2, block_size=4, log_fn=_quiet)
    assert_tree_allclose(blocked2.params, whole2.params, **TOL)
    for k, v in whole2.early_stopping.items():
        np.testing.assert_array_equal(blocked2.early_stopping[k], v, err_msg=k)


def test_diverging_point_is_reported_and_the_others_are_unaffected():
    data = synthetic(k=3)
    cfg = SOFTMAX
    lrs = (0.05, 0.5, 1e306)
    res = jsweep.run_sweep(cfg, jgrid.make_grid(learning_rate=lrs), data, log_fn=_quiet)
    np.testing.assert_array_equal(res.diverged, [False, False, True])
    assert res.diverge_step[2] >= 0 and (res.diverge_step[:2] == -1).all()
    # The diverged point is frozen where its objective became non-finite, reported, and
    # never "best".
    model = model_for(cfg, data.x_train.shape[1], data.x_train.dtype)
    obj, _ = model.loss(res.point_params(2), data.x_train, data.y_train, 0.0)
    assert not np.isfinite(obj)
    assert res.best_index("val_accuracy") in (0, 1) and res.best_index("val_loss") in (0, 1)
    # Its history ends with the step that diverged (the update of that step was dropped).
    assert res.metrics["steps"][2] == res.diverge_step[2] + 1
    # The other points: bit-identical to a grid of the same size without the bad rate.
    ref = jsweep.run_sweep(cfg, jgrid.make_grid(learning_rate=(0.05, 0.5, 0.5)), data)
    for i in (0, 1):
        assert_tree_allclose(res.point_params(i), ref.point_params(i), rtol=0, atol=0)
        for k in res.histories[i]:
            np.testing.assert_array_equal(res.histories[i][k], ref.histories[i][k])
    # And equal to the single runs.
    single = fit(cfg, make_hparams(0.5), data)
    assert_tree_allclose(res.point_params(1), single.params, **TOL)


def test_new_grid_of_the_same_size_does_not_retrace():
    data = synthetic()
    cfg = TrainConfig(model="logistic", batch_size=16, num_epochs=2)
    model = model_for(cfg, data.x_train.shape[1], jnp.float64)
    counted = count_traces(model.grad)
    model = model._replace(grad=counted)
    jsweep.run_sweep(cfg, jgrid.make_grid(learning_rate=(0.1, 0.2), l2=(0.0,)), data, model=model)
    first = counted.count
    assert first >= 1
    g2 = jgrid.make_grid(learning_rate=(0.3,), l2=(0.1, 0.5))
    r2 = jsweep.run_sweep(cfg, g2, data, model=model)
    assert counted.count == first, "a new grid of the same size recompiled"
    single = fit(cfg, make_hparams(0.3, 0.5), data)
    assert_tree_allclose(r2.point_params(1), single.params, **TOL)
    jsweep.run_sweep(cfg, jgrid.make_grid(learning_rate=(0.1, 0.2, 0.3)), data, model=model)
    assert counted.count > first  # another size does compile (the counter works)


def test_default_block_size_follows_the_memory_budget():
    data = synthetic(k=3)
    model = model_for(SOFTMAX, data.x_train.shape[1], jnp.float64)
    shape = (240, 120, 10)
    per_point = jblocks.bytes_per_point(SOFTMAX, model, shape, 8)
    assert per_point > 8 * 3 * 30  # at least params, new params and gradients
    data_bytes = 8 * 360 * 10
    budget = data_bytes + 5 * per_point
    assert jblocks.default_block_size(SOFTMAX, model, shape, 8, 100, 1, budget) == 5
    assert jblocks.default_block_size(SOFTMAX, model, shape, 8, 3, 1, budget) == 3
    assert jblocks.default_block_size(SOFTMAX, model, shape, 8, 100, 4, budget) == 20
    assert jblocks.default_block_size(SOFTMAX, model, shape, 8, 100, 4, data_bytes) == 4
    assert jblocks.memory_budget() > 0


def test_tables():
    data = synthetic(k=3)
    grid = jgrid.make_grid(learning_rate=(0.05, 0.5), l2=(0.0, 1e306))
    cfg = dataclasses.replace(SOFTMAX, num_epochs=2)
    res = jsweep.run_sweep(cfg, grid, data, log_fn=_quiet)
    csv_text = tables.sweep_csv(res)
    lines = csv_text.strip().splitlines()
    assert len(lines) == 1 + grid.size
    assert lines[0].startswith("index,learning_rate,l2,momentum,seed,train_loss,val_loss")
    md = tables.sweep_markdown(res)
    best = res.best_index("val_loss")
    assert md.count("**") >= 2 and f"| **{best}** |" in md
    recs = res.records()
    assert json.loads(json.dumps(recs))[best]["val_loss"] == pytest.approx(
        res.metrics["val_loss"][best]
    )


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, json, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import sweep as jsweep
    from jaxlr.engine.config import TrainConfig
    from jaxlr.engine.step import Data
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(360, 9)), np.ones((360, 1))], axis=1)
    y = np.argmax(x @ rng.normal(size=(10, 3)) + rng.normal(size=(360, 3)), 1).astype(np.int32)
    data = Data(x[:240], y[:240], x[240:], y[240:])
    out = {}
    for seeds in ((0, 1), (0,)):
        cfg = TrainConfig(model="softmax", num_classes=3, batch_size=16, num_epochs=3,
                          shuffle=True, early_stopping=True, patience=2, eval_every=2)
        # 6 or 12 points: padded to a multiple of 4 devices when needed.
        grid = jgrid.make_grid(learning_rate=(0.05, 0.5, 3.0), l2=(0.0, 0.01), seed=seeds)
        many = jsweep.run_sweep(cfg, grid, data, block_size=grid.size)
        one = jsweep.run_sweep(cfg, grid, data, devices=jax.devices()[:1])
        fns = jsweep.sweep_functions(cfg, jsweep.default_model(cfg, 10, np.dtype("float64")),
                                    240, tuple(jax.devices()), len(seeds) == 1)
        hp = jax.tree.map(lambda v: v[:4], grid.hparams)
        if len(seeds) == 1:
            hp = hp._replace(seed=hp.seed[0])
        st = fns.init(hp)
        shards = len(st.params["w"].sharding.device_set)
        out[str(len(seeds))] = dict(
            shards=shards,
            max_param_diff=max(float(np.max(np.abs(a - b))) for a, b in
                               zip(jax.tree.leaves(many.params), jax.tree.leaves(one.params))),
            bit_identical=all(np.array_equal(a, b) for a, b in
                              zip(jax.tree.leaves(many.params), jax.tree.leaves(one.params))),
            max_val_loss_diff=float(np.max(np.abs(many.metrics["val_loss"]
                                                  - one.metrics["val_loss"]))),
            stop_equal=bool(np.array_equal(many.early_stopping["step"],
                                           one.early_stopping["step"])),
            stopped=int(many.early_stopping["stopped"].sum()),
            n=len(many.histories),
            hist_equal=all(np.allclose(a["val_loss"], b["val_loss"], rtol=1e-10)
                           for a, b in zip(many.histories, one.histories)),
        )
    print("RESULT" + json.dumps(out))
    """
)


def test_sharded_over_four_cpu_devices_equals_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT") :])
    for seeds, r in out.items():
        assert r["shards"] == 4, (seeds, r)
        assert r["n"] == (12 if seeds == "2" else 6), r
        assert r["stop_equal"] and r["hist_equal"], (seeds, r)
        assert r["max_param_diff"] <= 1e-12 and r["max_val_loss_diff"] <= 1e-12, (seeds, r)
    # Per-point data order (several seeds): every device runs the same per-point
    # products as one device does, bit for bit.
    assert out["2"]["bit_identical"], out
    assert out["2"]["stopped"] >= 1, out


def test_tdt4265_lambdas_in_one_sweep_equal_separate_runs(tmp_path):
    from experiments import (
        registry,  # noqa: F401  (registers the experiments)
        tdt4265_task4,
    )
    from experiments.common import RunDir, run_metrics, train_one
    from experiments.config import make_config

    data = synthetic(k=3)
    cfg = make_config("tdt4265_task4", dict(num_epochs=2, batch_size=16))
    run = RunDir(tmp_path, tmp_path)
    lambdas = [0.0, 0.1, 0.01]
    swept = tdt4265_task4.train_l2_runs(cfg, data, run, lambdas)
    assert list(swept) == lambdas
    for lam in lambdas:
        single = train_one(cfg, data, run, f"lambda={lam:g}", l2=lam)
        expected = run_metrics(single, cfg.train, 240)
        params, history, m = swept[lam]
        assert_tree_allclose(params, single.params, **TOL, err_msg=f"lambda {lam}")
        assert set(m) == set(expected)
        for k, v in expected.items():
            if k != "wall_seconds":
                assert m[k] == pytest.approx(v, rel=1e-10), k
        for k, v in single.history.items():
            np.testing.assert_allclose(history[k], v, rtol=1e-10, err_msg=k)


def test_sweep_experiment_protocol_defaults():
    from experiments import registry  # noqa: F401
    from experiments import sweep as sweep_exp
    from experiments.config import make_config

    logistic = make_config("sweep")
    assert logistic.train.model == "logistic" and logistic.data.digits == (2, 3)
    assert logistic.hparams.lr == (0.05,) and logistic.train.shuffle is False
    assert logistic.train.num_epochs == 50 and logistic.train.batch_size == 128
    softmax = make_config("sweep", {"model": "softmax"})
    assert softmax.data.digits == () and softmax.hparams.lr == (0.01,)
    assert softmax.train.shuffle is True
    # Values given by the user win, even when they equal the other protocol's.
    mine = make_config("sweep", {"model": "softmax", "lr": (0.05,), "shuffle": False})
    assert mine.hparams.lr == (0.05,) and mine.train.shuffle is False and mine.data.digits == ()
    cfg = make_config("sweep", {"model": "softmax", "l2": (0.0, 0.1), "seed": 3, "seeds": 2})
    grid = sweep_exp.grid_of(cfg, np.float32)
    assert grid.axes == ("l2", "learning_rate", "seed") and grid.values["seed"] == (3, 4)


DATA_DIR = os.environ.get("JAXLR_DATA_DIR") or None


def _mnist_missing():

    try:
        jregistry.find_dataset_files("mnist", DATA_DIR, download=False)
    except jidx.DataError:
        return "real MNIST files not found: set JAXLR_DATA_DIR (e.g. ../shared/data)"
    return None


@pytest.mark.realdata
def test_sweep_experiment_end_to_end(tmp_path):
    missing = _mnist_missing()
    if missing:
        pytest.skip(missing)
    from experiments import registry  # noqa: F401
    from experiments.common import run_experiment

    overrides = dict(
        model="softmax", l2=(0.0, 0.1), seeds=2, num_epochs=2, max_examples=512, data_dir=DATA_DIR
    )
    metrics = run_experiment("sweep", tmp_path, overrides)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["hparams"]["lr"] == [0.01] and cfg["train"]["shuffle"] is True
    assert cfg["data"]["digits"] == []
    points = metrics["points"]
    assert metrics["num_points"] == len(points) == 4 and metrics["shape"] == [2, 1, 2]
    val_loss = [p["val_loss"] for p in points]
    assert metrics["best_by_val_loss"]["index"] == int(np.argmin(val_loss))
    acc = [p["val_accuracy"] for p in points]
    assert metrics["best_by_val_accuracy"]["val_accuracy"] == max(acc)
    assert all(0.1 < a <= 1.0 for a in acc)
    # Seeds shuffle differently; lambda changes the weights.
    assert points[0]["val_loss"] != points[1]["val_loss"] != points[2]["val_loss"]
    csv_lines = (tmp_path / "table.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 5
    assert "**" in (tmp_path / "table.md").read_text()
    for name in ("heatmap_val_accuracy.png", "curves_val_accuracy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for p in points:
        lines = (tmp_path / p["history"]).read_text().strip().splitlines()
        assert len(lines) == p["steps"] == 2 * 4  # 2 epochs of 512 // 128 batches
    report = (tmp_path / "report.md").read_text()
    assert "heatmap_val_accuracy.png" in report and "Best by validation loss" in report


# ---------------------------------------------------------------------------------------------
# Compaction, work counts, checkpoints.


def test_block_ladder_and_plan_blocks():
    assert jblocks.block_ladder(64, steps_per_octave=2) == (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    assert jblocks.block_ladder(64) == (2, 4, 8, 16, 32, 64)
    assert jblocks.block_ladder(48, 4, 2) == (8, 12, 16, 24, 32, 48)
    assert jblocks.block_ladder(48, 4) == (8, 16, 32, 48)
    assert jblocks.block_ladder(4, 4) == (4,) and jblocks.block_ladder(1) == (1,)
    with pytest.raises(ValueError, match="steps_per_octave must be 1 or 2, got 3"):
        jblocks.block_ladder(8, 1, 3)
    with pytest.raises(ValueError, match="cap must be a positive multiple"):
        jblocks.block_ladder(6, 4)
    ladder = jblocks.block_ladder(16, 2, steps_per_octave=1)
    # 5 active points: one block of 8 (the smallest size that holds them), padded with
    # copies of its own points.
    (b,) = jblocks.plan_blocks([3, 5, 6, 9, 12], 16, ladder)
    assert list(b) == [3, 5, 6, 9, 12, 3, 5, 6]
    (b,) = jblocks.plan_blocks([3, 5, 6, 9, 12], 16, jblocks.block_ladder(16, 1, 2))
    assert list(b) == [3, 5, 6, 9, 12, 3]
    # 20 points over a cap of 16: two blocks of 10 points, each padded to 16.
    blocks = jblocks.plan_blocks(np.arange(20), 16, ladder)
    assert [len(x) for x in blocks] == [16, 16]
    assert sorted(set(np.concatenate(blocks))) == list(range(20))
    assert jblocks.plan_blocks([], 16, ladder) == []


def _assert_same_results(a, b, exact: bool):
    """Two sweep results of one grid agree point by point.

    With `exact`: parameters, steps, stopping and training losses bit for bit; the numbers
    of checks and final evaluations (the shared validation data times all points' weights
    in one product, whose rounding depends on the block size) up to rounding.
    """
    tol = dict(rtol=0, atol=0) if exact else TOL
    assert_tree_allclose(a.params, b.params, **tol)
    for k, v in b.metrics.items():
        np.testing.assert_allclose(a.metrics[k], v, rtol=TOL["rtol"], err_msg=k)
    for k, v in b.early_stopping.items():
        if k == "best_val_loss":
            np.testing.assert_allclose(a.early_stopping[k], v, rtol=TOL["rtol"], err_msg=k)
        else:
            np.testing.assert_array_equal(a.early_stopping[k], v, err_msg=k)
    np.testing.assert_array_equal(a.diverged, b.diverged)
    for i, (ha, hb) in enumerate(zip(a.histories, b.histories, strict=True)):
        assert set(ha) == set(hb)
        for k in hb:
            rtol = (
                tol["rtol"] if k in ("step", "epoch", "check_step", "train_loss") else TOL["rtol"]
            )
            np.testing.assert_allclose(ha[k], hb[k], rtol=rtol, err_msg=f"{i} {k}")


# Softmax, shuffled, several seeds, early stopping: every point gathers its own batches, so a
# point's numbers are the same bits in a block of any size of two or more points.
SOFTMAX_ES = TrainConfig(
    model="softmax",
    num_classes=3,
    batch_size=8,
    num_epochs=40,
    patience=5,
    eval_every=4,
    early_stopping=True,
    epochs_per_call=2,
    shuffle=True,
)


def test_compaction_gives_the_same_results_and_skips_stopped_points():
    data = synthetic(n=64, v=200, d=40, k=3, noise=3.0)
    cfg = SOFTMAX_ES
    # 32 points: on the CPU no block is smaller than one group of points (16 for a sweep
    # with early stopping, `jaxlr.engine.blocks.sweep_group`), so the ladder is (16, 32).
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1, 0.5, 2.0), l2=(0.0, 0.03), seed=(0, 1, 2, 3))
    logs = []
    compact = jsweep.run_sweep(cfg, grid, data, log_fn=logs.append)
    full = jsweep.run_sweep(cfg, grid, data, compact=False, log_fn=_quiet)
    assert compact.early_stopping["stopped"].sum() >= 8
    _assert_same_results(compact, full, exact=True)
    # Work: every step a point ran is counted once; compaction computes fewer slots.
    assert compact.point_steps == full.point_steps == int(full.metrics["steps"].sum())
    m = full.num_batches
    assert full.computed_point_steps == grid.size * cfg.num_epochs * m
    assert compact.point_steps <= compact.computed_point_steps < full.computed_point_steps
    # The blocks did shrink, through sizes of the ladder only.
    sizes = {
        int(x)
        for ln in logs
        if "block(s) [" in ln
        for x in ln.split("[")[1].split("]")[0].split(",")
    }
    assert sizes <= set(jblocks.block_ladder(32, smallest=16)) and len(sizes) >= 2, sizes
    work = compact.work()
    assert work["point_steps"] == compact.point_steps and work["wall_seconds"] > 0
    # And both equal single runs.
    for i in (0, 5):
        single = _fit_point(cfg, grid, i, data)
        assert_tree_allclose(compact.point_params(i), single.params, **TOL)
        assert compact.metrics["steps"][i] == single.metrics["steps"]


def test_compaction_with_one_shared_seed_agrees_to_rounding():
    # One seed: each batch multiplies all points' weights in one product, whose rounding may
    # depend on the number of points; the stopping decisions are the same.
    # (On the CPU the points are computed in fixed groups, so they are the same bits there.)
    # 32 points: no block is smaller than one group of 16 points on the CPU.
    data = overfit_data()
    grid = jgrid.make_grid(
        learning_rate=(0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), l2=(0.0, 0.01, 0.03, 0.1)
    )
    compact = jsweep.run_sweep(OVERFIT, grid, data, log_fn=_quiet)
    full = jsweep.run_sweep(OVERFIT, grid, data, compact=False, log_fn=_quiet)
    _assert_same_results(compact, full, exact=False)
    assert compact.computed_point_steps < full.computed_point_steps


def test_compaction_across_several_blocks():
    data = synthetic(n=64, v=200, d=40, k=3, noise=3.0)
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1, 0.5, 2.0), l2=(0.0, 0.03), seed=(0, 1))
    small = jsweep.run_sweep(SOFTMAX_ES, grid, data, block_size=6, log_fn=_quiet)
    full = jsweep.run_sweep(SOFTMAX_ES, grid, data, compact=False, log_fn=_quiet)
    _assert_same_results(small, full, exact=True)


_CKPT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import halving as jhalving
    from jaxlr.engine import sweep as jsweep
    from jaxlr.engine.config import TrainConfig
    from jaxlr.engine.step import Data
    from jaxlr.report import tables
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(264, 40)), np.ones((264, 1))], axis=1)
    y = (x @ rng.normal(size=41) + 3.0 * rng.normal(size=264) > 0).astype(np.int32)
    data = Data(x[:64], y[:64], x[64:], y[64:])
    cfg = TrainConfig(model="logistic", batch_size=8, num_epochs=60, patience=5, eval_every=4,
                      early_stopping=True, epochs_per_call=1)
    grid = jgrid.random_points(12, (1e-3, 2.0), (1e-4, 0.1), seed=3)
    prune = jhalving.Halving(rung_epochs=4, keep_fraction=0.5, min_points=2)
    res = jsweep.run_sweep(cfg, grid, data, prune=prune, checkpoint_dir=sys.argv[1])
    out = {"table": tables.sweep_csv(res), "records": res.records(),
           "work": {k: v for k, v in res.work().items() if k != "wall_seconds"}}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
    """
)


def _ckpt_run(tmp_path, ckpt_dir, out, kill_after_chunks=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["JAX_PLATFORMS"] = "cpu"
    script = tmp_path / "ckpt_sweep.py"
    script.write_text(_CKPT_SCRIPT)
    cmd = [sys.executable, str(script), str(ckpt_dir), str(out)]
    if kill_after_chunks is None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(Path(out).read_text())
    from jaxlr.host import checkpoint as ckpt

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = Path(ckpt_dir) / "sweep.npz"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists():
                try:
                    if ckpt.load_flat(path)[1]["chunk"] >= kill_after_chunks:
                        break
                except ckpt.CheckpointError:
                    pass  # replaced while being read
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return ckpt.load_flat(path)[1]


def test_a_sweep_killed_with_sigkill_resumes_to_the_same_results(tmp_path):
    ref = _ckpt_run(tmp_path, tmp_path / "ref_ckpt", tmp_path / "ref.json")
    meta = _ckpt_run(tmp_path, tmp_path / "ckpt", tmp_path / "out.json", kill_after_chunks=3)
    assert 3 <= meta["chunk"] and meta["epoch"] < 60, meta
    resumed = _ckpt_run(tmp_path, tmp_path / "ckpt", tmp_path / "out.json")
    assert resumed["table"] == ref["table"]
    assert resumed["records"] == ref["records"]
    assert resumed["work"] == ref["work"]
    assert "pruned_rung" in ref["table"].splitlines()[0]
    # Started again once more: the finished checkpoint gives the same results at once.
    again = _ckpt_run(tmp_path, tmp_path / "ckpt", tmp_path / "again.json")
    assert again["table"] == ref["table"]


def test_a_checkpoint_of_another_sweep_is_refused(tmp_path):
    data = overfit_data()
    cfg = dataclasses.replace(OVERFIT, num_epochs=4)
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1))
    first = jsweep.run_sweep(cfg, grid, data, checkpoint_dir=tmp_path, log_fn=_quiet)
    assert (tmp_path / "sweep.npz").exists()
    again = jsweep.run_sweep(cfg, grid, data, checkpoint_dir=tmp_path, log_fn=_quiet)
    assert tables.sweep_csv(again) == tables.sweep_csv(first)
    other_cfg = dataclasses.replace(cfg, num_epochs=5)
    with pytest.raises(ValueError, match=r"config \(num_epochs 4 -> 5\) changed") as err:
        jsweep.run_sweep(other_cfg, grid, data, checkpoint_dir=tmp_path, log_fn=_quiet)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"grid \(.*\) changed"):
        jsweep.run_sweep(
            cfg, jgrid.make_grid(learning_rate=(0.005, 0.2)), data, checkpoint_dir=tmp_path
        )
