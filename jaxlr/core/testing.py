"""Helpers for checking numerics, written once so tests, experiments and notebooks share them.

- ``TOLERANCES`` / ``tolerance``: the only place tolerances live, keyed by dtype and by
  kind of check.
- ``finite_difference_grad``: central differences on every coordinate of a pytree.
- ``tree_allclose`` / ``assert_tree_allclose``: pytree comparisons with a useful message.
- ``TraceCounter`` / ``count_traces``: how many times a function was traced by ``jit``.
- ``objective_with_grad``: a scalar function whose derivative *is* a given gradient
  function, so ``jax.test_util.check_grads`` can test a hand-derived gradient.

Dimension legend:
  P  number of scalar parameters (all leaves of a pytree, flattened)
  B  coordinates evaluated together in one batch of ``finite_difference_grad``
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "FD_EPS",
    "TOLERANCES",
    "TraceCounter",
    "assert_tree_allclose",
    "count_traces",
    "fd_eps",
    "finite_difference_grad",
    "objective_with_grad",
    "tolerance",
    "tree_allclose",
]

# Why these numbers (all measured on the tests' random small problems, with margin):
# - grad_vs_autodiff: analytic and jax.grad do the same arithmetic in a different order,
#   so they differ by rounding only (~1e-16 relative in float64, ~1e-7 in float32).
# - finite_difference: central differences with step FD_EPS[dtype] have truncation
#   error ~eps^2 |f'''| and rounding error ~macheps |f| / eps; float32 needs a large
#   step and a loose tolerance.
# - check_grads: passed to jax.test_util.check_grads together with its ``eps`` below.
# - course: the course's own check, |finite difference - analytic| <= eps^2 = 1e-6 for
#   every coordinate with eps = 1e-3 (only meaningful in float64).
# - loss_value: a loss against the same quantity built by hand in another way.
TOLERANCES: dict[str, dict[str, dict[str, float]]] = {
    "float64": {
        "grad_vs_autodiff": dict(rtol=1e-10, atol=1e-12),
        "finite_difference": dict(rtol=1e-6, atol=1e-8),
        "check_grads": dict(rtol=1e-5, atol=1e-5, eps=1e-4),
        "course": dict(rtol=0.0, atol=1e-6),
        "loss_value": dict(rtol=1e-12, atol=1e-12),
    },
    "float32": {
        "grad_vs_autodiff": dict(rtol=2e-5, atol=2e-6),
        "finite_difference": dict(rtol=2e-2, atol=2e-3),
        "check_grads": dict(rtol=2e-2, atol=2e-2, eps=3e-3),
        "course": dict(rtol=0.0, atol=1e-6),
        "loss_value": dict(rtol=2e-6, atol=2e-6),
    },
}

# Finite-difference step per dtype used with the "finite_difference" tolerances.
FD_EPS: dict[str, float] = {"float64": 1e-5, "float32": 1e-2}


def _dtype_name(dtype) -> str:
    name = jnp.dtype(dtype).name
    if name not in TOLERANCES:
        raise ValueError(f"no tolerances for dtype {name!r}; valid: {', '.join(TOLERANCES)}")
    return name


def tolerance(dtype, kind: str) -> dict[str, float]:
    """Tolerances for one kind of check.

    Args:
      dtype: float32 or float64 (anything ``jnp.dtype`` accepts).
      kind: a key of ``TOLERANCES[dtype]`` ("grad_vs_autodiff", "finite_difference",
        "check_grads", "course", "loss_value").

    Returns:
      ``dict(rtol=..., atol=...)`` (plus ``eps`` for "check_grads"), a fresh copy.
    """
    table = TOLERANCES[_dtype_name(dtype)]
    if kind not in table:
        raise ValueError(f"unknown tolerance kind {kind!r}; valid: {', '.join(table)}")
    return dict(table[kind])


def fd_eps(dtype) -> float:
    """The finite-difference step that goes with the "finite_difference" tolerances."""
    return FD_EPS[_dtype_name(dtype)]


def finite_difference_grad(
    f: Callable[[Any], jax.Array], params: Any, eps: float = 1e-3, batch_size: int = 256
) -> Any:
    """Central-difference gradient ``(f(p + eps e_i) - f(p - eps e_i)) / (2 eps)``, every i.

    Coordinates are evaluated ``batch_size`` at a time with ``vmap`` (via
    ``lax.map``), under one ``jit``, so 785 x 10 coordinates take about a second.

    Args:
      f: scalar function of the pytree ``params``; must be traceable by JAX.
      params: the point; all leaves should share one floating dtype (it sets the
        precision of the differences).
      eps: the step.
      batch_size: coordinates per vmapped batch (memory ~ batch_size x P).

    Returns:
      Pytree like ``params`` with the finite-difference gradient.
    """
    num = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))

    @jax.jit
    def all_coordinates(params):
        # Flattening inside jit: done eagerly it would compile a few ops per call.
        flat_P, unravel = ravel_pytree(params)
        step = jnp.asarray(eps, flat_P.dtype)

        def one_coordinate(i):
            e_P = jnp.zeros_like(flat_P).at[i].set(step)
            f_plus = f(unravel(flat_P + e_P))
            f_minus = f(unravel(flat_P - e_P))
            return ((f_plus - f_minus) / (2 * step)).astype(flat_P.dtype)

        indices = jnp.arange(num)
        if num <= batch_size:
            grad_P = jax.vmap(one_coordinate)(indices)  # no loop: compiles faster
        else:
            grad_P = jax.lax.map(one_coordinate, indices, batch_size=batch_size)
        return unravel(grad_P)

    return all_coordinates(params)


def _leaves_with_paths(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves], treedef


def tree_allclose(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """True when ``a`` and ``b`` have the same structure and shapes and all leaves are close.

    Closeness is ``|a - b| <= atol + rtol |b|`` elementwise (NaNs never match).
    """
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a != tree_b:
        return False
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
            return False
    return True


def assert_tree_allclose(
    a: Any,
    b: Any,
    rtol: float | None = None,
    atol: float | None = None,
    dtype=None,
    kind: str | None = None,
    err_msg: str = "",
    check_dtypes: bool = False,
) -> None:
    """Asserts ``tree_allclose(a, b)``, naming the leaf, the worst entry and the errors.

    Tolerances: explicit ``rtol`` / ``atol`` win; the missing ones come from
    ``tolerance(dtype, kind)`` when ``kind`` is given (``dtype`` defaults to the least
    precise floating dtype among the leaves), and are 0 otherwise.

    Args:
      a: actual pytree.
      b: expected pytree.
      rtol: relative tolerance.
      atol: absolute tolerance.
      dtype: dtype for looking up tolerances.
      kind: kind of check for looking up tolerances.
      err_msg: prefix of the failure message.
      check_dtypes: also require identical leaf dtypes.

    Raises:
      AssertionError: on a structure, shape, dtype or value mismatch.
    """
    leaves_a, tree_a = _leaves_with_paths(a)
    leaves_b, tree_b = _leaves_with_paths(b)
    prefix = f"{err_msg}: " if err_msg else ""
    if tree_a != tree_b:
        raise AssertionError(f"{prefix}tree structures differ:\n  {tree_a}\n  {tree_b}")
    if kind is not None:
        if dtype is None:
            floats = [
                np.asarray(x).dtype
                for _, x in leaves_a + leaves_b
                if np.issubdtype(np.asarray(x).dtype, np.floating)
            ]
            dtype = min(floats, key=lambda d: d.itemsize) if floats else np.float64
        tol = tolerance(dtype, kind)
        rtol = tol["rtol"] if rtol is None else rtol
        atol = tol["atol"] if atol is None else atol
    rtol = 0.0 if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise AssertionError(f"{prefix}leaf {path}: shape {x.shape} != {y.shape}")
        if check_dtypes and x.dtype != y.dtype:
            raise AssertionError(f"{prefix}leaf {path}: dtype {x.dtype} != {y.dtype}")
        xf, yf = x.astype(np.float64), y.astype(np.float64)
        bad = ~np.isclose(xf, yf, rtol=rtol, atol=atol)
        if bad.any():
            err = np.abs(xf - yf)
            worst = np.unravel_index(np.nanargmax(np.where(bad, err, -1.0)), x.shape)
            rel = err / np.maximum(np.abs(yf), np.finfo(np.float64).tiny)
            raise AssertionError(
                f"{prefix}leaf {path}: {int(bad.sum())} of {x.size} entries differ "
                f"(rtol={rtol}, atol={atol}); max abs err {np.nanmax(err):.3e}, "
                f"max rel err {np.nanmax(rel):.3e}; worst at {tuple(map(int, worst))}: "
                f"{xf[worst]!r} vs {yf[worst]!r}"
            )


class TraceCounter:
    """Wraps a Python function and counts how often its body runs.

    Under ``jax.jit`` the body runs once per trace (compilation), not once per call,
    so ``count`` says how many times the function was (re)compiled.
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


def count_traces(fn: Callable) -> TraceCounter:
    """Returns a ``TraceCounter`` around ``fn``; jit the result, then read ``.count``.

    Example::

        counted = count_traces(train_fn)
        jitted = jax.jit(counted)
        jitted(a); jitted(b)      # same shapes and dtypes
        assert counted.count == 1
    """
    return TraceCounter(fn)


def objective_with_grad(f: Callable, grad_f: Callable) -> Callable:
    """A scalar function equal to ``f`` whose derivative is defined by ``grad_f``.

    ``jvp`` gives ``<grad_f(p), t>``, so ``jax.test_util.check_grads`` on the result
    compares ``grad_f`` with finite differences of ``f`` (first order, forward and
    reverse mode) and, at order 2, differentiates through ``grad_f`` itself.

    Args:
      f: ``params -> scalar``.
      grad_f: ``params -> params-shaped gradient`` (e.g. a hand-derived one).

    Returns:
      ``params -> scalar`` with a custom JVP.
    """

    @jax.custom_jvp
    def wrapped(params):
        return f(params)

    @wrapped.defjvp
    def wrapped_jvp(primals, tangents):
        (params,), (t_params,) = primals, tangents
        out = f(params)
        g = grad_f(params)
        dots = jax.tree.map(lambda gi, ti: jnp.sum(gi * ti), g, t_params)
        tangent_out = sum(jax.tree.leaves(dots))
        return out, jnp.asarray(tangent_out).astype(out.dtype)

    return wrapped
