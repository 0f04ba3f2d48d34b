"""Tests of `jaxlr.report.metrics`: every expected value is built by hand on small arrays."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core.testing import tolerance
from jaxlr.report import metrics

# A number against the same quantity computed by hand in another way.
TOL = tolerance(np.float64, "loss_value")


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=TOL["rtol"], atol=TOL["atol"])


# ---------------------------------------------------------------------------------------------
# Curves.


def test_running_mean_by_hand():
    close(metrics.running_mean([1.0, 2.0, 3.0, 4.0], 2), [1.0, 1.5, 2.5, 3.5])
    close(metrics.running_mean([1.0, 2.0, 3.0, 4.0], 1), [1.0, 2.0, 3.0, 4.0])
    # A window longer than the curve: the mean of everything so far.
    close(metrics.running_mean([6.0, 0.0, 3.0], 10), [6.0, 3.0, 3.0])
    assert metrics.running_mean([], 3).shape == (0,)


def test_running_mean_equals_the_loop_definition():
    x = np.random.default_rng(0).normal(size=37)
    for window in (1, 3, 10, 50):
        want = [np.mean(x[max(0, t - window + 1) : t + 1]) for t in range(len(x))]
        close(metrics.running_mean(x, window), want)


@pytest.mark.parametrize("window", [0, -2, 1.5, True])
def test_running_mean_refuses_a_bad_window(window):
    with pytest.raises(ValueError, match="window"):
        metrics.running_mean([1.0, 2.0], window)


def test_epochs_done():
    close(metrics.epochs_done([0, 9, 19, 24], 10), [0.1, 1.0, 2.0, 2.5])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        metrics.epochs_done([0], 0)


def test_late_jitter_by_hand():
    # Second half of 5 values starts at index 5 // 2 = 2: [2, 3, 1], steps 1 and 2.
    assert metrics.late_jitter([1.0, 5.0, 2.0, 3.0, 1.0]) == pytest.approx(1.5, abs=0)
    # Everything: steps 4, 3, 1, 2.
    assert metrics.late_jitter([1.0, 5.0, 2.0, 3.0, 1.0], fraction=1.0) == 2.5
    # Second half of 6 values: [3, 1, 0], steps 2 and 1.
    assert metrics.late_jitter([9.0, 9.0, 9.0, 3.0, 1.0, 0.0]) == 1.5
    assert np.isnan(metrics.late_jitter([1.0, 2.0]))  # one value left in the second half
    with pytest.raises(ValueError, match="fraction"):
        metrics.late_jitter([1.0, 2.0], fraction=0.0)


# ---------------------------------------------------------------------------------------------
# Classification results.

CM = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_confusion_matrix_by_hand():
    cm = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    # A class without examples or predictions keeps its zeros.
    np.testing.assert_array_equal(
        metrics.confusion_matrix(np.array([1, 1], np.int32), [1, 0], 4),
        [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    )


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 3], [0, 1], "y_true_N"),
        ([0, 1], [0, -1], "y_pred_N"),
        ([0, 1], [0, 1, 1], "shapes"),
        ([0.0, 1.0], [0, 1], "integer"),
    ],
)
def test_confusion_matrix_refuses_bad_labels(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(np.array(y_true), np.array(y_pred), 3)


def test_per_class_accuracy_by_hand():
    close(metrics.per_class_accuracy(CM), [0.5, 1.0, 2.0 / 3.0])
    # No example of class 1: accuracy 0, not a division by zero.
    close(metrics.per_class_accuracy([[2, 0], [0, 0]]), [1.0, 0.0])
    with pytest.raises(ValueError, match="square"):
        metrics.per_class_accuracy(np.zeros((2, 3)))


def test_top_confusions_by_hand():
    cm = np.array([[50, 3, 0], [7, 40, 1], [0, 2, 30]])
    assert metrics.top_confusions(cm) == [(1, 0, 7), (0, 1, 3), (2, 1, 2)]
    # k = 5 looks at five cells; the fifth has count 0 and is dropped.
    assert metrics.top_confusions(cm, k=5) == [(1, 0, 7), (0, 1, 3), (2, 1, 2), (1, 2, 1)]
    assert metrics.top_confusions(np.diag([5, 5])) == []
    assert all(type(v) is int for v in metrics.top_confusions(cm)[0])


# ---------------------------------------------------------------------------------------------
# Weights and images.


def test_weight_norm_by_hand():
    trick = {"w": np.array([[3.0], [4.0], [12.0]])}  # last row: the bias feature
    assert metrics.weight_norm(trick) == 13.0
    assert metrics.weight_norm(trick, include_bias=False) == 5.0
    explicit = {"w": np.array([[3.0], [4.0]]), "b": np.array([12.0])}
    assert metrics.weight_norm(explicit, True) == 13.0
    assert metrics.weight_norm(explicit, False) == 5.0
    mlp = {
        "layers": [
            {"w": np.full((2, 2), 1.0), "b": np.zeros(2)},
            {"w": np.array([[2.0], [2.0]]), "b": np.array([1.0])},
        ]
    }
    assert metrics.weight_norm(mlp, include_bias=True) == 13.0**0.5
    assert metrics.weight_norm(mlp, include_bias=False) == 12.0**0.5


def test_pixel_weights_KP_drops_the_bias_row():
    w_DK = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(metrics.pixel_weights_KP({"w": w_DK}), w_DK[:4].T)
    np.testing.assert_array_equal(metrics.pixel_weights_KP({"w": w_DK}, False), w_DK.T)
    # Explicit bias: every row of w is a pixel.
    np.testing.assert_array_equal(
        metrics.pixel_weights_KP({"w": w_DK, "b": np.zeros(2)}, True), w_DK.T
    )
    # Logistic regression, w_D: one class.
    got = metrics.pixel_weights_KP({"w": np.arange(5.0)})
    np.testing.assert_array_equal(got, [[0.0, 1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="params"):
        metrics.pixel_weights_KP({"layers": []})


def test_class_mean_images_by_hand():
    x_ND = np.array([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0], [5.0, 6.0, 9.0]])  # last: bias feature
    means = metrics.class_mean_images_KP(x_ND, [0, 0, 2], 3, 2)
    np.testing.assert_array_equal(means[[0, 2]], [[2.0, 3.0], [5.0, 6.0]])
    assert np.isnan(means[1]).all()  # no example of class 1
    with pytest.raises(ValueError, match="num_pixels"):
        metrics.class_mean_images_KP(x_ND, [0, 0, 2], 3, 4)


def test_pearson_rows():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    want = [np.corrcoef(a[k], b[k])[0, 1] for k in range(4)]
    close(metrics.pearson_rows(a, b), want)
    close(metrics.pearson_rows(a[:1], 2 * a[:1] + 1), [1.0])
    close(metrics.pearson_rows(a[:1], -a[:1]), [-1.0])
    assert np.isnan(metrics.pearson_rows(np.ones((1, 5)), a[:1, :5])).all()  # constant row
    with pytest.raises(ValueError, match="shape"):
        metrics.pearson_rows(a, b[:3])


# ---------------------------------------------------------------------------------------------
# Predictions.


def test_predict_logits_in_chunks_equals_one_call():
    rng = np.random.default_rng(2)
    params = {"w": rng.normal(size=(6, 3))}
    x_ND = rng.normal(size=(25, 6))
    model = types.SimpleNamespace(apply=lambda p, x: x @ p["w"])
    want = x_ND @ params["w"]
    for chunk in (1, 7, 10, 25, 1000):
        got = metrics.predict_logits(model, params, x_ND, chunk=chunk)
        assert isinstance(got, np.ndarray) and got.shape == (25, 3)
        close(got, want)
    # The apply function itself works too; binary logits stay rank 1.
    got = metrics.predict_logits(lambda p, x: x @ p["w"][:, 0], params, x_ND, chunk=10)
    close(got, want[:, 0])
    assert metrics.predict_logits(model, params, x_ND[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="chunk"):
        metrics.predict_logits(model, params, x_ND, chunk=0)


def test_most_confident_mistakes_by_hand():
    z_N = np.array([2.0, -1.0, 0.5, -3.0, 0.0, -1.0])
    y_N = np.array([0, 1, 1, 0, 0, 1])
    idx, conf_N, pred_N = metrics.most_confident_mistakes(z_N, y_N, 3)
    np.testing.assert_array_equal(pred_N, [1, 0, 1, 0, 1, 0])  # logit >= 0 -> label 1
    p = 1.0 / (1.0 + np.exp(-z_N))
    close(conf_N, np.abs(p - 0.5) + 0.5)
    # Mistakes 0 (0.881), 1 and 5 (0.731, the same logit: the earlier first), 4 (0.5).
    np.testing.assert_array_equal(idx, [0, 1, 5])
    idx_all, _, _ = metrics.most_confident_mistakes(jnp.asarray(z_N), y_N, 10)
    np.testing.assert_array_equal(idx_all, [0, 1, 5, 4])
    assert metrics.most_confident_mistakes(z_N, y_N, 0)[0].size == 0
    assert metrics.most_confident_mistakes(z_N, 1 - pred_N, 2)[0].size == 2
    assert metrics.most_confident_mistakes(z_N, pred_N, 2)[0].size == 0  # no mistakes


def test_most_confident_mistakes_refuses_bad_input():
    with pytest.raises(ValueError, match="binary"):
        metrics.most_confident_mistakes(np.zeros((3, 2)), [0, 1, 0], 1)
    with pytest.raises(ValueError, match="y_N"):
        metrics.most_confident_mistakes(np.zeros(3), [0, 1], 1)
    with pytest.raises(ValueError, match="k must"):
        metrics.most_confident_mistakes(np.zeros(3), [0, 1, 0], -1)


# ---------------------------------------------------------------------------------------------
# evaluate: loss, accuracy and predictions on any split.


def test_evaluate_by_hand_binary_and_softmax():
    from jaxlr.core.objective import make_model

    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)
    y = np.array([1, 0, 1, 0])
    w = np.array([[2.0], [-1.0]], np.float32)  # w_D1
    model = make_model("logistic", num_features=2, l2_convention="sum", l2_bias=True)
    ev = metrics.evaluate(model, {"w": w}, x, y, l2=0.5)
    z = x.astype(np.float64) @ w[:, 0]  # 2, -1, 1, -4: predictions 1, 0, 1, 0
    np.testing.assert_array_equal(ev.predictions, [1, 0, 1, 0])
    assert (ev.correct, ev.total, ev.accuracy) == (4, 4, 1.0)
    ce = np.mean(np.logaddexp(0.0, z) - y * z)
    assert ev.loss == pytest.approx(ce, rel=1e-6)
    assert ev.objective == pytest.approx(ce + 0.5 * np.sum(w**2), rel=1e-6)  # R = sum w^2
    close(ev.logits, z)
    # Float64: the same numbers, computed in float64 (the accuracy is a count either way).
    ev64 = metrics.evaluate(model, {"w": w}, x, y, float64=True)
    assert ev64.logits.dtype == np.float64 and ev64.correct == 4
    assert ev64.loss == pytest.approx(ce, rel=1e-12)

    w_DK = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    soft = make_model("softmax", num_features=2, num_classes=3)
    ev = metrics.evaluate(soft, {"w": w_DK}, x, np.array([0, 1, 2, 1]))
    # Logits x @ w: [1, 0, 0], [0, 1, 0], [1, 1, 0] (tie: the first), [-1, 2, 0].
    np.testing.assert_array_equal(ev.predictions, [0, 1, 0, 1])
    assert (ev.correct, ev.total) == (3, 4) and ev.accuracy == 0.75
    with pytest.raises(ValueError, match="do not match"):  # the loss's shape check
        metrics.evaluate(soft, {"w": w_DK}, x, np.array([0, 1]))
    with pytest.raises(ValueError, match="one label per input"):  # one-hot: no count
        metrics.evaluate(soft, {"w": w_DK}, x, np.eye(3)[[0, 1, 2, 1]])
