"""Hand-derived gradients of the objective ``J = mean cross-entropy + lambda * R(w)``.

Each function returns the same pytree (structure, shapes and dtypes) that
``jax.grad`` of the matching objective returns, so the training engine can use
either. Derivations: ``docs/derivations.md``.

Dimension legend:
  N  examples in the batch
  D  input features (including the constant-1 feature with the bias trick)
  K  outputs (1 for logistic regression)
  I, O  input and output width of one layer of the MLP

Weights are stored ``[in, out]`` (``z_NO = a_NI @ w_IO``), so the course's
``dC/dW^l = delta^l (a^{l-1})^T`` for one example becomes ``a_NI^T @ delta_NO`` for a
batch, with the 1/N of the mean (or the mask weights) folded into ``delta``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlr.core.losses import L2_CONVENTIONS, one_hot
from jaxlr.core.models import binary_logits, get_activation, linear_apply

__all__ = [
    "l2_penalty_grad",
    "logistic_grad",
    "mlp_grad",
    "softmax_grad",
]


def _example_weights(mask_N, n: int, dtype) -> jax.Array:
    """Weights c_n of the batch mean: 1/N, or m_n / sum(m) with a mask."""
    if mask_N is None:
        return jnp.full((n,), 1.0 / n, dtype)
    m_N = jnp.asarray(mask_N).astype(dtype)
    total = jnp.sum(m_N)
    return m_N / jnp.where(total > 0, total, 1)


def _targets_NK(y, num_classes: int, dtype) -> jax.Array:
    """Integer labels -> one-hot; one-hot / probability targets pass through."""
    y = jnp.asarray(y)
    if y.ndim == 1:
        return one_hot(y, num_classes, dtype)
    return y.astype(dtype)


def l2_penalty_grad(params: dict, convention: str = "sum", include_bias: bool = True) -> dict:
    """dR/dparams of ``losses.l2_penalty`` (multiply by lambda outside).

    ``R = sum w^2`` gives ``2 w``; ``R = 1/2 sum w^2`` gives ``w``; leaves (or the
    bias-trick row) that ``include_bias=False`` leaves out get 0.

    Args:
      params: linear-model or MLP params.
      convention: "sum" or "half".
      include_bias: whether the bias is penalised.

    Returns:
      Params-shaped dict.
    """
    if convention not in L2_CONVENTIONS:
        raise ValueError(
            f"unknown l2 convention {convention!r}; valid values: "
            + ", ".join(map(repr, L2_CONVENTIONS))
        )
    coef = 2.0 if convention == "sum" else 1.0
    is_mlp = "layers" in params
    layers = list(params["layers"]) if is_mlp else [params]
    bias_trick = not any("b" in layer for layer in layers)
    out = []
    for i, layer in enumerate(layers):
        g = {"w": coef * jnp.asarray(layer["w"])}
        if i == 0 and bias_trick and not include_bias:
            # The last input feature is the constant 1: that row is the bias.
            g["w"] = g["w"].at[-1].set(0)
        if "b" in layer:
            b = jnp.asarray(layer["b"])
            g["b"] = coef * b if include_bias else jnp.zeros_like(b)
        out.append(g)
    return {"layers": out} if is_mlp else out[0]


def _finish(params, data_grad, l2, l2_convention, l2_bias) -> dict:
    """Adds lambda * dR/dw and casts every leaf to its parameter's dtype."""
    reg = l2_penalty_grad(params, l2_convention, l2_bias)

    def combine(p, g, r):
        lam = jnp.asarray(l2).astype(p.dtype)
        return (g.astype(p.dtype) + lam * r.astype(p.dtype)).astype(p.dtype)

    return jax.tree.map(combine, params, data_grad, reg)


def _outer_sum(a_NI, delta_NO) -> jax.Array:
    """``a^T delta`` (sum over examples of outer products), as one dot_general.

    Written as an einsum rather than ``a_NI.T @ delta_NO``: with the explicit transpose
    XLA on CPU emits a transpose copy plus a loop fusion for the matrix-vector case,
    twice as slow as the contraction over N that jax.grad produces.
    """
    return jnp.einsum("ni,no->io", a_NI, delta_NO)


def _linear_data_grad(params, x_ND, delta_NK) -> dict:
    """dC/dw = X^T delta and dC/db = sum_n delta for a linear layer."""
    grad = {"w": _outer_sum(x_ND, delta_NK)}
    if "b" in params:
        grad["b"] = jnp.sum(delta_NK, axis=0)
    return grad


def logistic_grad(
    params: dict,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2,
    *,
    l2_convention: str = "sum",
    l2_bias: bool = True,
    mask_N: jax.Array | None = None,
) -> dict:
    """Gradient of mean binary cross-entropy + lambda R(w) for logistic regression.

    ``dJ/dw = -X^T (y - y_hat) / N + lambda dR/dw`` with ``y_hat = sigmoid(X w)``.

    Args:
      params: ``{"w": w_D1}`` (bias trick) or ``{"w": w_D1, "b": b_1}``.
      x_ND: inputs.
      y_N: targets in {0, 1} (or probabilities).
      l2: lambda, a scalar (array or float).
      l2_convention: "sum" (R = sum w^2) or "half" (R = 1/2 sum w^2).
      l2_bias: whether the bias is penalised.
      mask_N: optional 0/1 example weights (masked mean).

    Returns:
      Params-shaped dict of gradients.
    """
    dtype = params["w"].dtype
    x_ND = jnp.asarray(x_ND).astype(dtype)
    z_N = binary_logits(params, x_ND)
    y_hat_N = jax.nn.sigmoid(z_N)
    c_N = _example_weights(mask_N, x_ND.shape[0], dtype)
    delta_N = (y_hat_N - jnp.asarray(y_N).astype(dtype)) * c_N
    # delta^T X, the delta first: under a sweep's vmap the product comes out points-first,
    # [G, D], the layout of the weights it updates (as `binary_logits`).
    grad = {"w": jax.lax.dot_general(delta_N, x_ND, (((0,), (0,)), ((), ())))[:, None]}
    if "b" in params:
        grad["b"] = jnp.sum(delta_N, keepdims=True)
    return _finish(params, grad, l2, l2_convention, l2_bias)


def softmax_grad(
    params: dict,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2,
    *,
    l2_convention: str = "sum",
    l2_bias: bool = True,
    mask_N: jax.Array | None = None,
) -> dict:
    """Gradient of mean softmax cross-entropy + lambda R(w) for softmax regression.

    ``dJ/dW = -X^T (Y - Y_hat) / N + lambda dR/dW`` with ``Y_hat = softmax(X W)`` row-wise
    and ``Y`` the one-hot targets.

    Args:
      params: ``{"w": w_DK}`` (bias trick) or ``{"w": w_DK, "b": b_K}``.
      x_ND: inputs.
      y_N: integer labels (or one-hot / probability targets y_NK).
      l2: lambda, a scalar (array or float).
      l2_convention: "sum" or "half".
      l2_bias: whether the bias is penalised.
      mask_N: optional 0/1 example weights.

    Returns:
      Params-shaped dict of gradients.
    """
    dtype = params["w"].dtype
    x_ND = jnp.asarray(x_ND).astype(dtype)
    z_NK = linear_apply(params, x_ND)
    y_hat_NK = jax.nn.softmax(z_NK, axis=-1)
    c_N = _example_weights(mask_N, x_ND.shape[0], dtype)
    delta_NK = (y_hat_NK - _targets_NK(y_N, z_NK.shape[-1], dtype)) * c_N[:, None]
    return _finish(params, _linear_data_grad(params, x_ND, delta_NK), l2, l2_convention, l2_bias)


def mlp_grad(
    params: dict,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2,
    *,
    activation: str = "relu",
    l2_convention: str = "sum",
    l2_bias: bool = True,
    mask_N: jax.Array | None = None,
) -> dict:
    """Gradient of mean cross-entropy + lambda R(w) for an MLP, by backpropagation.

    The four equations, for a batch (rows are examples, ``W`` stored [in, out]):
      1. ``delta^L = a^L - y`` (softmax + cross-entropy; sigmoid + binary cross-entropy
         when the output width is 1), the general ``Sigma'(z^L) grad_a C``;
      2. ``delta^l = Sigma'(z^l) (W^{l+1})^T delta^{l+1}``, i.e.
         ``(delta_NO @ w_IO.T) * sigma'(z_NI)``; for ``activation="linear"``
         ``Sigma' = I`` and the product is just the matmul;
      3. ``dC/db^l = delta^l`` (summed over the batch);
      4. ``dC/dW^l = delta^l (a^{l-1})^T`` (``a_NI.T @ delta_NO``).
    Plain matmuls over the whole batch; no per-example loop.

    Args:
      params: from ``models.init_mlp`` (either bias convention).
      x_ND: inputs.
      y_N: integer labels (0/1 when the output width is 1), or one-hot targets y_NK.
      l2: lambda, a scalar (array or float).
      activation: hidden-layer nonlinearity ("sigmoid", "tanh", "relu", "linear").
      l2_convention: "sum" or "half".
      l2_bias: whether the bias is penalised.
      mask_N: optional 0/1 example weights.

    Returns:
      Params-shaped dict ``{"layers": [...]}`` of gradients.
    """
    act = get_activation(activation)
    layers = params["layers"]
    num_layers = len(layers)
    dtype = layers[0]["w"].dtype
    x_ND = jnp.asarray(x_ND).astype(dtype)

    # Forward pass, keeping a^{l-1} (input of each layer) and z^l of hidden layers.
    inputs = [x_ND]
    hidden_z = []
    a_NI = x_ND
    for i, layer in enumerate(layers):
        z_NO = a_NI @ layer["w"]
        if "b" in layer:
            z_NO = z_NO + layer["b"]
        if i < num_layers - 1:
            hidden_z.append(z_NO)
            a_NI = act.fn(z_NO)
            inputs.append(a_NI)
    logits_NK = z_NO

    # Equation 1: delta^L = a^L - y, scaled by the weights of the batch mean.
    c_N = _example_weights(mask_N, x_ND.shape[0], dtype)
    if logits_NK.shape[-1] == 1:
        y_N1 = jnp.asarray(y_N).astype(dtype).reshape(-1, 1)
        delta_NO = (jax.nn.sigmoid(logits_NK) - y_N1) * c_N[:, None]
    else:
        y_NK = _targets_NK(y_N, logits_NK.shape[-1], dtype)
        delta_NO = (jax.nn.softmax(logits_NK, axis=-1) - y_NK) * c_N[:, None]

    grads = [None] * num_layers
    for i in reversed(range(num_layers)):
        layer = layers[i]
        # Equations 3 and 4.
        g = {"w": _outer_sum(inputs[i], delta_NO)}
        if "b" in layer:
            g["b"] = jnp.sum(delta_NO, axis=0)
        grads[i] = g
        if i > 0:
            # Equation 2 (the input gradient delta^0 is never needed, so not computed).
            back_NI = jnp.einsum("no,io->ni", delta_NO, layer["w"])  # delta W^T
            delta_NO = back_NI * act.deriv(hidden_z[i - 1], inputs[i])
    return _finish(params, {"layers": grads}, l2, l2_convention, l2_bias)
