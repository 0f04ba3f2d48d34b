"""Pure models: logistic / softmax regression and a multi-layer perceptron.

Parameters are plain dicts of arrays; every model is an ``init_*`` function that
builds them and an ``*_apply`` function that maps a batch of inputs to logits.

Dimension legend:
  N  examples in the batch
  D  input features (785 for MNIST with the bias trick, 784 without)
  K  outputs (1 for logistic regression, the number of classes otherwise)
  I, O  input and output width of one layer of the MLP

Parameter layouts:
  linear model, bias trick:  ``{"w": w_DK}``; the last input feature is the
      constant 1, so the last row of ``w_DK`` is the bias.
  linear model, explicit:    ``{"w": w_DK, "b": b_K}``.
  MLP, explicit biases:      ``{"layers": [{"w": w_IO, "b": b_O}, ...]}``, one dict per
      layer, input layer first; ``sizes = (D, H1, ..., K)``.
  MLP, bias trick:           ``{"layers": [{"w": w_IO}, ...]}``; the input carries the
      constant-1 feature (so ``sizes[0]`` counts it) and no layer has a ``"b"``: the
      first layer's last row is the only bias. This is the course's convention for the
      network of Assignment 2.

Weights are stored ``[in, out]`` so that a layer is ``x_NI @ w_IO``; the course's
``W^l`` (out x in) is the transpose.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS",
    "BIAS_CONVENTIONS",
    "INITS",
    "Activation",
    "get_activation",
    "init_linear",
    "init_mlp",
    "binary_logits",
    "linear_apply",
    "mlp_apply",
]


class Activation(NamedTuple):
    """A hidden-layer nonlinearity and its derivative.

    ``deriv(z, a)`` returns sigma'(z) elementwise, given both the pre-activation ``z``
    and the activation ``a = fn(z)`` so that sigmoid and tanh can reuse ``a``.
    """

    fn: Callable[[jax.Array], jax.Array]
    deriv: Callable[[jax.Array, jax.Array], jax.Array]


def _sigmoid_deriv(z, a):
    del z
    return a * (1 - a)


def _tanh_deriv(z, a):
    del z
    return 1 - a * a


def _relu_deriv(z, a):
    del a
    # The subgradient at exactly 0 is taken as 0, which is also what jax.grad of
    # jax.nn.relu returns, so analytic and autodiff gradients agree everywhere.
    return (z > 0).astype(z.dtype)


def _linear_deriv(z, a):
    del a
    return jnp.ones_like(z)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(jax.nn.sigmoid, _sigmoid_deriv),
    "tanh": Activation(jnp.tanh, _tanh_deriv),
    "relu": Activation(jax.nn.relu, _relu_deriv),
    "linear": Activation(lambda z: z, _linear_deriv),
}

INITS = ("zeros", "normal", "glorot", "he")
BIAS_CONVENTIONS = ("trick", "explicit")


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values: {', '.join(map(repr, valid))}")


def get_activation(name: str) -> Activation:
    """Looks up an activation by name.

    Args:
      name: one of ``ACTIVATIONS`` ("sigmoid", "tanh", "relu", "linear").

    Returns:
      The ``Activation`` (function and derivative).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    _check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]


def _init_weight(key, fan_in: int, fan_out: int, init: str, std: float, dtype) -> jax.Array:
    """Draws one ``[fan_in, fan_out]`` weight matrix."""
    shape = (fan_in, fan_out)
    if init == "zeros":
        return jnp.zeros(shape, dtype)
    if init == "normal":
        scale = std
    elif init == "glorot":
        # Glorot/Xavier normal: Var = 2 / (fan_in + fan_out).
        scale = math.sqrt(2.0 / (fan_in + fan_out))
    else:  # "he"
        # He/Kaiming normal for ReLU: Var = 2 / fan_in.
        scale = math.sqrt(2.0 / fan_in)
    return scale * jax.random.normal(key, shape, dtype)


def init_linear(
    key: jax.Array,
    num_features: int,
    num_outputs: int,
    *,
    init: str = "zeros",
    std: float = 0.01,
    bias: str = "trick",
    dtype=jnp.float32,
) -> dict:
    """Initialises a linear model (logistic regression with K=1, softmax regression).

    Args:
      key: PRNG key (unused for ``init="zeros"``).
      num_features: D; with ``bias="trick"`` it already counts the constant-1 feature
        (785 for MNIST).
      num_outputs: K; 1 for logistic regression.
      init: "zeros" (the course default), "normal" (N(0, std^2)), "glorot" or "he".
      std: standard deviation for ``init="normal"``.
      bias: "trick" (no separate bias) or "explicit" (a zero-initialised ``b_K``).
      dtype: parameter dtype.

    Returns:
      ``{"w": w_DK}`` or ``{"w": w_DK, "b": b_K}``.
    """
    _check_choice("init", init, INITS)
    _check_choice("bias", bias, BIAS_CONVENTIONS)
    params = {"w": _init_weight(key, num_features, num_outputs, init, std, dtype)}
    if bias == "explicit":
        params["b"] = jnp.zeros((num_outputs,), dtype)
    return params


def linear_apply(params: dict, x_ND: jax.Array) -> jax.Array:
    """Logits of a linear model.

    Args:
      params: from ``init_linear``.
      x_ND: inputs (with the constant-1 column when the bias trick is used).

    Returns:
      logits_NK.
    """
    logits_NK = x_ND @ params["w"]
    if "b" in params:
        logits_NK = logits_NK + params["b"]
    return logits_NK


def binary_logits(params: dict, x_ND: jax.Array) -> jax.Array:
    """Logits z_N of a linear model with one output (logistic regression).

    The same numbers as ``linear_apply(params, x_ND)[:, 0]``, written with the weights as
    the first operand (w^T x^T): under a sweep's vmap the product's result is then laid out
    points-first, [G, N], the layout every later step (loss, accuracy, gradient) reads, so
    XLA on CPU needs no transposed read of it (measured: an epoch of the 256-point
    tdt4265_task2 grid 0.109 -> 0.082 s; WORKSPACE.md).

    Args:
      params: from ``init_linear`` with one output (``w`` [D, 1], optional ``b`` [1]).
      x_ND: inputs.

    Returns:
      logits_N.
    """
    z_N = jax.lax.dot_general(params["w"][:, 0], x_ND, (((0,), (1,)), ((), ())))
    if "b" in params:
        z_N = z_N + params["b"][0]
    return z_N


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    init: str = "glorot",
    std: float = 0.01,
    bias: str = "explicit",
    dtype=jnp.float32,
) -> dict:
    """Initialises a multi-layer perceptron.

    Args:
      key: PRNG key, split once per layer.
      sizes: widths ``(D, H1, ..., K)``; e.g. ``(784, 3136, 1568, 10)``. With
        ``bias="trick"``, ``D`` counts the constant-1 input feature.
      init: "glorot" (default), "he", "normal" (N(0, std^2)) or "zeros". Zeros keeps all
        hidden units of a layer identical forever (the symmetry is never broken) and
        gives the hidden weights zero gradient, so it warns.
      std: standard deviation for ``init="normal"``.
      bias: "explicit" (zero-initialised ``b`` in every layer) or "trick" (no ``b``).
      dtype: parameter dtype.

    Returns:
      ``{"layers": [{"w": w_IO, "b": b_O}, ...]}`` (no ``"b"`` with the bias trick).
    """
    _check_choice("init", init, INITS)
    _check_choice("bias", bias, BIAS_CONVENTIONS)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    if init == "zeros" and len(sizes) > 2:
        warnings.warn(
            "init='zeros' for an MLP with hidden layers never breaks the symmetry between "
            "hidden units: they stay identical and the hidden weights get zero gradient, so "
            "the network cannot learn; use 'glorot', 'he' or 'normal'",
            UserWarning,
            stacklevel=2,
        )
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for layer_key, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True):
        layer = {"w": _init_weight(layer_key, fan_in, fan_out, init, std, dtype)}
        if bias == "explicit":
            layer["b"] = jnp.zeros((fan_out,), dtype)
        layers.append(layer)
    return {"layers": layers}


def mlp_apply(params: dict, x_ND: jax.Array, activation: str = "relu") -> jax.Array:
    """Logits of a multi-layer perceptron.

    Args:
      params: from ``init_mlp``.
      x_ND: inputs (with the constant-1 column when the bias trick is used).
      activation: nonlinearity of the hidden layers; the output layer is linear.

    Returns:
      logits_NK.
    """
    act = get_activation(activation)
    a_NI = x_ND
    layers = params["layers"]
    for i, layer in enumerate(layers):
        z_NO = a_NI @ layer["w"]
        if "b" in layer:
            z_NO = z_NO + layer["b"]
        a_NI = z_NO if i == len(layers) - 1 else act.fn(z_NO)
    return a_NI
