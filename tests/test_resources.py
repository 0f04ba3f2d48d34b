"""Memory estimates and refusals (`jaxlr.engine.resources`), and `fit` refusing what cannot fit.

Dimension legend: N training examples, V validation examples, D features, P parameters.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.engine import resources
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.resources import ResourceError
from jaxlr.engine.step import Data
from jaxlr.engine.train import fit, model_for

GiB = 1 << 30


def _data(n=40, v=20, d=10, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n + v, d)).astype(dtype)
    y = rng.integers(0, 2, size=n + v).astype(np.int32)
    return Data(x[:n], y[:n], x[n:], y[n:])


@pytest.mark.parametrize(
    "config, d, expected",
    [
        # Counted by hand from the layouts in jaxlr/core/models.py.
        (TrainConfig(model="logistic"), 785, 785),
        (TrainConfig(model="logistic", bias="explicit"), 784, 784 + 1),
        (TrainConfig(model="softmax"), 785, 785 * 10),
        (TrainConfig(model="softmax", bias="explicit"), 784, 784 * 10 + 10),
        (TrainConfig(model="mlp", hidden=(64,)), 785, 785 * 64 + 64 * 10),
        (
            TrainConfig(model="mlp", hidden=(3136, 1568), bias="explicit"),
            784,
            784 * 3136 + 3136 + 3136 * 1568 + 1568 + 1568 * 10 + 10,  # 7,396,266 (hw3)
        ),
        (TrainConfig(model="mlp", hidden=(100_000_000,)), 785, 795 * 100_000_000),
    ],
)
def test_num_params_from_shapes_only(config, d, expected):
    assert resources.num_params(model_for(config, d, jnp.float32)) == expected
    assert resources.num_params(expected) == expected


def test_estimate_by_hand():
    cfg = TrainConfig(model="softmax", num_classes=3, batch_size=16)
    est = resources.estimate_run_bytes(cfg, 30, (240, 120, 10), 8)
    # Per point (float64): state 3 x 30 (params, new params, grads; SGD has no slots);
    # a step's batch 16 x (10 + 3 x 3); a check 2 x max(120, 240) x 3; logs 6 x 1 x 15.
    assert est.state == 8 * 90
    assert est.activations == 8 * (16 * 19 + 1440)
    assert est.logs == 8 * 90
    assert est.per_point == 8 * (90 + 304 + 1440 + 90)
    # Data: (240 + 120) x 10 floats and 360 int32 labels.
    assert est.data == 8 * 3600 + 4 * 360
    assert est.total == est.data + est.per_point
    # Adam keeps two slots, early stopping the best parameters: 3 + 2 + 1 copies.
    adam = dataclasses.replace(cfg, optimizer="adam", early_stopping=True)
    assert resources.estimate_run_bytes(adam, 30, (240, 120, 10), 8).state == 8 * 30 * 6
    # Points share the data and multiply the rest.
    many = resources.estimate_run_bytes(cfg, 30, (240, 120, 10), 8, points=7)
    assert many.total == est.data + 7 * est.per_point and many.per_point == est.per_point


def test_check_fits_accepts_small_and_refuses_large_in_one_line():
    resources.check_fits(GiB - 1, GiB)
    resources.check_fits(GiB, GiB)
    with pytest.raises(ResourceError) as err:
        resources.check_fits(3 * GiB, GiB, what="sweep block of 64 points")
    msg = str(err.value)
    assert msg.startswith("sweep block of 64 points needs about 3.0 GiB")
    assert "only 1.0 GiB is available" in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)


def test_huge_mlp_is_refused_before_anything_is_allocated():
    """`--model=mlp --hidden=100000000`: ~1 TB of parameters; refused, never allocated."""
    cfg = TrainConfig(model="mlp", hidden=(100_000_000,), batch_size=8, num_epochs=1)
    data = _data(d=785)
    model = model_for(cfg, 785, jnp.float32)
    est = resources.estimate_run_bytes(cfg, model, (40, 20, 785), 4)
    assert est.num_params == 79_500_000_000
    assert est.state == 4 * 3 * est.num_params  # params, new params, grads: 954 GB
    # A step's hidden activations: 8 x (785 + 3 x (1e8 + 10)); a check's: 2 x 40 x (1e8 + 10).
    assert est.activations == 4 * (8 * (785 + 3 * 100_000_010) + 80 * 100_000_010)
    with pytest.raises(ResourceError) as err:
        resources.check_fits(est, 100 * GiB, what="fit of a mlp model")
    msg = str(err.value)
    assert f"needs about {resources.format_bytes(est.total)} (79,500,000,000 parameters" in msg
    assert resources.format_bytes(est.total).endswith(" GiB")
    assert "only 100.0 GiB is available" in msg and "\n" not in msg
    hp = make_hparams(0.1, dtype=jnp.float32)
    live = {id(a) for a in jax.live_arrays()}
    # No array reaches the device on the way to the refusal, not even the data: any
    # host-to-device transfer would raise instead of the ResourceError.
    with jax.transfer_guard("disallow"):
        with pytest.raises(ResourceError, match=r"fit of a mlp model needs about .* available"):
            fit(cfg, hp, data)
    assert {id(a) for a in jax.live_arrays()} <= live


def test_small_fit_is_accepted():
    cfg = TrainConfig(model="mlp", hidden=(8,), batch_size=8, num_epochs=1)
    est = resources.estimate_run_bytes(cfg, model_for(cfg, 10, jnp.float32), (40, 20, 10), 4)
    assert est.total < resources.available_bytes()
    r = fit(cfg, make_hparams(0.1, dtype=jnp.float32), _data())
    assert r.metrics["steps"] == 5


def test_available_bytes_and_format():
    avail = resources.available_bytes()
    assert isinstance(avail, int) and avail > 0
    assert resources.format_bytes(512) == "512 B"
    assert resources.format_bytes(3 * 1024) == "3.0 KiB"
    assert resources.format_bytes(1.5 * GiB) == "1.5 GiB"
    assert resources.format_bytes(2048 * GiB) == "2.0 TiB"


def test_bad_estimate_arguments():
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="points=0"):
        resources.estimate_run_bytes(cfg, 10, (4, 2, 3), 4, points=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        resources.num_params(-1)
