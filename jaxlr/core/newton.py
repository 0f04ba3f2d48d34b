"""The compiled Newton-CG and L-BFGS iterations behind ``jaxlr.core.solver``, on flat parameters.

``jaxlr.core.solver`` validates the inputs and holds the public API (``solve``, ``solve_path``,
``optimum_report``); this module holds what runs: the separation test and the one-class
certificate, truncated CG, the Newton iteration with its line search, optax's L-BFGS, and the
jitted single solve and vmapped path (``jaxlr.core.newton_path`` holds the host-driven path
over the lambdas still running). The method, the stopping rule and the certificates are
described in ``jaxlr.core.solver``'s docstring. Inputs are trusted here: arrays already cast
to one dtype, options already checked.

Dimension legend:
  N  examples
  D  input features (785 for MNIST with the bias trick)
  K  classes
  P  scalar parameters (all leaves flattened)
  L  points of a regularization path (distinct lambdas)
  B  lanes of one compiled path iteration (a block of the lambdas still running)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxlr.core import kron

ARMIJO_C1 = 1e-4
MAX_BACKTRACKS = 40
# Relative rise of f tolerated by the approximate Armijo test, in units of the dtype's eps.
APPROX_RISE_EPS = 100.0
LBFGS_MEMORY = 10
# CG is never asked for a residual below this fraction of the solve's tolerance.
FORCING_FLOOR = 0.1
QN_MEMORY = 16


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


def zeros_like_model(model, dtype):
    """Zero parameters of `model`'s shapes in `dtype` (no key needed: only the shapes)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, dtype), shapes)


# ---------------------------------------------------------------------------------------------
# The algorithms, on flat parameter vectors p_P.


def is_separated(model, params, x_ND, y_N, mask_N) -> jax.Array:
    """Every unmasked example strictly correctly classified (a positive margin)."""
    return separated_from_logits(model.apply(params, x_ND), y_N, mask_N)


def separated_from_logits(logits, y_N, mask_N) -> jax.Array:
    """``is_separated`` from the logits (rank 1: logistic)."""
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


def one_class_certificate(model, params0, x_ND, y_N, mask_N) -> jax.Array:
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


def cg(matvec, g_P, gnorm, max_cg_iter, precond=None, floor=0.0, memory=0):
    """Truncated, preconditioned CG for ``H d = -g`` to ``||H d + g|| <= eta ||g||``,
    ``eta = min(0.5, sqrt(||g||))``.

    ``precond``: ``r_P -> M^-1 r_P`` for a symmetric positive definite ``M`` close to ``H``
    (``jaxlr.core.kron.precondition``), or None. ``floor``: the residual is never asked
    below it (``FORCING_FLOOR`` times the solve's tolerance: a step whose linear model
    leaves a gradient far below the tolerance buys nothing). Stops early on non-positive
    curvature (then ``d = -g`` if it happens at once). ``memory``: keep the first that many
    pairs ``(s, H s)`` of search directions and their products. Returns ``(d_P, products,
    s_MP, y_MP, pairs)``.
    """
    apply = (lambda r_P: r_P) if precond is None else precond
    target = jnp.maximum(jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm, floor)
    r_P = -g_P
    z_P = apply(r_P)
    rz = jnp.vdot(r_P, z_P)
    rr = jnp.vdot(r_P, r_P)

    def cond(c):
        rr, k, done = c[4:7]
        return (k < max_cg_iter) & ~done & (jnp.sqrt(rr) > target)

    m = max(int(memory), 1)

    def body(c):
        d_P, r_P, s_P, rz, rr, k, _, s_MP, y_MP = c
        hs_P = matvec(s_P)
        slot = jnp.minimum(k, m - 1)
        keep = k < memory
        # One row written in place (a select of the whole memory would copy it every step).
        s_MP = s_MP.at[slot].set(jnp.where(keep, s_P, s_MP[slot]))
        y_MP = y_MP.at[slot].set(jnp.where(keep, hs_P, y_MP[slot]))
        shs = jnp.vdot(s_P, hs_P)
        flat = shs <= 0
        alpha = rz / jnp.where(flat, 1, shs)
        d_new = d_P + alpha * s_P
        r_new = r_P - alpha * hs_P
        z_new = apply(r_new)
        rz_new = jnp.vdot(r_new, z_new)
        s_new = z_new + (rz_new / rz) * s_P
        d_flat = jnp.where(k == 0, -g_P, d_P)
        return (
            jnp.where(flat, d_flat, d_new),
            jnp.where(flat, r_P, r_new),
            jnp.where(flat, s_P, s_new),
            jnp.where(flat, rz, rz_new),
            jnp.where(flat, rr, jnp.vdot(r_new, r_new)),
            k + 1,
            flat,
            s_MP,
            y_MP,
        )

    empty = jnp.zeros((m, g_P.shape[0]), g_P.dtype)
    init = (jnp.zeros_like(g_P), r_P, z_P, rz, rr, jnp.asarray(0, jnp.int32), jnp.asarray(False),
            empty, empty)  # fmt: skip
    d_P, *_, k, flat, s_MP, y_MP = jax.lax.while_loop(cond, body, init)
    pairs = jnp.minimum(k - flat.astype(k.dtype), memory)
    return d_P, k, s_MP, y_MP, pairs


def quasi_newton(apply0, s_MP, y_MP, pairs):
    """``r -> M^-1 r`` of the L-BFGS update of ``apply0`` by the pairs ``(s_i, y_i = H s_i)``
    (Morales & Nocedal, 2000: the pairs of one Newton iteration's CG precondition the next)."""
    m = s_MP.shape[0]
    sy_M = jnp.sum(s_MP * y_MP, axis=1)
    valid_M = (jnp.arange(m) < pairs) & (sy_M > 0)
    rho_M = jnp.where(valid_M, 1 / jnp.where(valid_M, sy_M, 1), 0)

    def backward(q_P, pair):
        s_P, y_P, rho = pair
        alpha = rho * jnp.vdot(s_P, q_P)
        return q_P - alpha * y_P, alpha

    def forward(z_P, pair):
        s_P, y_P, rho, alpha = pair
        beta = rho * jnp.vdot(y_P, z_P)
        return z_P + (alpha - beta) * s_P, None

    def apply(r_P):
        # The two loops as scans (not unrolled): a small program however many pairs are kept.
        q_P, alpha_M = jax.lax.scan(backward, r_P, (s_MP, y_MP, rho_M), reverse=True)
        z_P, _ = jax.lax.scan(forward, apply0(q_P), (s_MP, y_MP, rho_M, alpha_M))
        return z_P

    return apply


class NewtonState(NamedTuple):
    """The Newton-CG loop's carry (scalars; a leading lane axis in the host-driven path)."""

    p_P: jax.Array
    f: jax.Array
    g_P: jax.Array
    gnorm: jax.Array
    it: jax.Array
    hvps: jax.Array
    stalled: jax.Array
    separated: jax.Array
    s_KK: jax.Array
    mem_s: jax.Array
    mem_y: jax.Array
    mem_n: jax.Array


def newton_start(prob: Problem, p_P) -> NewtonState:
    """The state at ``p_P``: objective, gradient and the probe (``Problem``)."""
    f, g_P, logits = prob.value_and_grad(p_P)
    zero = jnp.asarray(0, jnp.int32)
    empty = jnp.zeros((max(QN_MEMORY, 1), p_P.shape[0]), p_P.dtype)
    separated, s_KK = prob.probe(p_P, logits)
    return NewtonState(
        p_P, f, g_P, jnp.linalg.norm(g_P), zero, zero, jnp.asarray(False), separated, s_KK,
        empty, empty, zero,
    )  # fmt: skip


def newton_running(c: NewtonState, tol, stop, max_iter):
    """Whether the loop takes another iteration; ``stop``: lambda 0 with separated iterates
    (``stop`` & ``separated``) or an up-front certificate (``stop`` alone) ends it."""
    xp = jnp if isinstance(c.f, jax.Array) else np
    stop_now = stop[1] | (stop[0] & c.separated)
    return (c.gnorm > tol) & (c.it < max_iter) & ~c.stalled & ~stop_now & xp.isfinite(c.f)


def hessian_matvec(hess_fun, p_P):
    """``v -> H(p) v`` from ``hess_fun`` (the objective in the Hessian dtype, on flat
    parameters), linearised once at ``p_P``; vectors in and out in ``p_P``'s dtype (the
    generic product; ``problem`` uses ``kron.hessian_matvec`` when it has a basis)."""
    fun, hdtype = hess_fun
    _, matvec = jax.linearize(jax.grad(fun), p_P.astype(hdtype))
    if hdtype == p_P.dtype:
        return matvec
    return lambda v_P: matvec(v_P.astype(hdtype)).astype(p_P.dtype)


def newton_iteration(prob: Problem, c: NewtonState, max_cg_iter, precond_at=None,
                     floor=0.0) -> NewtonState:  # fmt: skip
    """One Newton-CG iteration: CG on the HVPs at ``c.p_P`` (``prob.hvp_at``;
    preconditioned by ``precond_at(c.s_KK)`` when given), then the line search; the probe of
    the new point reads the logits of the accepted trial when ``prob.value_and_grad`` gives
    them (no pass of its own)."""
    p_P, f, g_P, gnorm = c.p_P, c.f, c.g_P, c.gnorm
    dtype = p_P.dtype
    eps_rise = APPROX_RISE_EPS * jnp.finfo(dtype).eps
    value_and_grad = prob.value_and_grad
    matvec = prob.hvp_at(p_P)
    precond, memory = None, 0
    if precond_at is not None:
        precond = quasi_newton(precond_at(c.s_KK), c.mem_s, c.mem_y, c.mem_n)
        memory = QN_MEMORY
    d_P, k, mem_s, mem_y, mem_n = cg(matvec, g_P, gnorm, max_cg_iter, precond, floor, memory)
    if not memory:  # plain CG: nothing to remember
        mem_s, mem_y, mem_n = c.mem_s, c.mem_y, c.mem_n
    slope = jnp.vdot(g_P, d_P)

    def trial(t):
        q_P = p_P + t * d_P
        fq, gq_P, logits = value_and_grad(q_P)
        gq = jnp.linalg.norm(gq_P)
        armijo = fq <= f + ARMIJO_C1 * t * slope
        approx = (fq <= f + eps_rise * jnp.abs(f)) & (gq < gnorm)
        ok = jnp.isfinite(fq) & (armijo | approx)
        return q_P, fq, gq_P, gq, logits, ok

    def ls_cond(ls):
        *_, ok, n = ls
        return ~ok & (n < MAX_BACKTRACKS)

    def ls_body(ls):
        t, *_, n = ls
        t = 0.5 * t
        return (t, *trial(t), n + 1)

    one = jnp.asarray(1, dtype)
    _, q_P, fq, gq_P, gq, logits, ok, _ = jax.lax.while_loop(
        ls_cond, ls_body, (one, *trial(one), jnp.asarray(1, jnp.int32))
    )
    if logits is None:
        p_P = jnp.where(ok, q_P, p_P)
        separated, s_KK = prob.probe(p_P, None)
    else:
        # A rejected step keeps p_P, whose probe the state already holds.
        sep_q, s_q = prob.probe(q_P, logits)
        p_P = jnp.where(ok, q_P, p_P)
        separated, s_KK = jnp.where(ok, sep_q, c.separated), jnp.where(ok, s_q, c.s_KK)
    return NewtonState(
        p_P,
        jnp.where(ok, fq, f),
        jnp.where(ok, gq_P, g_P),
        jnp.where(ok, gq, gnorm),
        c.it + 1,
        c.hvps + k,
        ~ok,
        separated,
        s_KK,
        mem_s,
        mem_y,
        mem_n,
    )


def newton_cg(prob: Problem, p_P, tol, stop, max_iter, max_cg_iter, precond_at=None):
    c = jax.lax.while_loop(
        lambda c: newton_running(c, tol, stop, max_iter),
        lambda c: newton_iteration(prob, c, max_cg_iter, precond_at, FORCING_FLOOR * tol),
        newton_start(prob, p_P),
    )
    return c.p_P, c.it, c.hvps, c.stalled


def lbfgs(fun, sep_fun, p_P, tol, stop, max_iter):
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


class Problem(NamedTuple):
    """One lambda's objective on flat parameters, for Newton-CG (``problem``).

    Attributes:
      fun: ``p_P -> f``.
      value_and_grad: ``p_P -> (f, g_P, logits)``; logits None when it does not form them.
      probe: ``(p_P, logits or None) -> (separated, S)``: the separation test and the mean
        output curvature of the preconditioner, from the logits at ``p_P`` (one pass over
        the data when they are not given).
      hvp_at: ``p_P -> (v_P -> H v_P)``.
    """

    fun: Callable
    value_and_grad: Callable
    probe: Callable
    hvp_at: Callable


def problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype=None, x_h=None, basis=None,
            xt_h=None, xt_DN=None) -> Problem:  # fmt: skip
    """The ``Problem`` of one lambda. ``hvp_dtype`` (a dtype name; None: the data's): the
    dtype the Hessian-vector products run in (data and lambda cast to it; ``x_h``: the data
    already cast, so a host loop casts once). With a ``kron.Basis`` the objective's value and
    gradient are ``kron.value_and_grad``'s, on ``xt_DN`` (``x_ND`` transposed and stored,
    made once by a host loop; default ``x_ND.T``), and the products
    ``kron.hessian_matvec``'s, on ``xt_h`` (the same for the cast data); without, autodiff
    of ``model.loss`` and ``jax.linearize`` of its gradient."""

    def fun(p_P):
        return model.loss(unravel(p_P), x_ND, y_N, l2, mask_N)[0]

    def probe(p_P, logits=None):
        if logits is None:
            logits = model.apply(unravel(p_P), x_ND)
        return (
            separated_from_logits(logits, y_N, mask_N),
            kron.output_curvature_from_logits(logits, mask_N),
        )

    def autodiff(p_P):
        return (*jax.value_and_grad(fun)(p_P), None)

    hdtype = x_ND.dtype if hvp_dtype is None else jnp.dtype(hvp_dtype)
    if x_h is None:
        x_h = x_ND if hdtype == x_ND.dtype else x_ND.astype(hdtype)
    mask_h = None if mask_N is None else mask_N.astype(hdtype)
    l2_h = jnp.asarray(l2).astype(hdtype)
    if basis is not None:
        template = zeros_like_model(model, x_ND.dtype)
        template_h = zeros_like_model(model, hdtype)
        xt_h = x_h.T if xt_h is None else xt_h
        xt_DN = x_ND.T if xt_DN is None else xt_DN

        def value_and_grad(p_P):
            return kron.value_and_grad(basis, template, x_ND, xt_DN, y_N, mask_N, l2, p_P)

        def hvp_at(p_P):
            return kron.hessian_matvec(basis, template_h, x_h, xt_h, mask_h, l2_h, p_P)

        return Problem(fun, value_and_grad, probe, hvp_at)
    if hdtype == x_ND.dtype:
        return Problem(fun, autodiff, probe, functools.partial(hessian_matvec, (fun, hdtype)))
    unravel_h = unravel_for(model, hdtype)

    def hess(p_P):
        return model.loss(unravel_h(p_P), x_h, y_N, l2_h, mask_h)[0]

    return Problem(fun, autodiff, probe, functools.partial(hessian_matvec, (hess, hdtype)))


def preconditioner(model, unravel, basis, x_ND, l2, mask_N):
    """``S -> (v_P -> M^-1 v_P)``: the Kronecker preconditioner for the mean output curvature
    ``S`` of the current point (``jaxlr.core.kron``), or None without a ``basis``."""
    if basis is None:
        return None
    template = zeros_like_model(model, x_ND.dtype)

    def at(s_KK):
        return kron.precondition(basis, s_KK, l2, template)

    return at


def make_basis(model, x_ND, mask_N):
    return kron.basis(model, zeros_like_model(model, x_ND.dtype), x_ND, mask_N)


make_basis_jit = jax.jit(make_basis, static_argnames=("model",))


def make_result(model, unravel, p_P, it, hvps, stalled, x_ND, y_N, l2, mask_N, tol, certified):
    """The ``SolveResult`` of one lambda at its last iterate."""
    params = unravel(p_P)
    (f, ce), g = jax.value_and_grad(lambda p: model.loss(p, x_ND, y_N, l2, mask_N), has_aux=True)(
        params
    )
    gnorm = jnp.linalg.norm(ravel_pytree(g)[0])
    separated = is_separated(model, params, x_ND, y_N, mask_N)
    none = (l2 == 0) & (separated | certified)
    converged = (gnorm <= tol) & ~none
    return SolveResult(params, f, ce, gnorm, it, hvps, converged, separated, stalled, none)


def solve_impl(model, method, max_iter, max_cg_iter, hvp_dtype, precondition, params0, x_ND, y_N,
                l2, mask_N, tol):  # fmt: skip
    """``solve`` on arrays already cast to one dtype (traceable; no validation)."""
    p0_P, unravel = ravel_pytree(params0)
    dtype = p0_P.dtype
    tol = jnp.asarray(tol, dtype)
    l2 = jnp.asarray(l2, dtype)
    basis = make_basis(model, x_ND, mask_N) if precondition and method == "newton_cg" else None
    prob = problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype, basis=basis)
    certified = one_class_certificate(model, params0, x_ND, y_N, mask_N)
    stop = (l2 == 0, (l2 == 0) & certified)
    if method == "newton_cg":
        precond_at = preconditioner(model, unravel, basis, x_ND, l2, mask_N)
        p_P, it, hvps, stalled = newton_cg(prob, p0_P, tol, stop, max_iter, max_cg_iter, precond_at)
    else:
        sep = lambda p: prob.probe(p)[0]  # noqa: E731
        p_P, it, hvps, stalled = lbfgs(prob.fun, sep, p0_P, tol, stop, max_iter)
    return make_result(
        model, unravel, p_P, it, hvps, stalled, x_ND, y_N, l2, mask_N, tol, certified
    )


_STATIC = ("model", "method", "max_iter", "max_cg_iter", "hvp_dtype", "precondition")
solve_jit = jax.jit(solve_impl, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "batched_params"))
def solve_path_jit(
    model, method, max_iter, max_cg_iter, hvp_dtype, precondition, params0, x_ND, y_N, l2_L,
    mask_N, tol, batched_params,
):  # fmt: skip
    one = functools.partial(
        solve_impl, model, method, max_iter, max_cg_iter, hvp_dtype, precondition
    )
    in_axes = (0 if batched_params else None, None, None, 0, None, None)
    return jax.vmap(one, in_axes=in_axes)(params0, x_ND, y_N, l2_L, mask_N, tol)


def unravel_for(model, dtype):
    return ravel_pytree(zeros_like_model(model, dtype))[1]
