"""Numerically stable cross-entropies, the L2 penalty and classification metrics.

Every loss is computed from logits (never from probabilities, whose logarithm
overflows to -inf once a sigmoid saturates) and is a mean over the batch. An optional
``mask_N`` of 0/1 weights turns the mean into ``sum(m * l) / sum(m)`` (0 when the mask
is all zeros), so a padded last batch can share the shape of the others.

Dimension legend:
  N  examples in the batch
  K  classes

Binary models give rank-1 ``logits_N`` and integer labels ``y_N`` in {0, 1}
(1 = positive class); multi-class models give ``logits_NK`` and integer labels
``y_N`` (or one-hot / probability targets ``y_NK``). Shapes are checked when the function
is traced (no cost at run time): targets or a mask that do not match the logits raise a
``ValueError`` naming both shapes, instead of broadcasting to a wrong number (course-shaped
``[N, 1]`` targets with ``[N]`` logits would broadcast to ``[N, N]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "L2_CONVENTIONS",
    "accuracy",
    "binary_cross_entropy",
    "confidence",
    "cross_entropy",
    "l2_penalty",
    "l2_weights",
    "masked_mean",
    "one_hot",
    "predict_proba",
    "softmax_cross_entropy",
]

L2_CONVENTIONS = ("sum", "half")


def masked_mean(values_N: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Mean over the batch, or the mask-weighted mean ``sum(m * v) / sum(m)``.

    Args:
      values_N: per-example values.
      mask_N: optional 0/1 weights; an all-zero mask gives 0 rather than 0/0.

    Returns:
      Scalar.
    """
    if mask_N is None:
        return jnp.mean(values_N)
    if jnp.shape(mask_N) != jnp.shape(values_N):
        raise ValueError(
            f"masked_mean: mask of shape {jnp.shape(mask_N)} does not match values of shape "
            f"{jnp.shape(values_N)}; the mask needs one 0/1 weight per example"
        )
    m_N = jnp.asarray(mask_N).astype(values_N.dtype)
    total = jnp.sum(m_N)
    return jnp.sum(m_N * values_N) / jnp.where(total > 0, total, 1)


def _mismatch(fn: str, logits_shape, y_shape, allowed: str) -> ValueError:
    return ValueError(
        f"{fn}: logits of shape {tuple(logits_shape)} and targets of shape {tuple(y_shape)} "
        f"do not match; {allowed}"
    )


def _check_binary(fn: str, z_N, y_N) -> None:
    if z_N.ndim != 1 or y_N.shape != z_N.shape:
        raise _mismatch(
            fn,
            z_N.shape,
            y_N.shape,
            "binary logits must be [N] and the targets [N] too (flatten [N, 1] targets "
            "with y.reshape(-1))",
        )


def _check_multiclass(fn: str, z_NK, y) -> None:
    if z_NK.ndim != 2 or not (y.shape == z_NK.shape[:1] or y.shape == z_NK.shape):
        raise _mismatch(
            fn,
            z_NK.shape,
            y.shape,
            "multi-class logits must be [N, K] with integer labels [N] or one-hot / "
            "probability targets [N, K]",
        )


def one_hot(y_N: jax.Array, num_classes: int, dtype=jnp.float32) -> jax.Array:
    """One-hot encoding of integer labels: label 3 of 10 -> [0, 0, 0, 1, 0, ..., 0].

    Args:
      y_N: integer labels in [0, num_classes).
      num_classes: K.
      dtype: dtype of the result.

    Returns:
      y_NK with a single 1 per row.
    """
    return jax.nn.one_hot(y_N, num_classes, dtype=dtype)


def binary_cross_entropy(
    logits_N: jax.Array, y_N: jax.Array, mask_N: jax.Array | None = None
) -> jax.Array:
    """Mean binary cross-entropy of a sigmoid output, computed from logits.

    ``-[y ln sigma(z) + (1 - y) ln(1 - sigma(z))] = softplus(z) - y z`` with
    ``softplus(z) = ln(1 + e^z)`` evaluated as a log-sum-exp, so the value and the
    gradient ``sigma(z) - y`` stay finite for any finite logit (e.g. +-1e4 in float32).

    Args:
      logits_N: z, rank 1.
      y_N: targets in [0, 1] (labels 0/1 or probabilities), of the logits' shape.
      mask_N: optional 0/1 example weights.

    Returns:
      Scalar mean loss.

    Raises:
      ValueError: logits not rank 1, or targets (or mask) of another shape.
    """
    z_N = jnp.asarray(logits_N)
    _check_binary("binary_cross_entropy", z_N, jnp.asarray(y_N))
    y_N = jnp.asarray(y_N).astype(z_N.dtype)
    loss_N = jnp.logaddexp(jnp.zeros((), z_N.dtype), z_N) - y_N * z_N
    return masked_mean(loss_N, mask_N)


def softmax_cross_entropy(
    logits_NK: jax.Array, y: jax.Array, mask_N: jax.Array | None = None
) -> jax.Array:
    """Mean multi-class cross-entropy of a softmax output, computed from logits.

    ``-sum_k y_k ln softmax(z)_k = logsumexp(z) - sum_k y_k z_k`` (using
    ``sum_k y_k = 1``), stable for any finite logits.

    Args:
      logits_NK: z.
      y: integer labels ``y_N`` or one-hot / probability targets ``y_NK``.
      mask_N: optional 0/1 example weights.

    Returns:
      Scalar mean loss.

    Raises:
      ValueError: logits not rank 2, or targets that are neither [N] nor [N, K] (or a
        mask that is not [N]).
    """
    z_NK = jnp.asarray(logits_NK)
    y = jnp.asarray(y)
    _check_multiclass("softmax_cross_entropy", z_NK, y)
    if y.ndim == 1:
        y_NK = one_hot(y, z_NK.shape[-1], z_NK.dtype)
    else:
        y_NK = y.astype(z_NK.dtype)
    loss_N = jax.nn.logsumexp(z_NK, axis=-1) - jnp.sum(y_NK * z_NK, axis=-1)
    return masked_mean(loss_N, mask_N)


def cross_entropy(logits, y, mask_N: jax.Array | None = None) -> jax.Array:
    """Binary cross-entropy for rank-1 logits, softmax cross-entropy for rank 2.

    Raises:
      ValueError: logits of another rank, or targets that do not match them.
    """
    if jnp.ndim(logits) == 1:
        return binary_cross_entropy(logits, y, mask_N)
    if jnp.ndim(logits) == 2:
        return softmax_cross_entropy(logits, y, mask_N)
    raise ValueError(
        f"cross_entropy: logits of shape {jnp.shape(logits)}; expected [N] (binary) or "
        "[N, K] (multi-class)"
    )


def _check_convention(convention: str) -> None:
    if convention not in L2_CONVENTIONS:
        raise ValueError(
            f"unknown l2 convention {convention!r}; valid values: "
            + ", ".join(map(repr, L2_CONVENTIONS))
        )


def _layers(params: dict) -> list[dict]:
    """The per-layer dicts of a linear model (one layer) or an MLP."""
    return list(params["layers"]) if "layers" in params else [params]


def l2_weights(params: dict, include_bias: bool = True) -> list[jax.Array]:
    """The arrays the L2 penalty covers.

    With ``include_bias=False`` the bias is left out: explicit ``"b"`` leaves, and with
    the bias trick (no ``"b"`` anywhere) the last row of the first layer's ``"w"``,
    which multiplies the constant-1 feature.

    Args:
      params: linear-model or MLP params.
      include_bias: whether the bias counts.

    Returns:
      List of arrays.
    """
    layers = _layers(params)
    bias_trick = not any("b" in layer for layer in layers)
    arrays = []
    for i, layer in enumerate(layers):
        w = layer["w"]
        if i == 0 and bias_trick and not include_bias:
            w = w[:-1]
        arrays.append(w)
        if include_bias and "b" in layer:
            arrays.append(layer["b"])
    return arrays


def l2_penalty(params: dict, convention: str = "sum", include_bias: bool = True) -> jax.Array:
    """The L2 regularizer R(w) (multiply by lambda outside).

    Args:
      params: linear-model or MLP params.
      convention: "sum" -> ``R = sum w^2`` (gradient ``2 lambda w``, the 2021/2024
        course text); "half" -> ``R = 1/2 sum w^2`` (gradient ``lambda w``, 2022).
      include_bias: whether the bias is penalised (see ``l2_weights``).

    Returns:
      Scalar R(w).
    """
    _check_convention(convention)
    total = sum(jnp.sum(jnp.square(w)) for w in l2_weights(params, include_bias))
    return 0.5 * total if convention == "half" else total


def predict_proba(logits: jax.Array) -> jax.Array:
    """Probabilities: sigmoid of rank-1 logits (P(y=1)), softmax over K otherwise."""
    logits = jnp.asarray(logits)
    if logits.ndim == 1:
        return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)


def _predict(logits: jax.Array) -> jax.Array:
    if logits.ndim == 1:
        # p >= 0.5 <=> z >= 0: a tie (p exactly 0.5) counts as the positive class.
        return (logits >= 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1)


def accuracy(logits: jax.Array, y: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Fraction of correct predictions.

    Binary (rank-1 logits): predict 1 when ``sigmoid(z) >= 0.5`` (i.e. ``z >= 0``).
    Multi-class: predict ``argmax_k z_k`` (the first one on a tie).

    Args:
      logits: logits_N or logits_NK.
      y: integer labels y_N (binary: 0/1), or one-hot y_NK for multi-class.
      mask_N: optional 0/1 example weights.

    Returns:
      Scalar in [0, 1], in the logits' floating dtype.

    Raises:
      ValueError: logits of rank other than 1 or 2, or labels that do not match them
        (binary: [N]; multi-class: [N] or one-hot [N, K]).
    """
    logits = jnp.asarray(logits)
    y = jnp.asarray(y)
    if logits.ndim == 1:
        _check_binary("accuracy", logits, y)
    else:
        _check_multiclass("accuracy", logits, y)
    if logits.ndim == 2 and y.ndim == 2:
        y = jnp.argmax(y, axis=-1)
    dtype = logits.dtype if jnp.issubdtype(logits.dtype, jnp.floating) else jnp.float32
    correct_N = (_predict(logits) == y.astype(jnp.int32)).astype(dtype)
    return masked_mean(correct_N, mask_N)


def confidence(logits: jax.Array) -> jax.Array:
    """Confidence of each prediction, in [0.5, 1] for binary and [1/K, 1] otherwise.

    Binary: ``|p - 0.5| + 0.5`` with ``p = sigmoid(z)`` (equal to ``max(p, 1 - p)``);
    multi-class: the largest softmax probability. Sorting misclassified examples by it
    finds the most confidently wrong ones.

    Args:
      logits: logits_N or logits_NK.

    Returns:
      conf_N.
    """
    p = predict_proba(logits)
    if p.ndim == 1:
        return jnp.abs(p - 0.5) + 0.5
    return jnp.max(p, axis=-1)
