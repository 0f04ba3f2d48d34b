"""make_model: the Model bundle the training engine uses.

Dimension legend: N examples, D features, K classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import losses, objective, testing

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="perceptron"), "kind"),
        (dict(kind="mlp", activation="gelu"), "activation"),
        (dict(kind="softmax", init="uniform"), "init"),
        (dict(kind="softmax", bias="none"), "bias"),
        (dict(kind="softmax", l2_convention="l1"), "l2 convention"),
        (dict(kind="logistic", num_classes=10), "2 classes"),
        (dict(kind="softmax", hidden=(5,)), "hidden"),
        (dict(kind="softmax", num_classes=1), "num_classes"),
    ],
)
def test_make_model_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        objective.make_model(num_features=5, **kwargs)


def test_model_fields_and_shapes():
    x_ND = jnp.ones((3, 785))
    logistic = objective.make_model("logistic", num_features=785)
    assert logistic.kind == "logistic" and logistic.num_classes == 2
    params = logistic.init(KEY)
    assert params["w"].shape == (785, 1) and not np.any(np.asarray(params["w"]))
    assert logistic.apply(params, x_ND).shape == (3,)  # rank 1
    softmax = objective.make_model("softmax", num_features=784, bias="explicit", dtype=jnp.float64)
    params = softmax.init(KEY)
    assert params["w"].shape == (784, 10) and params["b"].dtype == jnp.float64
    mlp = objective.make_model("mlp", num_features=785, hidden=(16, 8), activation="tanh")
    params = mlp.init(KEY)
    assert [layer["w"].shape for layer in params["layers"]] == [(785, 16), (16, 8), (8, 10)]
    assert np.std(np.asarray(params["layers"][0]["w"])) > 0  # glorot by default, not zeros
    assert mlp.apply(params, x_ND).shape == (3, 10)


def test_loss_returns_objective_and_cross_entropy():
    model = objective.make_model(
        "softmax",
        num_features=4,
        num_classes=3,
        init="normal",
        init_std=1.0,
        l2_convention="half",
        l2_bias=False,
        dtype=jnp.float64,
    )
    params = model.init(KEY)
    rng = np.random.default_rng(0)
    x_ND, y_N = rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    obj, ce = model.loss(params, x_ND, y_N, 0.3)
    np.testing.assert_allclose(ce, losses.softmax_cross_entropy(x_ND @ params["w"], y_N))
    # Bias trick, l2_bias=False, "half": R = 1/2 sum of all rows but the last.
    r = 0.5 * np.sum(np.asarray(params["w"])[:-1] ** 2)
    np.testing.assert_allclose(obj, ce + 0.3 * r, rtol=1e-14)
    assert float(model.accuracy(model.apply(params, x_ND), y_N)) == np.mean(
        np.argmax(x_ND @ params["w"], 1) == y_N
    )


def test_loss_and_grad_vmap_over_l2_with_one_trace():
    """l2 is a traced argument, never a constant: a vmapped sweep compiles once."""
    model = objective.make_model("logistic", num_features=5, init="normal", init_std=0.5)
    params = model.init(KEY)
    x_ND = jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32)
    y_N = jnp.asarray([0, 1] * 4)

    def step(params, l2_S):
        return jax.vmap(
            lambda l2: (model.loss(params, x_ND, y_N, l2)[0], model.grad(params, x_ND, y_N, l2))
        )(l2_S)

    counted = testing.count_traces(step)
    run = jax.jit(counted)
    obj_S, grad_S = run(params, jnp.asarray([0.0, 0.5, 1.0], jnp.float32))
    run(params, jnp.asarray([2.0, 3.0, 4.0], jnp.float32))
    assert counted.count == 1
    r = float(jnp.sum(params["w"] ** 2))
    np.testing.assert_allclose(obj_S[1] - obj_S[0], 0.5 * r, rtol=1e-5)
    np.testing.assert_allclose(
        grad_S["w"][2] - grad_S["w"][0], 2 * 1.0 * params["w"], rtol=1e-5, atol=1e-7
    )
    assert grad_S["w"].dtype == jnp.float32


def test_mlp_zero_init_warns():
    model = objective.make_model("mlp", num_features=5, hidden=(4,), init="zeros")
    with pytest.warns(UserWarning, match="symmetry"):
        model.init(KEY)
