"""Tests of random search and successive halving (`jaxlr.engine.grid`, `run_sweep(prune=...)`)."""

import dataclasses

import numpy as np
import pytest

from jaxlr.core.testing import assert_tree_allclose, tolerance
from jaxlr.engine import grid as jgrid
from jaxlr.engine import halving as jhalving
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.step import Data
from jaxlr.engine.train import fit
from jaxlr.report import tables

TOL = tolerance(np.float64, "grad_vs_autodiff")


def _data(n=64, v=200, d=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n + v, d)), np.ones((n + v, 1))], axis=1)
    y = np.argmax(x @ rng.normal(size=(d + 1, k)) + 3.0 * rng.normal(size=(n + v, k)), axis=1)
    y = y.astype(np.int32)
    return Data(x[:n], y[:n], x[n:], y[n:])


CFG = TrainConfig(
    model="softmax",
    num_classes=3,
    batch_size=8,
    num_epochs=24,
    eval_every=4,
    early_stopping=True,
    patience=8,
    epochs_per_call=3,
    shuffle=True,
)


def test_random_points_are_log_uniform_seeded_and_reproducible():
    g = jgrid.random_points(2000, (1e-3, 1.0), (1e-4, 1e-2), seed=7)
    assert g.axes == ("point",) and g.shape == (2000,)
    lr = np.asarray(g.hparams.learning_rate, np.float64)
    l2 = np.asarray(g.hparams.l2, np.float64)
    assert lr.min() >= 1e-3 and lr.max() <= 1.0 and l2.min() >= 1e-4 and l2.max() <= 1e-2
    # Log-uniform: each decade of [1e-3, 1] holds about a third of the points.
    decades = np.histogram(np.log10(lr), bins=[-3, -2, -1, 0])[0] / 2000
    np.testing.assert_allclose(decades, 1 / 3, atol=0.05)
    assert np.all(g.hparams.momentum == 0) and np.all(g.hparams.seed == 0)
    again = jgrid.random_points(2000, (1e-3, 1.0), (1e-4, 1e-2), seed=7)
    np.testing.assert_array_equal(again.hparams.learning_rate, g.hparams.learning_rate)
    other = jgrid.random_points(2000, (1e-3, 1.0), (1e-4, 1e-2), seed=8)
    assert not np.array_equal(other.hparams.learning_rate, g.hparams.learning_rate)
    # A range left out does not change the others' draws; l2 is then 0 everywhere.
    no_l2 = jgrid.random_points(2000, (1e-3, 1.0), seed=7, momentum_range=(0.5, 0.9))
    np.testing.assert_array_equal(no_l2.hparams.learning_rate, g.hparams.learning_rate)
    assert np.all(no_l2.hparams.l2 == 0)
    mom = np.asarray(no_l2.hparams.momentum)
    assert mom.min() >= 0.5 and mom.max() <= 0.9
    fixed = jgrid.random_points(3, (0.1, 0.1), train_seed=4)
    assert fixed.point(2) == {"learning_rate": 0.1, "l2": 0.0, "momentum": 0.0, "seed": 4}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=0, lr_range=(0.1, 1)), "num_samples must be an int >= 1, got 0"),
        (dict(num_samples=2, lr_range=(0.0, 1)), r"lr_range=\(0.0, 1\) must satisfy 0 < LO"),
        (dict(num_samples=2, lr_range=(1, 0.1)), "lr_range"),
        (dict(num_samples=2, lr_range=(0.1, 1), l2_range=(0, 1e-2)), "l2_range"),
        (dict(num_samples=2, lr_range=0.1), r"lr_range must be \(LO, HI\)"),
    ],
)
def test_random_points_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jgrid.random_points(**kwargs)


def test_halving_rule_validation_and_prune_rung():
    with pytest.raises(ValueError, match="rung_epochs must be >= 1"):
        jhalving.Halving(rung_epochs=0)
    with pytest.raises(ValueError, match=r"keep_fraction must be in \(0, 1\), got 1.0"):
        jhalving.Halving(keep_fraction=1.0)
    rule = jhalving.Halving(rung_epochs=2, keep_fraction=1 / 3)
    loss = np.array([0.5, 0.1, np.nan, 0.3, 0.1, 0.9, 0.2, 0.05])
    active = np.array([True, True, True, True, True, True, True, False])
    # 7 active -> keep ceil(7/3) = 3: losses 0.1 (1), 0.1 (4, tie: lower index first wins
    # after 1), 0.2 (6); NaN ranks last; the inactive point 7 is left alone.
    cut = jhalving.prune_rung(loss, active, rule)
    np.testing.assert_array_equal(np.flatnonzero(~cut & active), [1, 4, 6])
    assert not cut[7]
    # Ties are broken by index: with equal losses the lowest indices survive.
    cut = jhalving.prune_rung(np.ones(6), np.ones(6, bool), rule)
    np.testing.assert_array_equal(np.flatnonzero(~cut), [0, 1])
    # Never below min_points.
    cut = jhalving.prune_rung(loss, active, dataclasses.replace(rule, min_points=5))
    assert (~cut & active).sum() == 5
    assert not jhalving.prune_rung(loss[:1], active[:1], rule).any()
    with pytest.raises(ValueError, match="must be"):
        jhalving.prune_rung(loss, active[:3], rule)


def test_halving_stops_the_worst_points_at_each_rung():
    data = _data()
    grid = jgrid.random_points(12, (1e-3, 1.0), (1e-4, 1e-2), seed=1)
    rule = jhalving.Halving(rung_epochs=6, keep_fraction=0.5)
    res = jsweep.run_sweep(CFG, grid, data, prune=rule, log_fn=lambda m: None)
    full = jsweep.run_sweep(CFG, grid, data, log_fn=lambda m: None)
    m = res.num_batches
    rung = res.pruned_rung
    assert rung.shape == (12,) and (rung >= 1).sum() >= 6, rung
    # A pruned point ran exactly to the end of its rung, and until then it is the same run
    # as without pruning (same steps, same losses).
    for i in np.flatnonzero(rung >= 1):
        h, f = res.histories[i], full.histories[i]
        assert h["step"][-1] == rung[i] * rule.rung_epochs * m - 1
        n = len(h["step"])
        np.testing.assert_array_equal(h["step"], f["step"][:n])
        np.testing.assert_allclose(h["train_loss"], f["train_loss"][:n], rtol=TOL["rtol"])
    # At each rung the survivors are the better half of the points still training, by the
    # best validation loss so far (recomputed here from the unpruned histories).
    for r in range(1, rung.max() + 1):
        end = r * rule.rung_epochs * m
        alive = [
            i
            for i in range(12)
            if (rung[i] < 0 or rung[i] >= r)
            and full.histories[i]["step"][-1] >= end - 1
            and not (0 <= full.early_stopping["step"][i] < end - 1)
        ]
        best = {
            i: np.min(
                full.histories[i]["val_loss"][full.histories[i]["check_step"] < end],
                initial=np.inf,
            )
            for i in alive
        }
        cut = [i for i in alive if rung[i] == r]
        kept = [i for i in alive if rung[i] != r]
        assert cut and kept
        assert max(best[i] for i in kept) <= min(best[i] for i in cut) * (1 + 1e-12)
    # Survivors equal single runs; pruning saved work.
    for i in np.flatnonzero(rung < 0)[:2]:
        p = grid.point(i)
        single = fit(CFG, make_hparams(p["learning_rate"], p["l2"], p["momentum"], p["seed"]), data)
        assert_tree_allclose(res.point_params(i), single.params, **TOL)
    assert res.point_steps < full.point_steps
    assert res.work()["num_pruned"] == int((rung >= 1).sum())
    table = tables.sweep_csv(res).splitlines()
    assert "pruned_rung" in table[0].split(",")
    col = table[0].split(",").index("pruned_rung")
    assert [row.split(",")[col] for row in table[1:]] == [str(r) if r >= 0 else "" for r in rung]
    assert "pruned_rung" not in tables.sweep_csv(full).splitlines()[0]


def test_run_sweep_rejects_a_bad_prune_rule():
    with pytest.raises(ValueError, match="prune must be None or a jaxlr.engine.halving.Halving"):
        jsweep.run_sweep(CFG, jgrid.random_points(2, (0.1, 1)), _data(), prune=0.5)
    # A rung that ends at or after the last epoch ranks nothing: refused, not a silent no-op.
    rule = jhalving.Halving(rung_epochs=CFG.num_epochs)
    with pytest.raises(ValueError, match=f"rung_epochs {CFG.num_epochs} must be less than"):
        jsweep.run_sweep(CFG, jgrid.random_points(2, (0.1, 1)), _data(), prune=rule)
