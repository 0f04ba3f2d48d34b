"""Models: parameter layouts, bias conventions, initialisations, forward passes, activations.

Dimension legend: N examples, D features, K outputs, I/O layer input/output width.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import models

KEY = jax.random.key(0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_linear_layouts(dtype):
    trick = models.init_linear(KEY, 785, 10, dtype=dtype)
    assert set(trick) == {"w"} and trick["w"].shape == (785, 10) and trick["w"].dtype == dtype
    assert not np.any(np.asarray(trick["w"]))  # zeros: the course's default
    explicit = models.init_linear(KEY, 784, 1, bias="explicit", dtype=dtype)
    assert explicit["w"].shape == (784, 1) and explicit["b"].shape == (1,)
    assert explicit["b"].dtype == dtype and not np.any(np.asarray(explicit["b"]))


def test_init_linear_normal_has_requested_std():
    w = np.asarray(models.init_linear(KEY, 785, 10, init="normal", std=0.05)["w"])
    assert abs(w.std() - 0.05) < 0.05 * 0.05  # 7850 draws: ~1% sampling error
    assert abs(w.mean()) < 0.005


def test_init_mlp_layout_of_the_homework_network():
    """784-3136-1568-10 has 7,396,266 parameters in three {"w", "b"} layers."""
    shapes = jax.eval_shape(lambda k: models.init_mlp(k, (784, 3136, 1568, 10)), KEY)
    layers = shapes["layers"]
    assert [layer["w"].shape for layer in layers] == [(784, 3136), (3136, 1568), (1568, 10)]
    assert [layer["b"].shape for layer in layers] == [(3136,), (1568,), (10,)]
    assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 7_396_266
    trick = jax.eval_shape(lambda k: models.init_mlp(k, (785, 30, 10), bias="trick"), KEY)
    assert all(set(layer) == {"w"} for layer in trick["layers"])


@pytest.mark.parametrize(
    "init,variance",
    [("glorot", lambda i, o: 2.0 / (i + o)), ("he", lambda i, o: 2.0 / i), ("normal", None)],
)
def test_init_mlp_variances(init, variance):
    params = models.init_mlp(KEY, (400, 300, 200), init=init, std=0.2)
    for layer, (fan_in, fan_out) in zip(params["layers"], [(400, 300), (300, 200)], strict=True):
        w = np.asarray(layer["w"])
        expected = 0.2**2 if variance is None else variance(fan_in, fan_out)
        assert abs(w.var() / expected - 1) < 0.03
        assert not np.any(np.asarray(layer["b"]))
    # Different layers get different keys.
    assert not np.allclose(params["layers"][0]["w"][:200, :200], params["layers"][1]["w"][:200])


def test_init_mlp_zeros_warns_about_symmetry():
    with pytest.warns(UserWarning, match="symmetry"):
        params = models.init_mlp(KEY, (5, 4, 3), init="zeros")
    assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models.init_mlp(KEY, (5, 3), init="zeros")  # no hidden layer: nothing to break


@pytest.mark.parametrize(
    "call",
    [
        lambda: models.init_linear(KEY, 3, 2, init="uniform"),
        lambda: models.init_linear(KEY, 3, 2, bias="none"),
        lambda: models.init_mlp(KEY, (3, 2), init="xavier"),
        lambda: models.mlp_apply({"layers": []}, jnp.ones((1, 3)), activation="gelu"),
        lambda: models.get_activation("softplus"),
    ],
)
def test_unknown_names_raise_listing_valid_values(call):
    with pytest.raises(ValueError, match="valid values"):
        call()


def test_linear_apply_bias_trick_equals_explicit_bias():
    rng = np.random.default_rng(0)
    x_ND = rng.normal(size=(6, 4))
    w_DK, b_K = rng.normal(size=(4, 3)), rng.normal(size=3)
    explicit = models.linear_apply({"w": w_DK, "b": b_K}, x_ND)
    trick = models.linear_apply({"w": np.vstack([w_DK, b_K])}, np.hstack([x_ND, np.ones((6, 1))]))
    np.testing.assert_allclose(explicit, x_ND @ w_DK + b_K, rtol=1e-13)
    np.testing.assert_allclose(trick, explicit, rtol=1e-13)


def _np_activation(name, z):
    return {
        "sigmoid": lambda: 1 / (1 + np.exp(-z)),
        "tanh": lambda: np.tanh(z),
        "relu": lambda: np.maximum(z, 0),
        "linear": lambda: z,
    }[name]()


@pytest.mark.parametrize("activation", list(models.ACTIVATIONS))
def test_mlp_apply_matches_a_hand_written_forward_pass(activation):
    rng = np.random.default_rng(1)
    sizes = (5, 4, 3, 2)
    layers = [
        {"w": rng.normal(size=(i, o)), "b": rng.normal(size=o)}
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x_ND = rng.normal(size=(7, 5))
    a = x_ND
    for i, layer in enumerate(layers):
        z = a @ layer["w"] + layer["b"]
        a = z if i == len(layers) - 1 else _np_activation(activation, z)  # linear output
    got = models.mlp_apply({"layers": layers}, x_ND, activation)
    np.testing.assert_allclose(got, a, rtol=1e-12)


def test_mlp_bias_trick_is_a_bias_on_the_first_layer_only():
    rng = np.random.default_rng(2)
    w1, b1, w2 = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(4, 2))
    x_ND = rng.normal(size=(5, 3))
    trick = {"layers": [{"w": np.vstack([w1, b1])}, {"w": w2}]}
    explicit = {"layers": [{"w": w1, "b": b1}, {"w": w2, "b": np.zeros(2)}]}
    np.testing.assert_allclose(
        models.mlp_apply(trick, np.hstack([x_ND, np.ones((5, 1))]), "tanh"),
        models.mlp_apply(explicit, x_ND, "tanh"),
        rtol=1e-12,
    )


@pytest.mark.parametrize("name", list(models.ACTIVATIONS))
def test_activation_derivatives_match_autodiff(name):
    """sigma'(z) used by backprop == jax.grad of the activation (ReLU'(0) := 0 in both)."""
    act = models.ACTIVATIONS[name]
    z = jnp.concatenate([jnp.linspace(-4.0, 4.0, 41), jnp.asarray([0.0, 1e-9, -1e-9])])
    expected = jax.vmap(jax.grad(act.fn))(z)
    np.testing.assert_allclose(act.deriv(z, act.fn(z)), expected, rtol=1e-12, atol=1e-15)
