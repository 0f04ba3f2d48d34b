"""Losses and metrics: values against hand-built formulas, stability, masks, L2, accuracy.

Dimension legend: N examples, K classes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import losses, models, testing

RNG = np.random.default_rng(0)
Z_N = RNG.normal(0.0, 2.0, size=9)
Y01_N = RNG.integers(0, 2, size=9)
Z_NK = RNG.normal(0.0, 2.0, size=(9, 4))
Y_N = RNG.integers(0, 4, size=9)


def _naive_bce(z, y):
    p = 1 / (1 + np.exp(-z))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def _naive_softmax_ce(z_NK, y_N):
    p = np.exp(z_NK) / np.exp(z_NK).sum(-1, keepdims=True)
    return -np.mean(np.log(p[np.arange(len(y_N)), y_N]))


def test_binary_cross_entropy_matches_the_textbook_formula():
    got = losses.binary_cross_entropy(Z_N, Y01_N)
    np.testing.assert_allclose(
        got, _naive_bce(Z_N, Y01_N), **testing.tolerance("float64", "loss_value")
    )
    # Soft (probability) targets work too.
    y_soft = RNG.uniform(size=9)
    np.testing.assert_allclose(
        losses.binary_cross_entropy(Z_N, y_soft), _naive_bce(Z_N, y_soft), rtol=1e-12
    )


def test_softmax_cross_entropy_labels_equal_one_hot_and_the_formula():
    by_label = losses.softmax_cross_entropy(Z_NK, Y_N)
    by_one_hot = losses.softmax_cross_entropy(Z_NK, np.eye(4)[Y_N])
    np.testing.assert_allclose(by_label, _naive_softmax_ce(Z_NK, Y_N), rtol=1e-12)
    np.testing.assert_allclose(by_one_hot, by_label, rtol=1e-14)
    with pytest.raises(ValueError, match="do not match"):
        losses.softmax_cross_entropy(Z_NK, np.zeros((9, 3)))


def test_cross_entropy_dispatches_on_rank():
    assert losses.cross_entropy(Z_N, Y01_N) == losses.binary_cross_entropy(Z_N, Y01_N)
    assert losses.cross_entropy(Z_NK, Y_N) == losses.softmax_cross_entropy(Z_NK, Y_N)


def test_losses_stable_at_extreme_logits_float32():
    """Logits of +-1e4 in float32: finite values and gradients, equal to the limits."""
    z_N = jnp.asarray([1e4, -1e4, 1e4, -1e4, 0.0], jnp.float32)
    y_N = jnp.asarray([1, 0, 0, 1, 1])
    value, grad = jax.value_and_grad(losses.binary_cross_entropy)(z_N, y_N)
    assert value.dtype == jnp.float32 and np.isfinite(value)
    # Per-example losses 0, 0, 1e4, 1e4, ln 2; gradient (sigmoid(z) - y) / N.
    np.testing.assert_allclose(value, (2e4 + math.log(2)) / 5, rtol=1e-6)
    np.testing.assert_allclose(grad, np.asarray([0, 0, 1, -1, -0.5]) / 5, atol=1e-7)
    # The naive formula overflows to inf/nan at the same logits.
    with np.errstate(all="ignore"):
        z = np.asarray(z_N)
        p = (1 / (1 + np.exp(-z))).astype(np.float32)
        naive = -(y_N * np.log(p) + (1 - y_N) * np.log(1 - p))
    assert not np.all(np.isfinite(naive))

    z_NK = jnp.asarray([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], jnp.float32)
    y2_N = jnp.asarray([1, 0])
    value, grad = jax.value_and_grad(losses.softmax_cross_entropy)(z_NK, y2_N)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # Example 0: logsumexp 1e4, true logit -1e4 -> loss 2e4;
    # example 1: logsumexp 1e4 + ln 2, true logit -1e4 -> loss 2e4 + ln 2.
    np.testing.assert_allclose(value, (4e4 + math.log(2)) / 2, rtol=1e-6)
    expected_grad = (np.asarray([[1, -1, 0], [-1, 0.5, 0.5]])) / 2
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)


def test_masked_mean_is_the_mean_over_kept_examples():
    mask = np.asarray([1, 0, 1, 1, 0, 1, 1, 0, 1])
    keep = mask == 1
    np.testing.assert_allclose(
        losses.binary_cross_entropy(Z_N, Y01_N, mask),
        _naive_bce(Z_N[keep], Y01_N[keep]),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(Z_NK, Y_N, mask),
        _naive_softmax_ce(Z_NK[keep], Y_N[keep]),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        losses.accuracy(Z_NK, Y_N, mask), np.mean(Z_NK[keep].argmax(-1) == Y_N[keep])
    )
    # An all-zero mask gives 0, not 0/0, and a finite gradient.
    zeros = np.zeros(9)
    value, grad = jax.value_and_grad(losses.softmax_cross_entropy)(Z_NK, Y_N, zeros)
    assert value == 0 and np.all(grad == 0)


def _linear_params(bias):
    w = RNG.normal(size=(5, 3))
    return {"w": w, "b": RNG.normal(size=3)} if bias == "explicit" else {"w": w}


@pytest.mark.parametrize("bias", ["trick", "explicit"])
@pytest.mark.parametrize("convention,factor", [("sum", 1.0), ("half", 0.5)])
def test_l2_penalty_conventions_and_bias(bias, convention, factor):
    params = _linear_params(bias)
    w = params["w"]
    all_sq = np.sum(w**2) + (np.sum(params["b"] ** 2) if bias == "explicit" else 0)
    no_bias_sq = np.sum(w[:-1] ** 2) if bias == "trick" else np.sum(w**2)
    np.testing.assert_allclose(losses.l2_penalty(params, convention), factor * all_sq, rtol=1e-14)
    np.testing.assert_allclose(
        losses.l2_penalty(params, convention, include_bias=False), factor * no_bias_sq, rtol=1e-14
    )


@pytest.mark.parametrize("bias", ["trick", "explicit"])
def test_l2_penalty_of_an_mlp_covers_every_layer(bias):
    rng = np.random.default_rng(5)
    layers = [{"w": rng.normal(size=(4, 3))}, {"w": rng.normal(size=(3, 2))}]
    if bias == "explicit":
        for layer, width in zip(layers, (3, 2), strict=True):
            layer["b"] = rng.normal(size=width)
    params = {"layers": layers}
    weights_sq = sum(np.sum(layer["w"] ** 2) for layer in layers)
    bias_sq = sum(np.sum(layer.get("b", np.zeros(0)) ** 2) for layer in layers)
    with_bias = weights_sq + bias_sq
    # Bias trick: only the first layer's last row is a bias.
    without = weights_sq - (np.sum(layers[0]["w"][-1] ** 2) if bias == "trick" else 0)
    np.testing.assert_allclose(losses.l2_penalty(params), with_bias, rtol=1e-14)
    np.testing.assert_allclose(losses.l2_penalty(params, "sum", False), without, rtol=1e-14)


def test_l2_penalty_unknown_convention_raises():
    with pytest.raises(ValueError, match="valid values"):
        losses.l2_penalty({"w": np.ones((2, 2))}, "l1")


def test_binary_accuracy_thresholds_at_one_half():
    logits_N = np.asarray([-2.0, -1e-9, 0.0, 1e-9, 3.0])  # p < .5, < .5, = .5, > .5, > .5
    # p >= 0.5 predicts 1: so 0.0 (p exactly 0.5) counts as class 1.
    assert losses.accuracy(logits_N, np.asarray([0, 0, 1, 1, 1])) == 1.0
    assert losses.accuracy(logits_N, np.asarray([0, 0, 0, 1, 1])) == 0.8


def test_multiclass_accuracy_is_argmax_and_accepts_one_hot():
    logits_NK = np.asarray([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    y_N = np.asarray([1, 0, 1])
    np.testing.assert_allclose(losses.accuracy(logits_NK, y_N), 2 / 3)
    np.testing.assert_allclose(losses.accuracy(logits_NK, np.eye(3)[y_N]), 2 / 3)


def test_confidence_and_probabilities():
    p = 1 / (1 + np.exp(-Z_N))
    conf = losses.confidence(Z_N)
    np.testing.assert_allclose(conf, np.abs(p - 0.5) + 0.5, rtol=1e-14)
    np.testing.assert_allclose(conf, np.maximum(p, 1 - p), rtol=1e-14)
    assert np.all(conf >= 0.5) and np.all(conf <= 1)
    probs = losses.predict_proba(Z_NK)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(losses.confidence(Z_NK), probs.max(-1))
    np.testing.assert_allclose(losses.predict_proba(Z_N), p, rtol=1e-14)


def test_one_hot_of_label_3():
    np.testing.assert_array_equal(
        losses.one_hot(jnp.asarray([3]), 10)[0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    )


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_zero_weights_give_one_half_one_tenth_ln2_ln10(dtype):
    """The course's sanity check: untrained (zero) weights predict uniformly."""
    x_ND = jnp.asarray(RNG.uniform(-1, 1, size=(50, 785)), dtype)
    y01_N = jnp.asarray(RNG.integers(0, 2, size=50))
    y_N = jnp.asarray(RNG.integers(0, 10, size=50))
    logits_N = models.linear_apply(models.init_linear(None, 785, 1, dtype=dtype), x_ND)[:, 0]
    logits_NK = models.linear_apply(models.init_linear(None, 785, 10, dtype=dtype), x_ND)
    p_N = losses.predict_proba(logits_N)
    assert np.all(np.asarray(p_N) == 0.5) and float(jnp.mean(p_N)) == 0.5  # exactly
    probs_NK = np.asarray(losses.predict_proba(logits_NK))
    # 1/10 to within a few units in the last place of the dtype (exp(0)/10 need not
    # round to the float nearest 0.1 after softmax's max-subtraction and division).
    ulps = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(probs_NK, np.asarray(0.1, dtype), rtol=ulps)
    np.testing.assert_allclose(np.mean(probs_NK, dtype=np.float64), 0.1, rtol=ulps)
    tol = testing.tolerance(dtype, "loss_value")
    np.testing.assert_allclose(losses.binary_cross_entropy(logits_N, y01_N), math.log(2), **tol)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits_NK, y_N), math.log(10), **tol)


# (function, logits shape, targets shape, mask shape or None): each must raise a ValueError
# naming both shapes instead of broadcasting.
SHAPE_MISMATCHES = [
    # The case: course-shaped [N, 1] targets with [N] logits broadcast to [N, N].
    (losses.binary_cross_entropy, (6,), (6, 1), None),
    (losses.binary_cross_entropy, (6, 1), (6,), None),
    (losses.binary_cross_entropy, (6,), (5,), None),
    (losses.binary_cross_entropy, (), (), None),
    (losses.accuracy, (6,), (6, 1), None),
    (losses.accuracy, (6,), (5,), None),
    (losses.accuracy, (6, 3), (5,), None),
    (losses.accuracy, (6, 3), (6, 2), None),
    (losses.accuracy, (6, 3, 2), (6,), None),
    (losses.softmax_cross_entropy, (6, 3), (5,), None),
    (losses.softmax_cross_entropy, (6, 3), (6, 3, 1), None),
    (losses.softmax_cross_entropy, (6,), (6,), None),
    (losses.cross_entropy, (6, 3, 2), (6,), None),
    (losses.cross_entropy, (6,), (6, 1), None),
]


@pytest.mark.parametrize(
    "fn, z_shape, y_shape, mask_shape",
    SHAPE_MISMATCHES,
    ids=[f"{f.__name__}-{z}-{y}" for f, z, y, _ in SHAPE_MISMATCHES],
)
def test_mismatched_shapes_raise_naming_both(fn, z_shape, y_shape, mask_shape):
    z = np.zeros(z_shape)
    y = np.zeros(y_shape, np.int32)
    with pytest.raises(ValueError) as err:
        fn(z, y)
    msg = str(err.value)
    assert str(z_shape) in msg, msg
    if fn is not losses.cross_entropy or len(z_shape) in (1, 2):
        assert str(y_shape) in msg, msg
    assert "\n" not in msg
    # Traced under jit the check fires the same way (shapes are static).
    with pytest.raises(ValueError):
        jax.jit(fn)(z, y)


@pytest.mark.parametrize(
    "fn, z, y",
    [
        (losses.binary_cross_entropy, Z_N, Y01_N),
        (losses.softmax_cross_entropy, Z_NK, Y_N),
        (losses.accuracy, Z_N, Y01_N),
        (losses.accuracy, Z_NK, Y_N),
    ],
)
def test_mask_of_another_shape_raises_naming_both(fn, z, y):
    with pytest.raises(ValueError, match=r"mask of shape \(9, 1\).*\(9,\)"):
        fn(z, y, np.ones((9, 1)))
    with pytest.raises(ValueError, match=r"mask of shape \(8,\)"):
        fn(z, y, np.ones(8))


def test_course_shaped_targets_flattened_give_the_right_number():
    """The [N, 1] targets that used to broadcast give the textbook value once flattened."""
    y_N1 = Y01_N[:, None]
    with pytest.raises(ValueError, match="reshape"):
        losses.binary_cross_entropy(Z_N, y_N1)
    np.testing.assert_allclose(
        losses.binary_cross_entropy(Z_N, y_N1.reshape(-1)), _naive_bce(Z_N, Y01_N), rtol=1e-12
    )
    # What broadcasting gave before the check: the mean over an [N, N] matrix, a wrong number.
    broadcast = np.mean(np.logaddexp(0, Z_N) - y_N1 * Z_N)
    assert abs(broadcast - _naive_bce(Z_N, Y01_N)) > 1e-3
