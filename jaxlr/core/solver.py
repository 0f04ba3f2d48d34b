"""The exact optimum of the convex linear models: full-batch Newton-CG (or L-BFGS) in float64.

Logistic and softmax regression minimise a convex objective, ``mean cross-entropy +
lambda * R(w)``, so every training run has a true optimum to measure it against. ``solve``
finds it for the model's own objective (``model.loss``: either L2 convention, bias
penalised or not, the same function training minimises) and ``solve_path`` solves a whole
regularization path in one compiled call.

Method ("newton_cg", the default): truncated Newton. Each iteration linearises the
gradient at the current point (``jax.linearize`` of ``jax.grad``: the Hessian-vector
product ``jvp(grad f)``, one forward and one backward pass per product), solves
``H d = -g`` by conjugate gradients to the residual ``min(0.5, sqrt(||g||)) ||g||`` (the
forcing sequence of Nocedal & Wright, Algorithm 7.1, which gives superlinear convergence;
at most ``max_cg_iter`` products), then backtracks from the full step ``t = 1`` by halving
until the Armijo condition ``f(p + t d) <= f(p) + 1e-4 t g.d`` holds. Close to the optimum
the decrease falls below the rounding of ``f``, so a step is also accepted when ``f`` rises
by no more than ``100 eps |f|`` while the gradient norm falls (a relaxation in the spirit of
Hager & Zhang's approximate Wolfe conditions). "lbfgs": optax's L-BFGS (memory 10) with
its zoom line search; it needs many more iterations and is kept as an independent
cross-check.

Stopping: the Euclidean norm of the gradient of the objective (all parameters flattened),
``||grad f||_2 <= tol``, absolute; the objective is a mean over examples, so the scale does
not grow with N. The Hessian-vector products inside CG run in ``hvp_dtype`` (default
``HVP_DTYPE``, float32, also for a float64 solve: cheaper, and the step is still a Newton
step up to a relative Hessian error ~1e-7); objective, gradient, line search and the stopping
test run in the solve dtype, so a converged float64 result is certified in float64.
Defaults (``DEFAULT_TOL``): 1e-10 in float64, 1e-5 in float32 (float32
gradients carry rounding noise of ~1e-7 to 1e-6 on MNIST). ``iterations`` counts Newton
(or L-BFGS) iterations, ``hvps`` the Hessian-vector products. With strong convexity ``mu``
(``mu >= 2 lambda`` for ``R = sum w^2`` with the bias penalised, ``>= lambda`` for
``"half"``) a gradient norm ``g`` bounds the distance to the optimum by ``g / mu`` and the
objective gap by ``g^2 / (2 mu)``; the tests use exactly these bounds.

No finite optimum: with ``lambda = 0`` on linearly separable data the infimum 0 of the
cross-entropy is approached only as ``||w|| -> inf``. The solver checks at every iterate
whether every (unmasked) example is strictly correctly classified (``separated``); with
``lambda = 0`` that certifies that no finite optimum exists (scaling ``w`` up lowers every
loss), so it stops there and reports ``converged=False``. Before iterating, lambda = 0 is
also checked for a one-class feature (``_one_class_certificate``: a feature above its
minimum only in examples of one class); such a lambda is reported ``no_finite_optimum``
without any iteration. Quasi-separated data (separable
up to ties) is not detected: the gradient vanishes only as ``||w|| -> inf`` and the solve
ends at ``max_iter`` with ``converged=False``, or meets ``tol`` with a very large
``||w||``. With ``lambda > 0`` and the bias unpenalised, data with a single class also has
no finite optimum (not detected).

``solve`` is a pure function of arrays (model and options static) built on
``lax.while_loop``: ``jit`` and ``vmap`` apply (under ``vmap`` every lane runs until the
slowest has stopped; stopped lanes do not change). ``solve_path`` (Newton-CG) drives the
iterations from the host instead: one compiled, vmapped iteration over the lambdas still
running, so each lambda stops when it is done (warm starts per lambda via ``params0``).

Dimension legend:
  N  examples
  D  input features (785 for MNIST with the bias trick)
  K  classes
  P  scalar parameters (all leaves flattened)
  L  points of a regularization path (distinct lambdas)
  S  sweep points (rows of ``optimum_report``)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxlr.core import curvature, losses
from jaxlr.core.inputs import check_finite, check_labels, format_number

__all__ = [
    "CONVEX_KINDS",
    "DEFAULT_TOL",
    "METHODS",
    "OptimumReport",
    "SolveResult",
    "optimum_report",
    "solve",
    "solve_path",
]

METHODS = ("newton_cg", "lbfgs")
CONVEX_KINDS = ("logistic", "softmax")
DEFAULT_TOL: dict[str, float] = {"float64": 1e-10, "float32": 1e-5}
DEFAULT_MAX_ITER = 100
DEFAULT_MAX_CG_ITER = 250
# The Hessian-vector products inside CG run in float32 by default, also for a float64 solve
# (about 1.6-2x cheaper on a CPU; tdt4265_task4: WORKSPACE.md). The Newton step is then the
# CG solution of a slightly perturbed Hessian (relative error ~1e-7), which only changes how
# fast the iterates converge: the objective, the gradient, the line search and the stopping
# test ||grad f||_2 <= tol stay in the solve dtype, so a converged result is still certified
# by its float64 gradient.
HVP_DTYPE = "float32"
ARMIJO_C1 = 1e-4
MAX_BACKTRACKS = 40
# Relative rise of f tolerated by the approximate Armijo test, in units of the dtype's eps.
APPROX_RISE_EPS = 100.0
LBFGS_MEMORY = 10
# At most one progress line this often (seconds) during a host-driven path.
PROGRESS_SECONDS = 5.0

log = logging.getLogger("jaxlr.solver")


class SolveResult(NamedTuple):
    """Result of ``solve`` (scalars) or ``solve_path`` (every field with a leading L axis).

    Attributes:
      params: the solution, a pytree like the model's params, in the solve dtype.
      objective: ``f(params)`` = mean cross-entropy + lambda R(w).
      cross_entropy: the mean cross-entropy part of ``objective``.
      grad_norm: ``||grad f(params)||_2``.
      iterations: Newton (or L-BFGS) iterations taken (int32).
      hvps: Hessian-vector products taken (int32; 0 for L-BFGS).
      converged: ``grad_norm <= tol`` and not ``no_finite_optimum``.
      separated: every (unmasked) example is strictly correctly classified at ``params``;
        with lambda = 0 this certifies that no finite optimum exists.
      stalled: the line search found no acceptable step (rounding floor reached before
        ``tol``: raise ``tol`` or use float64); always False for "lbfgs", whose line search
        does not report failure (it then runs to ``max_iter``).
      no_finite_optimum: lambda = 0 and either ``separated`` or the one-class-feature
        certificate holds on the data (checked before iterating; such a lambda takes no
        iteration and ``params`` is its start): the infimum is not attained.
    """

    params: Any
    objective: jax.Array
    cross_entropy: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    hvps: jax.Array
    converged: jax.Array
    separated: jax.Array
    stalled: jax.Array
    no_finite_optimum: jax.Array


# ---------------------------------------------------------------------------------------------
# Validation (host side; traced values are not checked).


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_model(model, where: str) -> None:
    kind = getattr(model, "kind", None)
    if kind not in CONVEX_KINDS:
        raise ValueError(
            f"{where}: model.kind={kind!r} is not a convex model; valid: "
            + ", ".join(map(repr, CONVEX_KINDS))
        )


def _check_options(where: str, method: str, max_iter, max_cg_iter) -> None:
    if method not in METHODS:
        raise ValueError(
            f"{where}: unknown method {method!r}; valid: {', '.join(map(repr, METHODS))}"
        )
    for name, value in (("max_iter", max_iter), ("max_cg_iter", max_cg_iter)):
        if not isinstance(value, (int, np.integer)) or int(value) < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")


def _resolve_dtype(where: str, dtype):
    dtype = jnp.dtype(dtype)
    if dtype.name not in DEFAULT_TOL:
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype.name!r}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{where}: dtype=float64 needs 64-bit JAX; call "
            "jax.config.update('jax_enable_x64', True) first, run inside "
            "`with jax.enable_x64(True):`, or pass dtype=jnp.float32"
        )
    return dtype


def _resolve_tol(where: str, tol, dtype):
    if tol is None:
        return DEFAULT_TOL[dtype.name]
    if _is_concrete(tol):
        t = np.asarray(tol)
        if t.ndim != 0 or not np.isfinite(t) or t <= 0:
            raise ValueError(f"{where}: tol must be a finite scalar > 0, got {tol!r}")
    return tol


def _check_l2(where: str, l2, ndim: int) -> None:
    if not _is_concrete(l2):
        return
    a = np.asarray(l2, dtype=np.float64)
    if a.ndim != ndim or (ndim == 1 and a.size == 0):
        what = "a scalar" if ndim == 0 else "a non-empty 1-D array"
        raise ValueError(f"{where}: l2 must be {what}, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        shown = format_number(np.asarray(l2))  # as given: 0.01, not a float32's 0.00999...
        raise ValueError(f"{where}: l2 must be finite and >= 0, got {shown}")


def _check_data(where: str, x_ND, y_N, mask_N) -> None:
    xs, ys = np.shape(x_ND), np.shape(y_N)
    if len(xs) != 2:
        raise ValueError(f"{where}: x_ND must have rank 2 [N, D], got shape {xs}")
    if len(ys) < 1 or ys[0] != xs[0]:
        raise ValueError(f"{where}: y_N has shape {ys}, expected {xs[0]} labels for x_ND {xs}")
    if mask_N is not None and np.shape(mask_N) != (xs[0],):
        raise ValueError(f"{where}: mask_N has shape {np.shape(mask_N)}, expected ({xs[0]},)")


def _check_values(where: str, model, x_ND, y_N) -> None:
    """Labels the model can represent and finite features (host values; one pass each)."""
    k = 2 if model.kind == "logistic" else int(model.num_classes)
    check_labels(y_N, k, name="y_N", where=where, model=model.kind)
    check_finite(x_ND, name="x_ND", where=where)


def _zeros_like_model(model, dtype):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, dtype), shapes)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tree)


# ---------------------------------------------------------------------------------------------
# The algorithms, on flat parameter vectors p_P.


def _separated(model, params, x_ND, y_N, mask_N) -> jax.Array:
    """Every unmasked example strictly correctly classified (a positive margin)."""
    logits = model.apply(params, x_ND)
    if logits.ndim == 1:
        sign_N = 2.0 * jnp.asarray(y_N).astype(logits.dtype) - 1.0
        margin_N = sign_N * logits
    else:
        y = jnp.argmax(y_N, axis=-1) if jnp.ndim(y_N) == 2 else y_N
        true_N = jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=1)[:, 0]
        others_NK = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
        margin_N = true_N - jnp.max(others_NK, axis=1)
    ok_N = margin_N > 0
    if mask_N is not None:
        ok_N = ok_N | (jnp.asarray(mask_N) == 0)
    return jnp.all(ok_N)


def _one_class_certificate(model, params0, x_ND, y_N, mask_N) -> jax.Array:
    """A feature that certifies, at lambda = 0, that no finite optimum exists.

    Feature j certifies it when its (sign-flipped, for the second pass) values rise above
    their minimum c only in (unmasked) examples of one class k: moving the class-k weight of
    j by t and class k's bias by -t c (the explicit bias, or the constant feature of the
    bias trick) changes only those examples' true-class logits, which rise, so every loss
    falls along that direction from any point and the gradient never vanishes. The
    direction is built in parameter space and checked through ``model.apply`` (every margin
    change >= 0, one > 0), so a model without a bias fails the check rather than passing
    wrongly. Cost: about two passes over ``x_ND``.
    """
    dtype = x_ND.dtype
    num_classes = model.num_classes
    keep_N = jnp.ones(x_ND.shape[0], bool) if mask_N is None else jnp.asarray(mask_N) > 0
    y = jnp.asarray(y_N).astype(jnp.int32)
    onehot_NK = jax.nn.one_hot(y, num_classes, dtype=dtype) * keep_N[:, None]
    lo_D = jnp.min(jnp.where(keep_N[:, None], x_ND, jnp.inf), axis=0)
    hi_D = jnp.max(jnp.where(keep_N[:, None], x_ND, -jnp.inf), axis=0)
    const_D = (lo_D == hi_D) & (lo_D != 0)
    bias_col = jnp.argmax(const_D)
    template = jax.tree.map(jnp.zeros_like, params0)

    def holds(sign):
        u_ND = sign * x_ND
        c_D = jnp.where(sign > 0, lo_D, -hi_D)
        counts_KD = onehot_NK.T @ (u_ND > c_D).astype(dtype)
        one_class_D = jnp.sum(counts_KD > 0, axis=0) == 1
        j = jnp.argmax(one_class_D)
        k = jnp.argmax(counts_KD[:, j] > 0)
        # Logistic regression has one output: class 1 pushes it up, class 0 down.
        col, up = (0, 2.0 * k - 1.0) if num_classes == 2 and model.kind == "logistic" else (k, 1.0)
        w = template["w"].at[j, col].add(sign * up)
        d = dict(template, w=w)
        if "b" in template:
            d["b"] = template["b"].at[col].add(-up * c_D[j])
        else:
            d["w"] = w.at[bias_col, col].add(
                jnp.where(const_D[bias_col], -up * c_D[j] / lo_D[bias_col], 0)
            )
        z = model.apply(d, x_ND)
        if z.ndim == 1:
            gain_NK = ((2.0 * y - 1.0) * z)[:, None]
        else:
            gain_NK = jnp.take_along_axis(z, y[:, None], axis=1) - z
        gain_NK = jnp.where(keep_N[:, None], gain_NK, 0)
        return jnp.any(one_class_D) & jnp.all(gain_NK >= 0) & jnp.any(gain_NK > 0)

    return holds(jnp.asarray(1, dtype)) | holds(jnp.asarray(-1, dtype))


def _cg(matvec, g_P, gnorm, max_cg_iter):
    """Truncated CG for ``H d = -g`` to ``||H d + g|| <= min(0.5, sqrt(||g||)) ||g||``.

    Stops early on non-positive curvature (then ``d = -g`` if it happens at once).
    Returns ``(d_P, products)``.
    """
    target = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm
    r_P = -g_P
    rr = jnp.vdot(r_P, r_P)

    def cond(c):
        _, _, _, rr, k, done = c
        return (k < max_cg_iter) & ~done & (jnp.sqrt(rr) > target)

    def body(c):
        d_P, r_P, s_P, rr, k, _ = c
        hs_P = matvec(s_P)
        shs = jnp.vdot(s_P, hs_P)
        flat = shs <= 0
        alpha = rr / jnp.where(flat, 1, shs)
        d_new = d_P + alpha * s_P
        r_new = r_P - alpha * hs_P
        rr_new = jnp.vdot(r_new, r_new)
        s_new = r_new + (rr_new / rr) * s_P
        d_flat = jnp.where(k == 0, -g_P, d_P)
        return (
            jnp.where(flat, d_flat, d_new),
            jnp.where(flat, r_P, r_new),
            jnp.where(flat, s_P, s_new),
            jnp.where(flat, rr, rr_new),
            k + 1,
            flat,
        )

    init = (jnp.zeros_like(g_P), r_P, r_P, rr, jnp.asarray(0, jnp.int32), jnp.asarray(False))
    d_P, _, _, _, k, _ = jax.lax.while_loop(cond, body, init)
    return d_P, k


class _NewtonState(NamedTuple):
    """The Newton-CG loop's carry (scalars; a leading lane axis in the host-driven path)."""

    p_P: jax.Array
    f: jax.Array
    g_P: jax.Array
    gnorm: jax.Array
    it: jax.Array
    hvps: jax.Array
    stalled: jax.Array
    separated: jax.Array


def _newton_start(fun, sep_fun, p_P) -> _NewtonState:
    f, g_P = jax.value_and_grad(fun)(p_P)
    zero = jnp.asarray(0, jnp.int32)
    return _NewtonState(
        p_P, f, g_P, jnp.linalg.norm(g_P), zero, zero, jnp.asarray(False), sep_fun(p_P)
    )


def _newton_running(c: _NewtonState, tol, stop, max_iter):
    """Whether the loop takes another iteration; ``stop``: lambda 0 with separated iterates
    (``stop`` & ``separated``) or an up-front certificate (``stop`` alone) ends it."""
    xp = jnp if isinstance(c.f, jax.Array) else np
    stop_now = stop[1] | (stop[0] & c.separated)
    return (c.gnorm > tol) & (c.it < max_iter) & ~c.stalled & ~stop_now & xp.isfinite(c.f)


def _hessian_matvec(hess_fun, p_P):
    """``v -> H(p) v`` from ``hess_fun`` (the objective in the Hessian dtype, on flat
    parameters), linearised once at ``p_P``; vectors in and out in ``p_P``'s dtype."""
    fun, hdtype = hess_fun
    _, matvec = jax.linearize(jax.grad(fun), p_P.astype(hdtype))
    if hdtype == p_P.dtype:
        return matvec
    return lambda v_P: matvec(v_P.astype(hdtype)).astype(p_P.dtype)


def _newton_iteration(fun, sep_fun, hess_fun, c: _NewtonState, max_cg_iter) -> _NewtonState:
    """One Newton-CG iteration: CG on the HVPs at ``c.p_P``, then the line search."""
    p_P, f, g_P, gnorm = c.p_P, c.f, c.g_P, c.gnorm
    dtype = p_P.dtype
    eps_rise = APPROX_RISE_EPS * jnp.finfo(dtype).eps
    value_and_grad = jax.value_and_grad(fun)
    matvec = _hessian_matvec(hess_fun, p_P)
    d_P, k = _cg(matvec, g_P, gnorm, max_cg_iter)
    slope = jnp.vdot(g_P, d_P)

    def trial(t):
        q_P = p_P + t * d_P
        fq, gq_P = value_and_grad(q_P)
        gq = jnp.linalg.norm(gq_P)
        armijo = fq <= f + ARMIJO_C1 * t * slope
        approx = (fq <= f + eps_rise * jnp.abs(f)) & (gq < gnorm)
        ok = jnp.isfinite(fq) & (armijo | approx)
        return q_P, fq, gq_P, gq, ok

    def ls_cond(ls):
        *_, ok, n = ls
        return ~ok & (n < MAX_BACKTRACKS)

    def ls_body(ls):
        t, *_, n = ls
        t = 0.5 * t
        return (t, *trial(t), n + 1)

    one = jnp.asarray(1, dtype)
    _, q_P, fq, gq_P, gq, ok, _ = jax.lax.while_loop(
        ls_cond, ls_body, (one, *trial(one), jnp.asarray(1, jnp.int32))
    )
    p_P = jnp.where(ok, q_P, p_P)
    return _NewtonState(
        p_P,
        jnp.where(ok, fq, f),
        jnp.where(ok, gq_P, g_P),
        jnp.where(ok, gq, gnorm),
        c.it + 1,
        c.hvps + k,
        ~ok,
        sep_fun(p_P),
    )


def _newton_cg(fun, sep_fun, hess_fun, p_P, tol, stop, max_iter, max_cg_iter):
    c = jax.lax.while_loop(
        lambda c: _newton_running(c, tol, stop, max_iter),
        lambda c: _newton_iteration(fun, sep_fun, hess_fun, c, max_cg_iter),
        _newton_start(fun, sep_fun, p_P),
    )
    return c.p_P, c.it, c.hvps, c.stalled


def _lbfgs(fun, sep_fun, p_P, tol, stop, max_iter):
    opt = optax.lbfgs(memory_size=LBFGS_MEMORY)
    value_and_grad = optax.value_and_grad_from_state(fun)
    zero = jnp.asarray(0, jnp.int32)

    def gnorm_of(state):
        return jnp.linalg.norm(optax.tree.get(state, "grad"))

    def cond(c):
        _, state, it, sep = c
        stop_sep = stop[0] & sep
        return (it == 0) | ((it < max_iter) & (gnorm_of(state) > tol) & ~stop_sep)

    def body(c):
        p_P, state, it, _ = c
        f, g_P = value_and_grad(p_P, state=state)
        updates, state = opt.update(g_P, state, p_P, value=f, grad=g_P, value_fn=fun)
        p_P = optax.apply_updates(p_P, updates)
        return p_P, state, it + 1, sep_fun(p_P)

    f0, g0 = jax.value_and_grad(fun)(p_P)
    # Iteration 0 is forced by `cond`; skip it when the start already meets the tolerance.
    done0 = (jnp.linalg.norm(g0) <= tol) | (stop[0] & sep_fun(p_P)) | stop[1]
    state = opt.init(p_P)
    p_out, _, it, _ = jax.lax.cond(
        done0,
        lambda: (p_P, state, zero, jnp.asarray(False)),
        lambda: jax.lax.while_loop(cond, body, (p_P, state, zero, jnp.asarray(False))),
    )
    del f0
    return p_out, it, zero, jnp.asarray(False)


def _problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype=None):
    """The objective, the separation test and the Hessian's objective of one lambda, on flat
    parameters. ``hvp_dtype`` (a dtype name; None: the data's): the dtype the Hessian-vector
    products run in (``(fun, dtype)``, data and lambda cast to it)."""

    def fun(p_P):
        return model.loss(unravel(p_P), x_ND, y_N, l2, mask_N)[0]

    def sep_fun(p_P):
        return _separated(model, unravel(p_P), x_ND, y_N, mask_N)

    hdtype = x_ND.dtype if hvp_dtype is None else jnp.dtype(hvp_dtype)
    if hdtype == x_ND.dtype:
        return fun, sep_fun, (fun, hdtype)
    unravel_h = _unravel_for(model, hdtype)
    x_h = x_ND.astype(hdtype)
    mask_h = None if mask_N is None else mask_N.astype(hdtype)
    l2_h = jnp.asarray(l2).astype(hdtype)

    def hess(p_P):
        return model.loss(unravel_h(p_P), x_h, y_N, l2_h, mask_h)[0]

    return fun, sep_fun, (hess, hdtype)


def _result(model, unravel, p_P, it, hvps, stalled, x_ND, y_N, l2, mask_N, tol, certified):
    """The ``SolveResult`` of one lambda at its last iterate."""
    params = unravel(p_P)
    (f, ce), g = jax.value_and_grad(lambda p: model.loss(p, x_ND, y_N, l2, mask_N), has_aux=True)(
        params
    )
    gnorm = jnp.linalg.norm(ravel_pytree(g)[0])
    separated = _separated(model, params, x_ND, y_N, mask_N)
    none = (l2 == 0) & (separated | certified)
    converged = (gnorm <= tol) & ~none
    return SolveResult(params, f, ce, gnorm, it, hvps, converged, separated, stalled, none)


def _solve_impl(model, method, max_iter, max_cg_iter, hvp_dtype, params0, x_ND, y_N, l2, mask_N,
                tol):  # fmt: skip
    """``solve`` on arrays already cast to one dtype (traceable; no validation)."""
    p0_P, unravel = ravel_pytree(params0)
    dtype = p0_P.dtype
    tol = jnp.asarray(tol, dtype)
    l2 = jnp.asarray(l2, dtype)
    fun, sep_fun, hess_fun = _problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype)
    certified = _one_class_certificate(model, params0, x_ND, y_N, mask_N)
    stop = (l2 == 0, (l2 == 0) & certified)
    if method == "newton_cg":
        p_P, it, hvps, stalled = _newton_cg(
            fun, sep_fun, hess_fun, p0_P, tol, stop, max_iter, max_cg_iter
        )
    else:
        p_P, it, hvps, stalled = _lbfgs(fun, sep_fun, p0_P, tol, stop, max_iter)
    return _result(model, unravel, p_P, it, hvps, stalled, x_ND, y_N, l2, mask_N, tol, certified)


_STATIC = ("model", "method", "max_iter", "max_cg_iter", "hvp_dtype")
_solve_jit = jax.jit(_solve_impl, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "batched_params"))
def _solve_path_jit(
    model, method, max_iter, max_cg_iter, hvp_dtype, params0, x_ND, y_N, l2_L, mask_N, tol,
    batched_params,
):  # fmt: skip
    one = functools.partial(_solve_impl, model, method, max_iter, max_cg_iter, hvp_dtype)
    in_axes = (0 if batched_params else None, None, None, 0, None, None)
    return jax.vmap(one, in_axes=in_axes)(params0, x_ND, y_N, l2_L, mask_N, tol)


# ---------------------------------------------------------------------------------------------
# The host-driven path: one compiled Newton iteration over the lambdas still running.


def _unravel_for(model, dtype):
    return ravel_pytree(_zeros_like_model(model, dtype))[1]


@functools.partial(jax.jit, static_argnames=("model",))
def _path_start_jit(model, params0_L, x_ND, y_N, l2_L, mask_N):
    return _path_start(model, params0_L, x_ND, y_N, l2_L, mask_N)


def _path_start(model, params0_L, x_ND, y_N, l2_L, mask_N):
    """Every lambda's start state, and the certificate (one, independent of lambda)."""
    template = _zeros_like_model(model, x_ND.dtype)
    certified = _one_class_certificate(model, template, x_ND, y_N, mask_N)

    def one(params0, l2):
        p0_P, unravel = ravel_pytree(params0)
        fun, sep_fun, _ = _problem(model, unravel, x_ND, y_N, l2, mask_N)
        return _newton_start(fun, sep_fun, p0_P)

    return jax.vmap(one)(params0_L, l2_L), certified


@functools.partial(jax.jit, static_argnames=("model", "max_cg_iter", "hvp_dtype"))
def _path_iteration_jit(model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype=None):
    return _path_iteration(model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype)


def _path_iteration(model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype=None):
    """One Newton-CG iteration of each of B lanes (compiled once per block size B)."""
    unravel = _unravel_for(model, x_ND.dtype)

    def one(c, l2):
        fun, sep_fun, hess_fun = _problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype)
        return _newton_iteration(fun, sep_fun, hess_fun, c, max_cg_iter)

    return jax.vmap(one)(c_B, l2_B)


@functools.partial(jax.jit, static_argnames=("model",))
def _path_result_jit(model, c_L, x_ND, y_N, l2_L, mask_N, tol, certified):
    unravel = _unravel_for(model, x_ND.dtype)

    def one(c, l2):
        return _result(
            model, unravel, c.p_P, c.it, c.hvps, c.stalled, x_ND, y_N, l2, mask_N, tol, certified
        )

    return jax.vmap(one)(c_L, l2_L)


def _block_size(active: int, total: int) -> int:
    """The smallest block that holds ``active`` lanes: a power of two below ``total``, or
    ``total`` (so at most log2(L) + 1 programs compile)."""
    size = 1
    while size < active:
        size *= 2
    return min(size, total)


def _solve_path_host(model, max_iter, max_cg_iter, params0_L, x_ND, y_N, l2_L, mask_N, tol,
                     progress, hvp_dtype=None):  # fmt: skip
    """Newton-CG over a path, each lambda leaving the batch as soon as it is done."""
    t0 = time.perf_counter()
    num = int(l2_L.shape[0])
    c_dev, certified = _path_start_jit(model, params0_L, x_ND, y_N, l2_L, mask_N)
    c = _NewtonState(*(np.array(a) for a in c_dev))
    lam_L = np.asarray(l2_L)
    certified = bool(certified)
    stop = (lam_L == 0, (lam_L == 0) & certified)
    tol_host = np.asarray(tol)
    done_at = [0.0 if stop[1][i] else None for i in range(num)]
    last_log = t0
    while True:
        running = _newton_running(c, tol_host, stop, max_iter)
        now = time.perf_counter() - t0
        for i in np.flatnonzero(~running):
            done_at[i] = now if done_at[i] is None else done_at[i]
        active = np.flatnonzero(running)
        if active.size == 0:
            break
        if progress and time.perf_counter() - last_log >= PROGRESS_SECONDS:
            last_log = time.perf_counter()
            slow = active[np.argmax(c.gnorm[active])]
            log.info(
                "optimum: Newton iteration %d, ||grad|| %.2e (lambda %g, slowest), %d of %d "
                "lambdas left, %.1f s",
                int(c.it[active].max()), float(c.gnorm[slow]), float(lam_L[slow]),
                active.size, num, now,
            )  # fmt: skip
        size = _block_size(active.size, num)
        idx = np.concatenate([active, np.repeat(active[:1], size - active.size)])
        out = _path_iteration_jit(
            model,
            max_cg_iter,
            _NewtonState(*(a[idx] for a in c)),
            x_ND,
            y_N,
            jnp.asarray(lam_L[idx]),
            mask_N,
            hvp_dtype,
        )
        for mine, new in zip(c, out, strict=True):
            mine[active] = np.asarray(new)[: active.size]
    result = _path_result_jit(
        model, _NewtonState(*map(jnp.asarray, c)), x_ND, y_N, l2_L, mask_N, tol, certified
    )
    if progress:
        log.info(
            "optimum: %d lambdas in %.1f s: %s",
            num,
            time.perf_counter() - t0,
            "; ".join(
                f"lambda {lam_L[i]:g} "
                + (
                    "no finite optimum (certified, not iterated)"
                    if stop[1][i]
                    else f"{int(c.it[i])} iterations, {int(c.hvps[i])} HVPs, done at "
                    f"{done_at[i]:.1f} s"
                )
                for i in range(num)
            ),
        )
    return result


# ---------------------------------------------------------------------------------------------
# Public API.


def solve(
    model,
    params0: Any,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2,
    *,
    mask_N: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    method: str = "newton_cg",
    max_cg_iter: int = DEFAULT_MAX_CG_ITER,
    dtype=jnp.float64,
    hvp_dtype=None,
) -> SolveResult:
    """Minimises the model's objective ``model.loss(params, x_ND, y_N, l2, mask_N)[0]``.

    Pure and traceable (options static): ``jax.vmap(lambda l: solve(m, p0, x, y, l).objective)``
    works; ``solve_path`` does this for a whole path.

    Args:
      model: a ``Model`` of kind "logistic" or "softmax" (``jaxlr.core.objective.make_model`` or
        ``jaxlr.engine.train.model_for(config, D, dtype)``; its own dtype does not matter).
      params0: start (warm start), a pytree like ``model.init(key)``; None for zeros.
      x_ND, y_N: the full training set (``y_N`` integer labels; binary: 0/1).
      l2: lambda >= 0 (scalar; traced under ``vmap``).
      mask_N: optional 0/1 example weights (padding).
      tol: stop when ``||grad f||_2 <= tol`` (absolute); default ``DEFAULT_TOL[dtype]``.
      max_iter: the most Newton (or L-BFGS) iterations.
      method: "newton_cg" (default) or "lbfgs".
      max_cg_iter: the most Hessian-vector products per Newton iteration.
      dtype: float64 (default; needs ``jax_enable_x64``) or float32; data and parameters
        are cast to it.
      hvp_dtype: the dtype of the Hessian-vector products inside CG (None: ``HVP_DTYPE``,
        float32). Objective, gradients, line search and the stopping test stay in ``dtype``,
        so the tolerance means the same; the products only shape the Newton step.

    Returns:
      ``SolveResult`` of scalars.

    Raises:
      ValueError: a model that is not convex (MLP), an unknown method, a bad tol,
        max_iter, l2 or data shape, or float64 without 64-bit JAX; an
        ``jaxlr.core.inputs.InputError`` (a ValueError) for labels the model cannot
        represent (not integers in [0, K)) or features that are not finite.
    """
    dtype, common = _checked_inputs(
        "solve", model, x_ND, y_N, mask_N, l2, 0, tol, max_iter, method, max_cg_iter, dtype,
        hvp_dtype,
    )  # fmt: skip
    params0 = _zeros_like_model(model, dtype) if params0 is None else _cast(params0, dtype)
    return _solve_jit(params0=params0, l2=jnp.asarray(l2).astype(dtype), **common)


def _checked_inputs(where, model, x_ND, y_N, mask_N, l2, l2_ndim, tol, max_iter, method,
                    max_cg_iter, dtype, hvp_dtype=None):  # fmt: skip
    """Checks the arguments shared by `solve` and `solve_path`; returns (dtype, the
    keyword arguments of the compiled solvers other than params0 and lambda)."""
    _check_model(model, where)
    _check_options(where, method, max_iter, max_cg_iter)
    dtype = _resolve_dtype(where, dtype)
    tol = _resolve_tol(where, tol, dtype)
    _check_l2(where, l2, l2_ndim)
    _check_data(where, x_ND, y_N, mask_N)
    hvp_dtype = jnp.dtype(HVP_DTYPE if hvp_dtype is None else hvp_dtype)
    if hvp_dtype.name not in DEFAULT_TOL:
        raise ValueError(f"{where}: hvp_dtype must be float32 or float64, got {hvp_dtype.name!r}")
    _check_values(where, model, x_ND, y_N)
    return dtype, dict(
        model=model,
        method=method,
        max_iter=int(max_iter),
        max_cg_iter=int(max_cg_iter),
        hvp_dtype=hvp_dtype.name,
        x_ND=jnp.asarray(x_ND).astype(dtype),
        y_N=jnp.asarray(y_N),
        mask_N=None if mask_N is None else jnp.asarray(mask_N).astype(dtype),
        tol=jnp.asarray(tol).astype(dtype),
    )


def solve_path(
    model,
    x_ND: jax.Array,
    y_N: jax.Array,
    l2_L,
    *,
    params0: Any = None,
    mask_N: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    method: str = "newton_cg",
    max_cg_iter: int = DEFAULT_MAX_CG_ITER,
    dtype=jnp.float64,
    hvp_dtype=None,
    progress: bool = True,
) -> SolveResult:
    """Solves a whole regularization path; each lambda stops as soon as it is done.

    "newton_cg": a host loop over Newton iterations; each runs one compiled, vmapped
    iteration on the lambdas still running, compacted into a block of a power-of-two size
    (or L), so a lambda that has converged, stalled or is certified to have no finite optimum
    costs nothing more. Each lambda takes the same iterations as ``solve`` would. "lbfgs":
    ``jit(vmap(solve))`` (every lambda runs as long as the slowest). A path of a new set of
    lambdas of the same length reuses the compiled functions.

    Args:
      model, x_ND, y_N, mask_N, tol, max_iter, method, max_cg_iter, dtype, hvp_dtype: as in
        ``solve``.
      l2_L: the L lambdas (1-D, each >= 0).
      params0: None (zeros for every lambda), one pytree shared by every lambda, or a
        pytree whose leaves carry a leading L axis (a warm start per lambda, e.g. the
        ``params`` of an earlier ``solve_path`` or of trained runs).
      progress: "newton_cg" logs (``jaxlr.core.solver``, INFO) the iteration, the slowest
        lambda's gradient norm and the lambdas left at most every ``PROGRESS_SECONDS``, and
        one line with the total time and each lambda's iterations.

    Returns:
      ``SolveResult`` whose fields all have a leading axis L.

    Raises:
      ValueError: as ``solve``; also when ``params0`` fits neither layout.
    """
    where = "solve_path"
    dtype, common = _checked_inputs(
        where, model, x_ND, y_N, mask_N, l2_L, 1, tol, max_iter, method, max_cg_iter, dtype,
        hvp_dtype,
    )  # fmt: skip
    num = int(np.shape(l2_L)[0])
    template = _zeros_like_model(model, dtype)
    if params0 is None:
        params0, batched = template, False
    else:
        params0 = _cast(params0, dtype)
        shapes = [np.shape(a) for a in jax.tree.leaves(params0)]
        want = [np.shape(a) for a in jax.tree.leaves(template)]
        if jax.tree.structure(params0) != jax.tree.structure(template):
            raise ValueError(
                f"{where}: params0 has structure {jax.tree.structure(params0)}, expected "
                f"{jax.tree.structure(template)}"
            )
        if shapes == want:
            batched = False
        elif shapes == [(num, *s) for s in want]:
            batched = True
        else:
            raise ValueError(
                f"{where}: params0 leaf shapes {shapes} are neither {want} (shared) nor "
                f"with a leading axis of {num} (one per lambda)"
            )
    l2_L = jnp.asarray(l2_L).astype(dtype)
    if method == "lbfgs":
        return _solve_path_jit(params0=params0, l2_L=l2_L, batched_params=batched, **common)
    if not batched:
        params0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (num, *a.shape)), params0)
    return _solve_path_host(
        common["model"],
        common["max_iter"],
        common["max_cg_iter"],
        params0,
        common["x_ND"],
        common["y_N"],
        l2_L,
        common["mask_N"],
        common["tol"],
        progress,
        common["hvp_dtype"],
    )


# ---------------------------------------------------------------------------------------------
# Host-side report for experiments.


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

    Returns:
      ``OptimumReport``; ``rows[s]`` has the keys "l2", "optimum_objective" (the solver's
      last objective: not an optimum when "converged" is False), "optimum_cross_entropy",
      "gap" (final objective - optimum; None without ``final_objectives`` or when the solve
      did not converge), "lr" (None without ``learning_rates``), "lr_limit" (2 / h_max at
      the optimum), "lr_limit_init" (at zero parameters), "lr_over_limit" (lr / lr_limit),
      "grad_norm", "iterations", "converged", "separated", "no_finite_optimum" (lambda = 0
      and every example strictly correctly classified: certified), "weight_norm" (L2 norm
      of the optimum's weights).
    """
    _check_model(model, "optimum_report")
    _check_data("optimum_report", x_ND, y_N, mask_N)
    _check_values("optimum_report", model, x_ND, y_N)
    l2_S = np.asarray(l2_S, dtype=np.float64).reshape(-1)
    num = int(l2_S.size)
    _check_l2("optimum_report", l2_S, 1)
    lrs = _optional(learning_rates, num, "learning_rates")
    finals = _optional(final_objectives, num, "final_objectives")
    l2_L, index_S = np.unique(l2_S, return_inverse=True)
    x64 = jnp.dtype(dtype) == jnp.float64
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
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
            progress=progress,
        )
        x = jnp.asarray(x_ND).astype(dtype)
        mask = None if mask_N is None else jnp.asarray(mask_N).astype(dtype)
        y = jnp.asarray(y_N)
        lam_L = jnp.asarray(l2_L).astype(dtype)
        t0 = time.perf_counter()
        # Lanczos (curvature.lr_limit's default), one lambda at a time: each stops at its own
        # count (tdt4265_task4: 13-18 products at the optima, where power iteration took
        # 72-394), where a vmapped loop would run every lambda as long as the slowest.
        limits = jnp.concatenate(
            [
                _limits(model, jax.tree.map(lambda a, i=i: a[i : i + 1], path.params), x, y,
                        lam_L[i : i + 1], mask, key)
                for i in range(len(l2_L))
            ]
        )  # fmt: skip
        zeros = _zeros_like_model(model, jnp.dtype(dtype))
        limits_init = _limits(model, zeros, x, y, lam_L, mask, key, batched_params=False)
        path_np = jax.tree.map(np.asarray, path)
        limits = np.asarray(limits, np.float64)
        if progress:
            log.info(
                "optimum: gradient-descent limits of %d lambdas in %.1f s",
                len(l2_L),
                time.perf_counter() - t0,
            )
        limits_init = np.asarray(limits_init, np.float64)
    norms = [
        float(np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in ws)))
        for ws in (
            losses.l2_weights(jax.tree.map(lambda a, i=i: a[i], path_np.params), include_bias)
            for i in range(len(l2_L))
        )
    ]
    rows = []
    for s in range(num):
        i = int(index_S[s])
        opt = float(path_np.objective[i])
        converged = bool(path_np.converged[i])
        lr = lrs[s]
        rows.append(
            {
                "l2": float(l2_S[s]),
                "optimum_objective": opt,
                "optimum_cross_entropy": float(path_np.cross_entropy[i]),
                "gap": None if finals[s] is None or not converged else finals[s] - opt,
                "lr": lr,
                "lr_limit": float(limits[i]),
                "lr_limit_init": float(limits_init[i]),
                "lr_over_limit": None if lr is None else lr / float(limits[i]),
                "grad_norm": float(path_np.grad_norm[i]),
                "iterations": int(path_np.iterations[i]),
                "converged": converged,
                "separated": bool(path_np.separated[i]),
                "no_finite_optimum": bool(path_np.separated[i]) and float(l2_S[s]) == 0.0,
                "weight_norm": norms[i],
            }
        )
    return OptimumReport(rows, l2_L, path)


@functools.partial(jax.jit, static_argnames=("model", "batched_params"))
def _limits(model, params, x_ND, y_N, l2_L, mask_N, key, batched_params=True):
    def one(p, l2):
        return curvature.lr_limit(model, p, x_ND, y_N, l2, mask_N, key=key)

    return jax.vmap(one, in_axes=(0 if batched_params else None, 0))(params, l2_L)
