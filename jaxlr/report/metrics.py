"""Metrics computed on the host from a run's outputs: curves, confusions, weights, mistakes.

Everything here is NumPy on host arrays (the experiments' reports and figures read these
numbers), except `predict_logits`, `evaluate` and `most_confident_mistakes`, which call the
model or `jaxlr.core.losses.confidence` through JAX and return NumPy arrays.

Dimension legend:
  N  examples
  D  features (785 with the bias trick)
  K  classes
  P  pixels of one image (784 for MNIST)
  T  steps (or checks) of a curve
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr.core.losses import confidence, l2_weights

__all__ = [
    "class_mean_images_KP",
    "confusion_matrix",
    "Evaluation",
    "epochs_done",
    "evaluate",
    "late_jitter",
    "most_confident_mistakes",
    "pearson_rows",
    "per_class_accuracy",
    "pixel_weights_KP",
    "predict_logits",
    "running_mean",
    "top_confusions",
    "weight_norm",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _matrix_KK(cm_KK: Any) -> np.ndarray:
    cm_KK = np.asarray(cm_KK)
    if cm_KK.ndim != 2 or cm_KK.shape[0] != cm_KK.shape[1]:
        raise ValueError(f"cm_KK must be a square [K, K] matrix, got shape {cm_KK.shape}")
    return cm_KK


# ---------------------------------------------------------------------------------------------
# Curves.


def running_mean(x_T: Any, window: int) -> np.ndarray:
    """Trailing mean over `window` entries; the first entries average the fewer there are.

    Args:
      x_T: a 1-D curve (e.g. the batch training loss per step).
      window: number of entries averaged, >= 1.

    Returns:
      mean_T (float64): entry t is the mean of x[max(0, t - window + 1) : t + 1].
    """
    window = _positive_int(window, "window")
    x = np.asarray(x_T, np.float64)
    if x.ndim != 1:
        raise ValueError(f"x_T must be 1-D, got shape {x.shape}")
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def epochs_done(steps: Any, steps_per_epoch: int) -> np.ndarray:
    """Epochs completed after the update of each step: step s -> (s + 1) / M.

    Args:
      steps: 0-based global step numbers (any shape).
      steps_per_epoch: M, >= 1.

    Returns:
      float64 array of the shape of `steps`.
    """
    m = _positive_int(steps_per_epoch, "steps_per_epoch")
    return (np.asarray(steps, np.float64) + 1.0) / m


def late_jitter(values: Any, fraction: float = 0.5) -> float:
    """How much a curve still jumps late in training: mean |difference| of consecutive values.

    Over the last `fraction` of `values` (from index int(T * (1 - fraction)); with 0.5 that
    is T // 2, the second half).

    Args:
      values: 1-D curve, e.g. the validation loss at each check.
      fraction: part of the curve at its end that counts, in (0, 1].

    Returns:
      The mean absolute change, NaN when fewer than two values fall in that part.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    late = v[int(len(v) * (1.0 - float(fraction))) :]
    if len(late) < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(late))))


# ---------------------------------------------------------------------------------------------
# Classification results.


def confusion_matrix(y_true_N: Any, y_pred_N: Any, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
      y_true_N: integer labels.
      y_pred_N: integer predictions, same shape.
      num_classes: K.

    Returns:
      cm_KK (int64): row = true class, column = predicted class.
    """
    k = _positive_int(num_classes, "num_classes")
    y_true_N, y_pred_N = np.asarray(y_true_N), np.asarray(y_pred_N)
    if y_true_N.ndim != 1 or y_true_N.shape != y_pred_N.shape:
        raise ValueError(
            f"y_true_N and y_pred_N must be 1-D of one length, got shapes {y_true_N.shape} "
            f"and {y_pred_N.shape}"
        )
    for name, y in (("y_true_N", y_true_N), ("y_pred_N", y_pred_N)):
        if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
            raise ValueError(
                f"{name} must hold integer classes in [0, {k}), got dtype {y.dtype}, "
                f"range [{y.min()}, {y.max()}]"
            )
    cm_KK = np.zeros((k, k), np.int64)
    np.add.at(cm_KK, (y_true_N, y_pred_N), 1)
    return cm_KK


def per_class_accuracy(cm_KK: Any) -> np.ndarray:
    """Share of each true class predicted correctly: diag / max(row sum, 1).

    Args:
      cm_KK: confusion matrix (row = true class).

    Returns:
      acc_K (float64); 0 for a class without examples.
    """
    cm_KK = _matrix_KK(cm_KK)
    return np.diag(cm_KK) / np.maximum(cm_KK.sum(axis=1), 1)


def top_confusions(cm_KK: Any, k: int = 3) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal counts of a confusion matrix, largest first.

    The `k` cells are taken from `np.argsort` of the negated off-diagonal counts, flattened
    row by row; cells with a zero count are then dropped (so fewer than `k` may come back).

    Args:
      cm_KK: confusion matrix (row = true class, column = predicted class).
      k: number of cells looked at, >= 1.

    Returns:
      [(true class, predicted class, count), ...] with count > 0.
    """
    k = _positive_int(k, "k")
    cm_KK = _matrix_KK(cm_KK)
    off_KK = cm_KK - np.diag(np.diag(cm_KK))
    worst = np.dstack(np.unravel_index(np.argsort(-off_KK, axis=None)[:k], off_KK.shape))[0]
    return [(int(t), int(p), int(off_KK[t, p])) for t, p in worst if off_KK[t, p] > 0]


# ---------------------------------------------------------------------------------------------
# Weights and images.


def weight_norm(params: dict, include_bias: bool = True) -> float:
    """||w||_2 over the arrays the L2 penalty covers (`jaxlr.core.losses.l2_weights`).

    Args:
      params: linear-model or MLP params.
      include_bias: whether the bias counts (explicit "b", or the bias-trick row).

    Returns:
      sqrt of the sum of squares as a Python float (each array's sum of squares is taken
      in its own dtype, the sums are added as Python floats).
    """
    return float(
        np.sqrt(sum(float(np.sum(np.square(a))) for a in l2_weights(params, include_bias)))
    )


def pixel_weights_KP(params: dict, bias_feature: bool = True) -> np.ndarray:
    """The weights of each class as a flattened image (the bias row dropped).

    Args:
      params: linear-model params `{"w": w_DK}` (`w_D` or `w_D1` for logistic regression),
        optionally with an explicit `"b"`.
      bias_feature: whether the last input feature is the constant 1 (its row is dropped
        unless the params have an explicit bias).

    Returns:
      weights_KP (K = 1 for logistic regression).
    """
    if "w" not in params:
        raise ValueError(f"params must be a linear model's {{'w': ...}}, got keys {list(params)}")
    w = np.asarray(params["w"])
    w_DK = w.reshape(w.shape[0], -1)
    return (w_DK[:-1] if bias_feature and "b" not in params else w_DK).T


def class_mean_images_KP(x_ND: Any, y_N: Any, num_classes: int, num_pixels: int) -> np.ndarray:
    """The average input image of every class (NaN for a class with no example).

    Args:
      x_ND: preprocessed inputs; the first `num_pixels` features are the pixels.
      y_N: integer labels.
      num_classes: K.
      num_pixels: P.

    Returns:
      means_KP (float64).
    """
    k = _positive_int(num_classes, "num_classes")
    p = _positive_int(num_pixels, "num_pixels")
    x = np.asarray(x_ND, np.float64)
    y_N = np.asarray(y_N)
    if x.ndim != 2 or x.shape[1] < p or y_N.shape != (x.shape[0],):
        raise ValueError(
            f"x_ND must be [N, D] with D >= num_pixels = {p} and y_N [N], got shapes "
            f"{x.shape} and {y_N.shape}"
        )
    x_NP = x[:, :p]
    means_KP = np.full((k, p), np.nan)
    for c in range(k):
        if np.any(y_N == c):
            means_KP[c] = x_NP[y_N == c].mean(axis=0)
    return means_KP


def pearson_rows(a_KP: Any, b_KP: Any) -> np.ndarray:
    """Pearson correlation of each row of `a_KP` with the same row of `b_KP`.

    Args:
      a_KP, b_KP: two [K, P] arrays (e.g. mean images and weight images).

    Returns:
      corr_K; NaN for a constant row (or a row with NaN).
    """
    a_KP, b_KP = np.asarray(a_KP), np.asarray(b_KP)
    if a_KP.ndim != 2 or a_KP.shape != b_KP.shape:
        raise ValueError(
            f"a_KP and b_KP must be [K, P] of one shape, got {a_KP.shape} and {b_KP.shape}"
        )
    a = a_KP - a_KP.mean(axis=1, keepdims=True)
    b = b_KP - b_KP.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a * b, axis=1) / denom


# ---------------------------------------------------------------------------------------------
# Predictions.


def predict_logits(model: Any, params: Any, x_ND: Any, chunk: int = 10000) -> np.ndarray:
    """The model's logits for `x_ND` on the host, computed `chunk` examples at a time.

    Chunks keep wide networks within memory (a 3136-unit layer on 60,000 images is 750 MB
    of float32 activations). `model.apply` is jitted; every full chunk has one shape, so at
    most two compilations (full chunk and the remainder).

    Args:
      model: a `jaxlr.core.objective.Model` (anything with `.apply(params, x) -> logits`), or the
        apply function itself.
      params: the model's params.
      x_ND: inputs.
      chunk: examples per call, >= 1.

    Returns:
      logits_N (binary) or logits_NK, as NumPy arrays.
    """
    chunk = _positive_int(chunk, "chunk")
    apply = jax.jit(model.apply if hasattr(model, "apply") else model)
    if len(x_ND) == 0:
        return np.asarray(apply(params, x_ND))
    parts = [np.asarray(apply(params, x_ND[i : i + chunk])) for i in range(0, len(x_ND), chunk)]
    return np.concatenate(parts)


class Evaluation(NamedTuple):
    """A model's numbers on one split (`evaluate`)."""

    logits: np.ndarray  # logits_N (binary) or logits_NK
    predictions: np.ndarray  # pred_N: class indices (binary: 1 when the logit is >= 0)
    loss: float  # mean cross-entropy
    objective: float  # loss + the L2 penalty of `l2` (the training objective's form)
    accuracy: float  # correct / total, in float64
    correct: int
    total: int


def evaluate(
    model: Any, params: Any, x_ND: Any, y_N: Any, l2: float = 0.0, *, float64: bool = False
) -> Evaluation:
    """Loss, accuracy and predictions of `params` on any split (training, validation, test).

    The logits come from `predict_logits` (jitted, in chunks); the loss and objective from
    `model.loss` on the whole split; the accuracy is the count of correct predictions over
    the split's size (float64, whatever the model's dtype).

    Args:
      model: a `jaxlr.core.objective.Model` (`apply`, `loss`).
      params: its params.
      x_ND: inputs of the split.
      y_N: integer labels (binary: 0/1).
      l2: the L2 strength of the objective (the loss does not depend on it).
      float64: evaluate in float64 (params and inputs cast, JAX's 64-bit mode on for the
        call), e.g. for the exact optimum of `jaxlr.core.solver`.

    Returns:
      `Evaluation`.
    """
    y_N = np.asarray(y_N)
    x = np.asarray(x_ND, np.float64) if float64 else x_ND
    with jax.enable_x64(True) if float64 else contextlib.nullcontext():
        if float64:
            params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        logits = predict_logits(model, params, x)
        objective, ce = model.loss(params, jnp.asarray(x), jnp.asarray(y_N), l2)
        objective, ce = float(objective), float(ce)
    pred_N = (logits >= 0).astype(np.int32) if logits.ndim == 1 else np.argmax(logits, axis=1)
    if pred_N.shape != y_N.shape:
        raise ValueError(
            f"y_N must have shape {pred_N.shape} (one label per input), got {y_N.shape}"
        )
    correct = int(np.sum(pred_N == y_N))
    total = int(y_N.shape[0])
    return Evaluation(logits, pred_N, ce, objective, correct / max(total, 1), correct, total)


def most_confident_mistakes(
    logits_N: Any, y_N: Any, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `k` misclassified examples a binary model was most sure of.

    Prediction: label 1 when the logit is >= 0 (p >= 0.5). Confidence: |p - 0.5| + 0.5
    (`jaxlr.core.losses.confidence`, computed in the logits' dtype). Mistakes are sorted by
    decreasing confidence with a stable sort, so among equal confidences the earlier example
    comes first.

    Args:
      logits_N: rank-1 logits of a binary model.
      y_N: labels in {0, 1}.
      k: how many to return at most, >= 0.

    Returns:
      (indices, confidence_N, pred_N): the indices into the N examples of at most `k`
      mistakes, most confident first (int64); every example's confidence (float64) and
      prediction (int32).
    """
    z_N = jnp.asarray(logits_N)
    y_N = np.asarray(y_N)
    if z_N.ndim != 1:
        raise ValueError(
            f"logits_N must be the rank-1 logits of a binary model, got shape {z_N.shape}"
        )
    if y_N.shape != z_N.shape:
        raise ValueError(f"y_N must have the shape of logits_N {z_N.shape}, got {y_N.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    conf_N = np.asarray(confidence(z_N), np.float64)
    pred_N = (np.asarray(z_N) >= 0).astype(np.int32)
    wrong = np.flatnonzero(pred_N != y_N)
    top = wrong[np.argsort(-conf_N[wrong], kind="stable")][: int(k)]
    return top, conf_N, pred_N
