"""Binds one model (init, apply, objective, hand-derived gradient, accuracy) for training.

``make_model`` is static configuration: kind, widths, activation, bias and L2
conventions decide shapes and code. The L2 strength ``l2`` is always an argument
(a traced scalar), never a closure constant, so a sweep can ``vmap`` over it and
compile once.

Dimension legend:
  N  examples in the batch
  D  input features (785 for MNIST with the bias trick, 784 without)
  K  classes
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlr.core import gradients, losses, models

__all__ = ["KINDS", "Model", "make_model"]

KINDS = ("logistic", "softmax", "mlp")


class Model(NamedTuple):
    """One model bound to its conventions; every field is a pure function.

    Attributes:
      kind: "logistic", "softmax" or "mlp".
      num_classes: 2 for logistic regression.
      init: ``key -> params``.
      apply: ``(params, x_ND) -> logits`` (rank 1 for logistic, ``logits_NK`` otherwise).
      loss: ``(params, x_ND, y_N, l2, mask_N=None) -> (objective, cross_entropy)`` where
        ``objective = cross_entropy + l2 * R(w)``; log either.
      grad: ``(params, x_ND, y_N, l2, mask_N=None) -> d objective / d params``, hand-derived,
        the same pytree as ``jax.grad(lambda p: loss(p, ...)[0])``.
      accuracy: ``(logits, y_N, mask_N=None) -> scalar``.
    """

    kind: str
    num_classes: int
    init: Callable
    apply: Callable
    loss: Callable
    grad: Callable
    accuracy: Callable


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, valid))}")


def make_model(
    kind: str,
    *,
    num_features: int,
    num_classes: int | None = None,
    hidden: Sequence[int] = (),
    activation: str = "relu",
    bias: str = "trick",
    init: str | None = None,
    init_std: float = 0.01,
    l2_convention: str = "sum",
    l2_bias: bool = True,
    dtype=jnp.float32,
) -> Model:
    """Builds a ``Model``.

    Args:
      kind: "logistic" (one sigmoid output), "softmax" (K outputs) or "mlp".
      num_features: D, counting the constant-1 feature when ``bias="trick"``.
      num_classes: K; default 10 for "softmax"/"mlp"; "logistic" is always 2 (passing
        anything else raises).
      hidden: hidden widths of the MLP, e.g. ``(3136, 1568)``; must be empty otherwise.
        An MLP always has K softmax outputs.
      activation: hidden nonlinearity of the MLP: "sigmoid", "tanh", "relu", "linear".
      bias: "trick" (constant-1 feature in x, no ``b``) or "explicit".
      init: "zeros", "normal", "glorot" or "he". Default (None): "zeros" for the linear
        models (the course's choice) and "glorot" for the MLP, where zeros would keep
        all hidden units identical (``init_mlp`` warns if asked for it).
      init_std: standard deviation for ``init="normal"``.
      l2_convention: "sum" (R = sum w^2) or "half" (R = 1/2 sum w^2).
      l2_bias: whether the bias is penalised.
      dtype: parameter dtype.

    Returns:
      The bound ``Model``.

    Raises:
      ValueError: for an unknown kind, activation, init, bias or L2 convention (listing
        the valid values), or inconsistent ``num_classes`` / ``hidden``.
    """
    _check("kind", kind, KINDS)
    _check("activation", activation, tuple(models.ACTIVATIONS))
    _check("bias", bias, models.BIAS_CONVENTIONS)
    _check("l2 convention", l2_convention, losses.L2_CONVENTIONS)
    if init is None:
        init = "glorot" if kind == "mlp" else "zeros"
    _check("init", init, models.INITS)
    hidden = tuple(int(h) for h in hidden)
    if kind != "mlp" and hidden:
        raise ValueError(f"hidden={hidden} is only meaningful for kind='mlp'")
    if kind == "logistic":
        if num_classes not in (None, 2):
            raise ValueError(f"logistic regression has 2 classes, got num_classes={num_classes}")
        num_classes = 2
    elif num_classes is None:
        num_classes = 10
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    l2_kw = dict(l2_convention=l2_convention, l2_bias=l2_bias)

    if kind == "mlp":
        sizes = (num_features, *hidden, num_classes)
        init_fn = functools.partial(
            models.init_mlp, sizes=sizes, init=init, std=init_std, bias=bias, dtype=dtype
        )
        apply_fn = functools.partial(models.mlp_apply, activation=activation)
        grad_fn = functools.partial(gradients.mlp_grad, activation=activation, **l2_kw)
    else:
        num_outputs = 1 if kind == "logistic" else num_classes
        init_fn = functools.partial(
            models.init_linear,
            num_features=num_features,
            num_outputs=num_outputs,
            init=init,
            std=init_std,
            bias=bias,
            dtype=dtype,
        )
        if kind == "logistic":
            apply_fn = models.binary_logits
            grad_fn = functools.partial(gradients.logistic_grad, **l2_kw)
        else:
            apply_fn = models.linear_apply
            grad_fn = functools.partial(gradients.softmax_grad, **l2_kw)

    def init_params(key: jax.Array) -> dict:
        return init_fn(key)

    def loss(params, x_ND, y_N, l2, mask_N=None):
        ce = losses.cross_entropy(apply_fn(params, x_ND), y_N, mask_N)
        reg = losses.l2_penalty(params, l2_convention, l2_bias)
        return ce + jnp.asarray(l2).astype(ce.dtype) * reg, ce

    def grad(params, x_ND, y_N, l2, mask_N=None):
        return grad_fn(params, x_ND, y_N, l2, mask_N=mask_N)

    return Model(
        kind=kind,
        num_classes=num_classes,
        init=init_params,
        apply=apply_fn,
        loss=loss,
        grad=grad,
        accuracy=losses.accuracy,
    )
