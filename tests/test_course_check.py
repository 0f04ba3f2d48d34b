"""The course's own gradient check, reproduced on real MNIST (TDT4265 Assignment 1).

The assignment's ``gradient_approximation_test``: the first 100 preprocessed training
images (pixels scaled to [-1, 1], a constant-1 feature appended: D = 785), weights drawn
from N(0, (1/785^2)^2), epsilon = 1e-3, and every coordinate of the central
finite-difference gradient within epsilon^2 = 1e-6 of the analytic one. Float64 (in
float32 the differences themselves are only good to ~1e-4).

Binary task: digits 2 and 3 only (2 -> label 1, 3 -> label 0), the first 100 training
images after filtering, in file order (as the course's ``load_binary_dataset`` then
``X_train[:100]``). Softmax task: the first 100 training images, all ten digits.

Needs the MNIST files: set JAXLR_DATA_DIR (the files in $JAXLR_DATA_DIR/mnist/ or
directly in it); skipped with the reason otherwise. Dimension legend: N examples,
D = 785 features, K classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import gradients, objective, testing
from jaxlr.data import idx as jidx
from jaxlr.data import images as jimages
from jaxlr.data import registry as jregistry

pytestmark = pytest.mark.realdata

NUM_IMAGES = 100
EPSILON = 1e-3
WEIGHT_STD = 1.0 / 785**2


@pytest.fixture(scope="module")
def mnist():
    try:
        return jregistry.load_dataset("mnist", download=False)
    except jidx.DataError as e:
        pytest.skip(f"MNIST not found (set JAXLR_DATA_DIR to a folder with mnist/): {e}")


@pytest.fixture(scope="module")
def binary_batch(mnist):
    """First 100 training images of digits 2 (label 1) and 3 (label 0), in file order."""
    x, y01 = jimages.binary_subset(mnist.x_train, mnist.y_train, positive=2, negative=3)
    x_ND = jnp.asarray(jimages.preprocess(x[:NUM_IMAGES], "symmetric", True, np.float64))
    y_N = jnp.asarray(y01[:NUM_IMAGES].astype(np.int32))
    assert x_ND.shape == (NUM_IMAGES, 785)
    assert float(x_ND.min()) == -1.0 and float(x_ND.max()) == 1.0
    assert float(x_ND[:, -1].min()) == 1.0  # the bias feature
    assert 0 < int(y_N.sum()) < NUM_IMAGES  # both digits present
    return x_ND, y_N


@pytest.fixture(scope="module")
def softmax_batch(mnist):
    """First 100 training images, all ten digits."""
    x_ND = jnp.asarray(
        jimages.preprocess(mnist.x_train[:NUM_IMAGES], "symmetric", True, np.float64)
    )
    y_N = jnp.asarray(mnist.y_train[:NUM_IMAGES].astype(np.int32))
    assert x_ND.shape == (NUM_IMAGES, 785)
    return x_ND, y_N


_RESULTS = {}


def _course_check(kind, batch, l2, l2_convention):
    """(analytic, finite-difference) gradients at the course's random point; memoised."""
    key = (kind, l2, l2_convention)
    if key in _RESULTS:
        return _RESULTS[key]
    x_ND, y_N = batch
    num_classes = 2 if kind == "logistic" else 10
    model = objective.make_model(
        kind,
        num_features=x_ND.shape[1],
        num_classes=num_classes,
        l2_convention=l2_convention,
        dtype=jnp.float64,
    )
    shape = jax.eval_shape(model.init, jax.random.key(0))["w"].shape
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(0.0, WEIGHT_STD, size=shape))}
    l2 = jnp.asarray(l2, jnp.float64)
    numeric = testing.finite_difference_grad(
        lambda p: model.loss(p, x_ND, y_N, l2)[0], params, eps=EPSILON
    )
    analytic = model.grad(params, x_ND, y_N, l2)
    # At these near-zero weights the cross-entropy is close to ln K (ln 2 for binary).
    ce = float(model.loss(params, x_ND, y_N, l2)[1])
    assert abs(ce - np.log(num_classes)) < 1e-3
    _RESULTS[key] = analytic, numeric
    return analytic, numeric


@pytest.mark.parametrize("l2,l2_convention", [(0.0, "sum"), (0.1, "half")])
def test_course_gradient_check_binary(binary_batch, l2, l2_convention):
    """Every coordinate of the FD gradient within 1e-6 of the analytic one (binary)."""
    analytic, numeric = _course_check("logistic", binary_batch, l2, l2_convention)
    testing.assert_tree_allclose(analytic, numeric, kind="course", dtype=jnp.float64)


@pytest.mark.parametrize("l2,l2_convention", [(0.0, "sum"), (0.1, "sum")])
def test_course_gradient_check_softmax(softmax_batch, l2, l2_convention):
    """Every coordinate of the FD gradient within 1e-6 of the analytic one (softmax)."""
    analytic, numeric = _course_check("softmax", softmax_batch, l2, l2_convention)
    testing.assert_tree_allclose(analytic, numeric, kind="course", dtype=jnp.float64)


def test_course_check_would_catch_common_mistakes(softmax_batch):
    """The check has teeth: forgetting the 1/N of the mean, or a flipped sign, fails."""
    analytic, numeric = _course_check("softmax", softmax_batch, 0.0, "sum")
    for wrong in (
        jax.tree.map(lambda g: g * NUM_IMAGES, analytic),
        jax.tree.map(jnp.negative, analytic),
    ):
        with pytest.raises(AssertionError):
            testing.assert_tree_allclose(wrong, numeric, kind="course", dtype=jnp.float64)


def test_course_check_margin_and_closed_form(binary_batch):
    """The 1e-6 check passes with a wide margin; at w = 0, dC/dw = -X^T (y - 1/2) / N."""
    analytic, numeric = _course_check("logistic", binary_batch, 0.0, "sum")
    err = float(jnp.max(jnp.abs(analytic["w"] - numeric["w"])))
    assert err < 1e-8, err
    x_ND, y_N = binary_batch
    at_zero = gradients.logistic_grad({"w": jnp.zeros((785, 1))}, x_ND, y_N, 0.0)
    expected = -(x_ND.T @ (y_N - 0.5)) / NUM_IMAGES
    np.testing.assert_allclose(at_zero["w"][:, 0], expected, rtol=1e-12, atol=1e-15)
