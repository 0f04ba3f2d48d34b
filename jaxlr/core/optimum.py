"""The exact optimum beside trained points: optimum, gap and gradient-descent limit per point.

``optimum_report`` solves each distinct lambda of a sweep once (``jaxlr.core.solver.solve_path``)
and computes, at each optimum, the largest learning rate at which full-batch gradient descent
can settle there (``2 / lambda_max`` of the Hessian: Lanczos, ``jaxlr.core.curvature``; at
zero parameters exactly from the Gram eigenbasis, ``jaxlr.core.kron``). What it needs that
depends on no trained run can be done ahead, while the runs train: ``prepare`` compiles its
programs from shapes only, ``prepare_data`` computes what it needs of the data alone (the
features in the solve's dtype, the Gram eigenbasis, the stored copies of the data).

Dimension legend:
  N  examples
  D  input features
  P  scalar parameters (all leaves flattened)
  L  distinct lambdas
  S  sweep points (rows of ``optimum_report``)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlr.core import curvature, kron, losses, newton, newton_path
from jaxlr.core.newton import SolveResult
from jaxlr.core.solver import (
    DEFAULT_MAX_CG_ITER,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    HVP_DTYPE,
    check_data,
    check_l2,
    check_model,
    check_values,
    solve_path,
)

log = logging.getLogger("jaxlr.solver")

__all__ = ["OptimumReport", "PreparedData", "optimum_report", "prepare", "prepare_data"]


class PreparedData(NamedTuple):
    """What ``optimum_report`` computes from the data alone, before any lambda
    (``prepare_data``): made ahead, e.g. on a thread while the runs train.

    Attributes:
      x: the training features in the solve's dtype (device array [N, D]).
      mask: the example weights in that dtype, or None.
      basis: the Gram eigenbasis of the inputs (``kron.Basis``): the CG preconditioner and
        the exact limits at zero parameters.
      views: the stored copies of the data the path and the limits read
        (``newton_path.Views``), or None where the method reads none.
      method, hvp_dtype: what they were made for (a dtype name).
    """

    x: jax.Array
    mask: jax.Array | None
    basis: kron.Basis
    views: Any
    method: str
    hvp_dtype: str | None


def prepare_data(
    model, x_ND, *, mask_N=None, method: str = "newton_cg", dtype=jnp.float64, hvp_dtype=None
) -> PreparedData:
    """Computes what ``optimum_report`` needs of the data alone (no lambda, no labels): the
    features in ``dtype``, the Gram eigenbasis and the stored copies of the data, and waits
    for them. ``optimum_report(..., prepared=...)`` then starts with its first Newton
    iteration (``tdt4265_task4``: ~1.3 s of a float64 20,000 x 785 Gram and its eigenvectors
    moved off the critical path, computed while the runs train)."""
    check_model(model, "prepare_data")
    x64 = jnp.dtype(dtype) == jnp.float64
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        x = jnp.asarray(x_ND).astype(dtype)
        mask = None if mask_N is None else jnp.asarray(mask_N).astype(dtype)
        basis = newton.make_basis_jit(model, x, mask)
        hvp = _dtype_name(HVP_DTYPE if hvp_dtype is None else hvp_dtype)
        views = None
        if method == "newton_cg" and hvp in DEFAULT_TOL:  # else solve_path says what is wrong
            views = newton_path.views(x, hvp)
        out = PreparedData(x, mask, basis, views, method, hvp)
        jax.block_until_ready(out[:4])
    return out


class OptimumReport(NamedTuple):
    """Result of ``optimum_report``.

    Attributes:
      rows: one JSON-ready dict per input point (see ``optimum_report``).
      l2_L: the distinct lambdas, sorted ascending (numpy float64 [L]).
      path: the ``SolveResult`` of ``solve_path`` over ``l2_L`` (fields [L]); ``path.params``
        are the optima, e.g. for the test accuracy at the optimum.
    """

    rows: list
    l2_L: np.ndarray
    path: SolveResult


def _optional(values, num: int, name: str):
    if values is None:
        return [None] * num
    values = [None if v is None else float(v) for v in values]
    if len(values) != num:
        raise ValueError(f"optimum_report: {name} has {len(values)} values, expected {num}")
    return values


def optimum_report(
    model,
    x_ND,
    y_N,
    l2_S: Sequence[float],
    *,
    learning_rates: Sequence[float] | None = None,
    final_objectives: Sequence[float] | None = None,
    mask_N=None,
    include_bias: bool = True,
    tol: float | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    method: str = "newton_cg",
    dtype=jnp.float64,
    key: jax.Array | None = None,
    progress: bool = True,
    hvp_dtype=None,
    prepared: PreparedData | None = None,
) -> OptimumReport:
    """Optimum, gap and gradient-descent limit for each point of a sweep (host side).

    Each distinct lambda is solved once (one ``solve_path`` call) and its curvature computed
    once; points that share a lambda (a lambda x learning-rate grid) share them. In float64
    the computation runs inside ``jax.enable_x64(True)``, so the caller's process may stay
    in 32-bit mode (the engine's float32 model works as is).

    Args:
      model: the engine's model (``jaxlr.engine.train.model_for(config, D, dtype)``), logistic or
        softmax.
      x_ND, y_N: the full training set the runs minimised the mean over.
      l2_S: lambda of each of the S points (duplicates allowed).
      learning_rates: the S learning rates of the runs (optional).
      final_objectives: the S objectives (cross-entropy + lambda R, on the full training set)
        the runs ended at (optional).
      mask_N: optional 0/1 example weights.
      include_bias: whether ``weight_norm`` counts the bias (pass ``TrainConfig.l2_bias`` to
        match the penalty).
      tol, max_iter, method, dtype, hvp_dtype: as in ``solve``.
      key: PRNG key of the Lanczos start vector (default ``PRNGKey(0)``).
      progress: log the solve's progress and the time of the limits (``jaxlr.solver``).
      prepared: ``prepare_data(model, x_ND, ...)`` of these very features with the same
        ``mask_N``, ``method``, ``dtype`` and ``hvp_dtype``, made ahead (not recomputed).

    Returns:
      ``OptimumReport``; ``rows[s]`` has the keys "l2", "optimum_objective" (the solver's
      last objective: not an optimum when "converged" is False), "optimum_cross_entropy",
      "gap" (final objective - optimum; None without ``final_objectives`` or when the solve
      did not converge), "lr" (None without ``learning_rates``), "lr_limit" (2 / h_max at
      the optimum), "lr_limit_init" (at zero parameters), "lr_over_limit" (lr / lr_limit),
      "grad_norm", "iterations", "converged", "separated", "no_finite_optimum" (lambda = 0
      and certified: separated iterates or a one-class feature, ``SolveResult``'s field),
      "weight_norm" (L2 norm of the optimum's weights).
    """
    check_model(model, "optimum_report")
    check_data("optimum_report", x_ND, y_N, mask_N)
    check_values("optimum_report", model, x_ND, y_N)
    l2_S = np.asarray(l2_S, dtype=np.float64).reshape(-1)
    num = int(l2_S.size)
    check_l2("optimum_report", l2_S, 1)
    lrs = _optional(learning_rates, num, "learning_rates")
    finals = _optional(final_objectives, num, "final_objectives")
    l2_L, index_S = np.unique(l2_S, return_inverse=True)
    x64 = jnp.dtype(dtype) == jnp.float64
    if prepared is None:
        # One Gram eigenbasis serves the CG preconditioner and the exact limits at zero;
        # one set of stored copies of the data (transposed, cast) the path and the limits.
        prepared = prepare_data(
            model, x_ND, mask_N=mask_N, method=method, dtype=dtype, hvp_dtype=hvp_dtype
        )
    else:
        _check_prepared(prepared, x_ND, mask_N, method, dtype, hvp_dtype)
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        x, mask, basis, data_views = prepared[:4]
        lam_L = jnp.asarray(l2_L).astype(dtype)
        path = solve_path(
            model,
            x_ND,
            y_N,
            l2_L,
            mask_N=mask_N,
            tol=tol,
            max_iter=max_iter,
            method=method,
            dtype=dtype,
            hvp_dtype=hvp_dtype,
            precondition=basis,
            progress=progress,
            data_views=data_views,
        )
        limits, limits_init = _gd_limits(
            model, path, basis, x, data_views, lam_L, mask, key, progress
        )
    path_np = jax.tree.map(np.asarray, path)
    rows = [
        _row(path_np, int(index_S[s]), float(l2_S[s]), lrs[s], finals[s], limits, limits_init,
             include_bias)
        for s in range(num)
    ]  # fmt: skip
    return OptimumReport(rows, l2_L, path)


def _check_prepared(prepared, x_ND, mask_N, method, dtype, hvp_dtype) -> None:
    hvp = _dtype_name(HVP_DTYPE if hvp_dtype is None else hvp_dtype)
    made = (tuple(prepared.x.shape), prepared.x.dtype, prepared.mask is None, prepared.method,
            prepared.hvp_dtype)  # fmt: skip
    want = (_shape(x_ND), jnp.dtype(dtype), mask_N is None, method, hvp)
    if made != want:
        raise ValueError(
            f"optimum_report: prepared data were made for (shape, dtype, no mask, method, "
            f"HVP dtype) {made}, this report needs {want}"
        )


def prepare(
    model,
    x_ND,
    y_N,
    l2_S: Sequence[float],
    *,
    mask_N=None,
    method: str = "newton_cg",
    dtype=jnp.float64,
    hvp_dtype=None,
    stop: threading.Event | None = None,
) -> None:
    """Compiles, running nothing, the programs ``optimum_report`` runs on these arguments.

    Only shapes and dtypes are read (arrays or ``jax.ShapeDtypeStruct``), so it can run on a
    thread while the runs the report is for still train (``experiments.common``): the later
    ``optimum_report`` then neither traces nor compiles them. That is most of what the
    report costs a new process beyond its arithmetic: with the persistent compilation cache,
    ~3-5 s of tracing, lowering and loading on ``tdt4265_task4``; without it, every compile.
    Only the block sizes and the limits' batch of the lambdas > 0 are compiled (the lambdas
    0 assumed certified up front, ``newton_path.path_sizes``): a program that is not needed would
    only take CPU from the runs; one that is, and was not compiled, compiles when it runs.
    Nothing for ``method="lbfgs"``. ``stop``: once set, no further program is started (the
    caller is ending; what is left compiles when it runs, if ever).
    """
    if method != "newton_cg":
        return
    stopped = stop.is_set if stop is not None else (lambda: False)
    spec = jax.ShapeDtypeStruct
    x64 = jnp.dtype(dtype) == jnp.float64
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        dtype = jnp.dtype(dtype)
        hvp = jnp.dtype(HVP_DTYPE if hvp_dtype is None else hvp_dtype).name
        x = spec(_shape(x_ND), dtype)
        y_dtype = jax.dtypes.canonicalize_dtype(getattr(y_N, "dtype", np.asarray(y_N).dtype))
        y = spec(_shape(y_N), y_dtype)
        mask = None if mask_N is None else spec(_shape(mask_N), dtype)
        l2_L = np.unique(np.asarray(l2_S, np.float64).reshape(-1))
        num, num_zero = int(l2_L.size), int(np.sum(l2_L == 0))
        newton.make_basis_jit.lower(model, x, mask).compile()
        shapes = jax.eval_shape(functools.partial(newton.make_basis, model), x, mask)
        basis = kron.Basis(*(spec(a.shape, a.dtype) for a in shapes))
        views = newton_path.view_specs(x, hvp)
        newton_path.compile_path_host(
            model, DEFAULT_MAX_CG_ITER, x, y, mask, num, num_zero, hvp, basis, views, stopped
        )
        size = num - num_zero  # the limits' batch: the lambdas > 0
        if size and not stopped():
            key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
            template = newton.zeros_like_model(model, dtype)
            params = jax.tree.map(lambda a: spec((size, *a.shape), dtype), template)
            _limits.lower(model, basis, params, x, views, spec((size,), dtype), mask, key).compile()


def _dtype_name(dtype) -> str | None:
    try:
        return jnp.dtype(dtype).name
    except TypeError:
        return None


def _shape(a) -> tuple:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(np.shape(a))


def _gd_limits(model, path, basis, x, data_views, lam_L, mask, key, progress):
    """``2 / h_max`` at each lambda's optimum and at zero parameters (numpy float64 [L]);
    ``data_views``: the path's ``newton_path.Views`` of ``x`` (made here if None)."""
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(0) if key is None else key
    zeros = newton.zeros_like_model(model, x.dtype)
    # At zero parameters the Hessian is exactly Kronecker (kron: one eigenbasis, no
    # products); a lambda certified to have no finite optimum was not iterated, so its
    # "optimum" is that start. The others: Lanczos (curvature.lr_limit's default) at
    # their optima, vmapped in one call (the products are bound by reading x: four
    # lanes cost about two), with kron.hessian_matvec's products in the HVP dtype on the
    # path's transposed copies, and one product in x's dtype for the Rayleigh quotient.
    limits_init = np.asarray(
        2.0 / kron.max_eigenvalue_at_zero(model, basis, zeros, x, lam_L), np.float64
    )
    started = np.asarray(path.no_finite_optimum) & (np.asarray(path.iterations) == 0)
    limits = limits_init.copy()
    todo = np.flatnonzero(~started)
    if todo.size:
        params = jax.tree.map(lambda a: a[todo], path.params)
        if data_views is None:
            data_views = newton_path.views(x, HVP_DTYPE)
        limits[todo] = np.asarray(
            _limits(model, basis, params, x, data_views, lam_L[todo], mask, key), np.float64
        )
    if progress:
        log.info(
            "optimum: gradient-descent limits of %d lambdas in %.1f s (%d by Lanczos)",
            len(lam_L),
            time.perf_counter() - t0,
            todo.size,
        )
    return limits, limits_init


def _row(path_np, i, l2, lr, final, limits, limits_init, include_bias) -> dict:
    """One point's row of ``optimum_report`` (its lambda is ``path_np``'s entry ``i``)."""
    params = jax.tree.map(lambda a: a[i], path_np.params)
    weights = losses.l2_weights(params, include_bias)
    norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in weights)))
    opt = float(path_np.objective[i])
    converged = bool(path_np.converged[i])
    return {
        "l2": l2,
        "optimum_objective": opt,
        "optimum_cross_entropy": float(path_np.cross_entropy[i]),
        "gap": None if final is None or not converged else final - opt,
        "lr": lr,
        "lr_limit": float(limits[i]),
        "lr_limit_init": float(limits_init[i]),
        "lr_over_limit": None if lr is None else lr / float(limits[i]),
        "grad_norm": float(path_np.grad_norm[i]),
        "iterations": int(path_np.iterations[i]),
        "converged": converged,
        "separated": bool(path_np.separated[i]),
        "no_finite_optimum": bool(path_np.no_finite_optimum[i]),
        "weight_norm": norm,
    }


# Residual tolerance of the limits' Lanczos, relative to the eigenvalue: the Rayleigh quotient
# of a vector with residual r is within ||r||^2 / gap of the eigenvalue (and always within ||r||),
# so 1e-6 gives the limit to ~1e-9 relative for a top eigenvalue that is not clustered. In
# float32 products (which cannot resolve a residual much below 1e-6) the Lanczos stops at
# LIMIT_RTOL_FLOAT32 and the value is the float64 Rayleigh quotient of its vector: within
# ~1e-10 h_max^2 / gap (task4's four limits: 2e-12 to 9e-11 relative of the float64 Lanczos).
LIMIT_RTOL = 1e-6
LIMIT_RTOL_FLOAT32 = 1e-5


@functools.partial(jax.jit, static_argnames=("model",))
def _limits(model, basis, params, x_ND, data_views, l2_L, mask_N, key):
    """``2 / h_max`` at each lane's ``params`` (leading axis L): ``curvature.lanczos`` on
    ``kron.hessian_matvec``'s products in the HVP dtype (``data_views``' cast copies); when
    that is not ``x_ND``'s dtype, the value is the Rayleigh quotient of Lanczos' vector from
    one product in ``x_ND``'s dtype (``LIMIT_RTOL_FLOAT32``)."""
    xt_DN, x_h, xt_h = data_views
    dtype, hdtype = x_ND.dtype, x_h.dtype
    template = newton.zeros_like_model(model, dtype)
    template_h = newton.zeros_like_model(model, hdtype)
    mask_h = None if mask_N is None else mask_N.astype(hdtype)
    rtol = LIMIT_RTOL if hdtype == dtype else LIMIT_RTOL_FLOAT32

    def one(p, l2):
        p_P = ravel_pytree(p)[0]
        p_h = p_P.astype(hdtype)
        matvec = kron.hessian_matvec(basis, template_h, x_h, xt_h, mask_h, l2, p_h)
        v0_P = jax.random.normal(key, p_P.shape, hdtype)
        res = curvature.lanczos(matvec, v0_P, num_iter=curvature.DEFAULT_NUM_ITER, rtol=rtol)
        if hdtype == dtype:
            return 2.0 / res.value
        y_P = res.vector.astype(dtype)
        y_P = y_P / jnp.linalg.norm(y_P)
        hy_P = kron.hessian_matvec(basis, template, x_ND, xt_DN, mask_N, l2, p_P)(y_P)
        return 2.0 / jnp.vdot(y_P, hy_P)

    return jax.vmap(one)(params, l2_L)
