"""Curvature of an objective from Hessian-vector products: the largest eigenvalue, the GD limit.

Gradient descent ``p <- p - lr * grad f(p)`` on a quadratic with Hessian ``H`` multiplies
the error along the eigenvector of eigenvalue ``h`` by ``1 - lr * h`` every step, so it
converges exactly when ``lr < 2 / h_max``; near a minimum of a smooth objective the same
holds for the Hessian there (the stability limit ``lr_limit``). Beyond it the iterates
move away from the minimum along the top eigenvector; for logistic regression they settle
into an oscillation instead of diverging, because the curvature falls away from the
optimum (the sigmoid saturates).

The Hessian is never formed: ``hvp`` is ``jax.jvp`` of ``jax.grad`` (forward over reverse),
linearised once per point with ``jax.linearize`` so each product costs one forward and one
backward pass. ``power_iteration`` runs in ``lax.while_loop`` and stops on the residual
``||H v - rho v|| <= rtol * |rho|`` of the Rayleigh quotient ``rho = v.Hv``: for a
symmetric ``H`` some eigenvalue lies within that residual of ``rho`` (and, with a gap
``g`` to the next eigenvalue, within ``residual^2 / g``), so the stopping test doubles as
an error certificate. Power iteration finds the eigenvalue of largest magnitude; for the
convex objectives here (positive semi-definite Hessians) that is ``h_max``. Everything is
a pure function of arrays: ``jit`` and ``vmap`` (over ``l2``, over parameters) apply.

Dimension legend:
  N  examples
  D  input features
  P  scalar parameters (all leaves of the parameter pytree, flattened)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = [
    "DEFAULT_RTOL",
    "PowerResult",
    "hessian_max_eigenvalue",
    "hvp",
    "lr_limit",
    "power_iteration",
]

# Residual tolerance of the power iteration, relative to the eigenvalue. The certified
# error of the eigenvalue is at most this (relative); in practice it is ~ its square times
# h_max / gap. float32 cannot resolve a residual much below ~1e-6 of ||H||.
DEFAULT_RTOL: dict[str, float] = {"float64": 1e-7, "float32": 1e-3}
DEFAULT_NUM_ITER = 1000


class PowerResult(NamedTuple):
    """Result of ``power_iteration``.

    Attributes:
      value: the Rayleigh quotient ``rho = v.Hv`` of the final unit vector (the estimate of
        the eigenvalue of largest magnitude).
      vector: the final unit vector ``v`` (flat, [P]).
      residual: ``||H v - rho v||``; some eigenvalue of ``H`` lies within it of ``value``.
      iterations: Hessian-vector products taken (int32).
      converged: ``residual <= rtol * |value|``.
    """

    value: jax.Array
    vector: jax.Array
    residual: jax.Array
    iterations: jax.Array
    converged: jax.Array


def hvp(f: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """Hessian-vector product ``H(params) v`` of a scalar function of a pytree.

    Forward-over-reverse: ``jax.jvp(jax.grad(f), (params,), (v,))``.

    Args:
      f: scalar function of ``params``.
      params: the point (pytree).
      v: the direction, a pytree like ``params``.

    Returns:
      A pytree like ``params``.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def _default(table: dict[str, float], dtype) -> float:
    name = jnp.dtype(dtype).name
    return table.get(name, table["float32"])


def power_iteration(
    matvec: Callable[[jax.Array], jax.Array],
    v0_P: jax.Array,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
    rtol: float | jax.Array | None = None,
) -> PowerResult:
    """Power iteration on a symmetric linear map of flat vectors, stopped on the residual.

    Args:
      matvec: ``v_P -> H v_P``, symmetric ``H``.
      v0_P: start vector (any nonzero vector with a component along the top eigenvector; a
        random one has one with probability 1).
      num_iter: the most products (static).
      rtol: stop once ``||H v - rho v|| <= rtol * |rho|``; default ``DEFAULT_RTOL`` of the
        dtype.

    Returns:
      ``PowerResult``; ``converged`` is False if ``num_iter`` products were not enough.
    """
    if int(num_iter) < 1:
        raise ValueError(f"power_iteration: num_iter must be >= 1, got {num_iter!r}")
    dtype = v0_P.dtype
    rtol = _default(DEFAULT_RTOL, dtype) if rtol is None else rtol
    rtol = jnp.asarray(rtol, dtype)
    tiny = jnp.finfo(dtype).tiny

    def normalise(w_P):
        return w_P / jnp.maximum(jnp.linalg.norm(w_P), tiny)

    def step(v_P):
        w_P = matvec(v_P)
        rho = jnp.vdot(v_P, w_P)
        residual = jnp.linalg.norm(w_P - rho * v_P)
        return w_P, rho, residual

    v_P = normalise(v0_P)
    w_P, rho, residual = step(v_P)

    def cond(carry):
        _, _, rho, residual, k = carry
        return (k < num_iter) & (residual > rtol * jnp.abs(rho))

    def body(carry):
        _, w_P, _, _, k = carry
        v_P = normalise(w_P)
        w_P, rho, residual = step(v_P)
        return v_P, w_P, rho, residual, k + 1

    v_P, _, rho, residual, k = jax.lax.while_loop(
        cond, body, (v_P, w_P, rho, residual, jnp.asarray(1, jnp.int32))
    )
    return PowerResult(rho, v_P, residual, k, residual <= rtol * jnp.abs(rho))


def hessian_max_eigenvalue(
    f: Callable[[Any], jax.Array],
    params: Any,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
    key: jax.Array | None = None,
    rtol: float | jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Largest Hessian eigenvalue of a scalar function of a pytree, by power iteration on HVPs.

    For a convex ``f`` (positive semi-definite Hessian) this is ``h_max``; in general it is
    the eigenvalue of largest magnitude (see ``power_iteration``; for its residual and
    vector call ``power_iteration`` with ``hvp``).

    Args:
      f: scalar function of ``params``.
      params: the point (pytree of floating arrays of one dtype).
      num_iter: the most Hessian-vector products (static).
      key: PRNG key of the random start (default ``PRNGKey(0)``).
      rtol: residual tolerance relative to the eigenvalue (default by dtype).

    Returns:
      ``(lambda_max, iterations)``: scalar eigenvalue, int32 number of products.
    """
    p_P, unravel = ravel_pytree(params)
    key = jax.random.PRNGKey(0) if key is None else key
    v0_P = jax.random.normal(key, p_P.shape, p_P.dtype)
    _, matvec = jax.linearize(jax.grad(lambda q_P: f(unravel(q_P))), p_P)
    res = power_iteration(matvec, v0_P, num_iter=num_iter, rtol=rtol)
    return res.value, res.iterations


def lr_limit(
    model,
    params: Any,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2,
    mask_N: jax.Array | None = None,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
    key: jax.Array | None = None,
    rtol: float | jax.Array | None = None,
) -> jax.Array:
    """Gradient-descent stability limit ``2 / h_max`` of a model's objective at ``params``.

    At the optimum it is the largest learning rate with which full-batch gradient descent
    can settle there; at the initialisation it bounds the first steps. Computed in the
    dtype of ``params`` (``x_ND`` is cast to it). Pure: ``vmap`` over ``l2`` and/or
    ``params`` gives the limits of a whole sweep.

    Args:
      model: a ``jaxlr.core.objective.Model`` (``jaxlr.engine.train.model_for(config, D, dtype)``).
      params: the point.
      x_ND, y_N: the full training set the objective is the mean over.
      l2: lambda (scalar).
      mask_N: optional 0/1 example weights.
      num_iter, key, rtol: see ``hessian_max_eigenvalue``.

    Returns:
      Scalar ``2 / h_max`` (``inf`` if the Hessian is zero).
    """
    dtype = jax.tree.leaves(params)[0].dtype
    rtol = _default(DEFAULT_RTOL, dtype) if rtol is None else rtol
    key = jax.random.PRNGKey(0) if key is None else key
    return _lr_limit_jit(model, int(num_iter), params, x_ND, y_N, l2, mask_N, key, rtol)


@functools.partial(jax.jit, static_argnames=("model", "num_iter"))
def _lr_limit_jit(model, num_iter, params, x_ND, y_N, l2, mask_N, key, rtol):
    # Jitted with the model static: repeated calls (and a vmap of them) compile once.
    dtype = jax.tree.leaves(params)[0].dtype
    x_ND = jnp.asarray(x_ND).astype(dtype)
    l2 = jnp.asarray(l2).astype(dtype)

    def objective(p):
        return model.loss(p, x_ND, y_N, l2, mask_N)[0]

    h_max, _ = hessian_max_eigenvalue(objective, params, num_iter=num_iter, key=key, rtol=rtol)
    return 2.0 / h_max
