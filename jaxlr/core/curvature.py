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
backward pass. Two eigenvalue methods, both in ``lax.while_loop``, both stopped on the
residual ``||H v - rho v|| <= rtol * |rho|`` of a unit vector ``v`` and its Rayleigh quotient
``rho = v.Hv``: for a symmetric ``H`` some eigenvalue lies within that residual of ``rho``
(and, with a gap ``g`` to the next eigenvalue, within ``residual^2 / g``), so the stopping
test doubles as an error certificate.

* ``lanczos`` (the default of ``hessian_max_eigenvalue`` and ``lr_limit``): Lanczos with full
  reorthogonalisation, restarted from its best Ritz vector every ``LANCZOS_BLOCK`` products.
  The largest Ritz value of the Krylov space ``span{v0, Hv0, ..., H^k v0}`` is never below
  the Rayleigh quotient of the k-th power iterate (that iterate lies in the space) and
  never above ``h_max``; on the small eigengaps of the Hessians here it needs a few tens of
  products where power iteration needs hundreds (tdt4265_task4: see WORKSPACE.md). The
  residual is the recurrence's ``beta_k |s_k|`` while iterating, and the returned residual
  is recomputed from one more product (``||H y - rho y||`` of the final Ritz vector), so the
  certificate does not rest on the recurrence's orthogonality.
* ``power_iteration``: finds the eigenvalue of largest magnitude; kept as the simple
  reference (tests compare the two).

For the convex objectives here (positive semi-definite Hessians) the largest eigenvalue is
``h_max`` either way. Everything is a pure function of arrays: ``jit`` and ``vmap`` (over
``l2``, over parameters) apply.

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
    "EIGEN_METHODS",
    "LANCZOS_BLOCK",
    "PowerResult",
    "hessian_max_eigenvalue",
    "hvp",
    "lanczos",
    "lr_limit",
    "power_iteration",
]

# Residual tolerance of Lanczos and power iteration, relative to the eigenvalue. The certified
# error of the eigenvalue is at most this (relative); in practice it is ~ its square times
# h_max / gap. float32 cannot resolve a residual much below ~1e-6 of ||H||.
DEFAULT_RTOL: dict[str, float] = {"float64": 1e-7, "float32": 1e-3}
DEFAULT_NUM_ITER = 1000
EIGEN_METHODS = ("lanczos", "power")
# Lanczos vectors kept before a restart (memory LANCZOS_BLOCK x P; a tridiagonal eigh of
# this size per product, negligible beside a Hessian-vector product of MNIST size).
LANCZOS_BLOCK = 64


class PowerResult(NamedTuple):
    """Result of ``power_iteration`` and of ``lanczos``.

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


def lanczos(
    matvec: Callable[[jax.Array], jax.Array],
    v0_P: jax.Array,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
    rtol: float | jax.Array | None = None,
    block: int = LANCZOS_BLOCK,
) -> PowerResult:
    """Largest eigenvalue of a symmetric linear map by restarted Lanczos, stopped on the residual.

    Each cycle runs at most ``block`` Lanczos steps from the current vector (full
    reorthogonalisation against the cycle's basis), tracking the largest eigenpair
    ``(theta, s)`` of the tridiagonal ``T`` and its residual ``beta_k |s_k|``; a cycle ends on
    ``beta_k |s_k| <= rtol * |theta|`` or after ``block`` steps, and the next starts from the
    Ritz vector ``y = V s``. The result's ``value`` and ``residual`` are the Rayleigh
    quotient and the residual of ``y`` from one explicit product.

    Args:
      matvec: ``v_P -> H v_P``, symmetric ``H``.
      v0_P: start vector (nonzero, with a component along the top eigenvector).
      num_iter: the most products in all (static).
      rtol: stop once the residual is ``<= rtol * |value|``; default ``DEFAULT_RTOL`` of the
        dtype.
      block: Lanczos steps per cycle (static).

    Returns:
      ``PowerResult``; ``value`` estimates the largest (algebraic) eigenvalue, from below up
      to the residual; ``converged`` is False if ``num_iter`` products were not enough.
    """
    if int(num_iter) < 2:
        raise ValueError(f"lanczos: num_iter must be >= 2, got {num_iter!r}")
    if int(block) < 1:
        raise ValueError(f"lanczos: block must be >= 1, got {block!r}")
    dtype = v0_P.dtype
    rtol = _default(DEFAULT_RTOL, dtype) if rtol is None else rtol
    rtol = jnp.asarray(rtol, dtype)
    tiny = jnp.finfo(dtype).tiny
    m = int(min(block, num_iter - 1))
    idx_M = jnp.arange(m)

    def normalise(w_P):
        return w_P / jnp.maximum(jnp.linalg.norm(w_P), tiny)

    def top_ritz(alpha_M, beta_M, k):
        """Largest eigenpair of the leading k x k block of T (the rest pushed below it)."""
        active = idx_M < k
        a = jnp.where(active, alpha_M, 0)
        b = jnp.where(idx_M < k - 1, beta_M, 0)
        radius = jnp.max(jnp.abs(a) + jnp.abs(b) + jnp.abs(jnp.roll(b, 1).at[0].set(0)))
        diag = jnp.where(active, a, -radius - 1)  # decoupled, below every active eigenvalue
        t_MM = jnp.diag(diag) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
        vals, vecs = jnp.linalg.eigh(t_MM)
        return vals[-1], jnp.where(active, vecs[:, -1], 0)

    def cycle(y_P, budget):
        """At most min(m, budget) Lanczos steps from y; returns the Ritz vector and steps."""
        steps = jnp.minimum(m, budget)
        v_MP = jnp.zeros((m, y_P.shape[0]), dtype).at[0].set(y_P)

        def cond(c):
            _, _, _, _, k, theta, res = c
            return (k < steps) & ((k == 0) | (res > rtol * jnp.abs(theta)))

        def body(c):
            v_MP, alpha_M, beta_M, prev_beta, k, _, _ = c
            v_P = v_MP[k]
            w_P = matvec(v_P)
            a = jnp.vdot(v_P, w_P)
            w_P = w_P - a * v_P - prev_beta * v_MP[jnp.maximum(k - 1, 0)] * (k > 0)
            for _ in range(2):  # full reorthogonalisation ("twice is enough")
                w_P = w_P - v_MP.T @ (v_MP @ w_P)
            b = jnp.linalg.norm(w_P)
            alpha_M, beta_M = alpha_M.at[k].set(a), beta_M.at[k].set(b)
            theta, s_M = top_ritz(alpha_M, beta_M, k + 1)
            res = b * jnp.abs(s_M[k])
            nxt = jnp.where(b > tiny, w_P / jnp.maximum(b, tiny), 0)
            v_MP = jnp.where(k + 1 < m, v_MP.at[jnp.minimum(k + 1, m - 1)].set(nxt), v_MP)
            return v_MP, alpha_M, beta_M, b, k + 1, theta, res

        zero = jnp.asarray(0, dtype)
        init = (v_MP, jnp.zeros(m, dtype), jnp.zeros(m, dtype), zero,
                jnp.asarray(0, jnp.int32), zero, jnp.asarray(jnp.inf, dtype))  # fmt: skip
        v_MP, alpha_M, beta_M, _, k, _, _ = jax.lax.while_loop(cond, body, init)
        _, s_M = top_ritz(alpha_M, beta_M, k)
        return normalise(v_MP.T @ s_M), k

    def check(y_P):
        w_P = matvec(y_P)
        rho = jnp.vdot(y_P, w_P)
        return rho, jnp.linalg.norm(w_P - rho * y_P)

    def outer_cond(c):
        _, rho, residual, used = c
        return (used + 1 < num_iter) & (residual > rtol * jnp.abs(rho))

    def outer_body(c):
        y_P, _, _, used = c
        y_P, k = cycle(y_P, num_iter - 1 - used)
        rho, residual = check(y_P)
        return y_P, rho, residual, used + k + 1

    init = (normalise(v0_P), jnp.asarray(0, dtype), jnp.asarray(jnp.inf, dtype),
            jnp.asarray(0, jnp.int32))  # fmt: skip
    y_P, rho, residual, used = jax.lax.while_loop(outer_cond, outer_body, init)
    return PowerResult(rho, y_P, residual, used, residual <= rtol * jnp.abs(rho))


def hessian_max_eigenvalue(
    f: Callable[[Any], jax.Array],
    params: Any,
    *,
    num_iter: int = DEFAULT_NUM_ITER,
    key: jax.Array | None = None,
    rtol: float | jax.Array | None = None,
    method: str = "lanczos",
) -> tuple[jax.Array, jax.Array]:
    """Largest Hessian eigenvalue of a scalar function of a pytree, from HVPs.

    For a convex ``f`` (positive semi-definite Hessian) this is ``h_max``. "lanczos"
    (default) finds the largest algebraic eigenvalue, "power" the one of largest magnitude
    (for the residual and vector call ``lanczos`` or ``power_iteration`` with ``hvp``).

    Args:
      f: scalar function of ``params``.
      params: the point (pytree of floating arrays of one dtype).
      num_iter: the most Hessian-vector products (static).
      key: PRNG key of the random start (default ``PRNGKey(0)``).
      rtol: residual tolerance relative to the eigenvalue (default by dtype).
      method: "lanczos" or "power" (static).

    Returns:
      ``(lambda_max, iterations)``: scalar eigenvalue, int32 number of products.
    """
    if method not in EIGEN_METHODS:
        raise ValueError(f"unknown eigenvalue method {method!r}; valid: {EIGEN_METHODS}")
    p_P, unravel = ravel_pytree(params)
    key = jax.random.PRNGKey(0) if key is None else key
    v0_P = jax.random.normal(key, p_P.shape, p_P.dtype)
    _, matvec = jax.linearize(jax.grad(lambda q_P: f(unravel(q_P))), p_P)
    run = lanczos if method == "lanczos" else power_iteration
    res = run(matvec, v0_P, num_iter=num_iter, rtol=rtol)
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
    method: str = "lanczos",
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
      num_iter, key, rtol, method: see ``hessian_max_eigenvalue``.

    Returns:
      Scalar ``2 / h_max`` (``inf`` if the Hessian is zero).
    """
    dtype = jax.tree.leaves(params)[0].dtype
    rtol = _default(DEFAULT_RTOL, dtype) if rtol is None else rtol
    key = jax.random.PRNGKey(0) if key is None else key
    if method not in EIGEN_METHODS:
        raise ValueError(f"lr_limit: unknown method {method!r}; valid: {EIGEN_METHODS}")
    return _lr_limit_jit(model, int(num_iter), method, params, x_ND, y_N, l2, mask_N, key, rtol)


@functools.partial(jax.jit, static_argnames=("model", "num_iter", "method"))
def _lr_limit_jit(model, num_iter, method, params, x_ND, y_N, l2, mask_N, key, rtol):
    # Jitted with the model static: repeated calls (and a vmap of them) compile once.
    dtype = jax.tree.leaves(params)[0].dtype
    x_ND = jnp.asarray(x_ND).astype(dtype)
    l2 = jnp.asarray(l2).astype(dtype)

    def objective(p):
        return model.loss(p, x_ND, y_N, l2, mask_N)[0]

    h_max, _ = hessian_max_eigenvalue(
        objective, params, num_iter=num_iter, key=key, rtol=rtol, method=method
    )
    return 2.0 / h_max
