"""The host-driven regularization path behind ``jaxlr.core.solver.solve_path``.

One compiled, vmapped Newton-CG iteration (``jaxlr.core.newton``) runs over the lambdas still
running, compacted into a block of a power-of-two size, so a lambda that has converged,
stalled or is certified to have no finite optimum costs nothing more; the stored copies of
the data it reads (``Views``); and ``compile_path_host``, which compiles those programs ahead
from shapes only (``optimum.prepare``). Inputs are trusted here, as in ``jaxlr.core.newton``.

Dimension legend: as ``jaxlr.core.newton`` (N, D, K, P, L; B the lanes of one compiled
iteration).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlr.core.newton import (
    FORCING_FLOOR,
    NewtonState,
    make_result,
    newton_iteration,
    newton_running,
    newton_start,
    one_class_certificate,
    preconditioner,
    problem,
    unravel_for,
    zeros_like_model,
)

# At most one progress line this often (seconds) during a host-driven path.
PROGRESS_SECONDS = 5.0

log = logging.getLogger("jaxlr.solver")


class Views(NamedTuple):
    """The copies of the data a host-driven path reads (``views``): ``xt_DN``, ``x_ND``
    transposed and stored; ``x_h`` and ``xt_h``, the data cast to the HVP dtype and its
    transpose (the same arrays as ``x_ND`` and ``xt_DN`` when that dtype is the data's)."""

    xt_DN: jax.Array
    x_h: jax.Array
    xt_h: jax.Array


def views(x_ND, hvp_dtype=None) -> Views:
    """Makes the ``Views`` of ``x_ND`` once (a path, and the limits after it, reuse them)."""
    hdtype = x_ND.dtype if hvp_dtype is None else jnp.dtype(hvp_dtype)
    xt_DN = transposed(x_ND)
    if hdtype == x_ND.dtype:
        return Views(xt_DN, x_ND, xt_DN)
    x_h = x_ND.astype(hdtype)
    return Views(xt_DN, x_h, transposed(x_h))


@functools.partial(jax.jit, static_argnames=("model",))
def path_start_jit(model, params0_L, x_ND, y_N, l2_L, mask_N, basis=None, xt_DN=None):
    return path_start(model, params0_L, x_ND, y_N, l2_L, mask_N, basis, xt_DN)


def path_start(model, params0_L, x_ND, y_N, l2_L, mask_N, basis=None, xt_DN=None):
    """Every lambda's start state, and the certificate (one, independent of lambda)."""
    template = zeros_like_model(model, x_ND.dtype)
    certified = one_class_certificate(model, template, x_ND, y_N, mask_N)

    def one(params0, l2):
        p0_P, unravel = ravel_pytree(params0)
        prob = problem(model, unravel, x_ND, y_N, l2, mask_N, basis=basis, xt_DN=xt_DN)
        return newton_start(prob, p0_P)

    return jax.vmap(one)(params0_L, l2_L), certified


@functools.partial(jax.jit, static_argnames=("model", "max_cg_iter", "hvp_dtype"))
def path_iteration_jit(model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype=None,
                       basis=None, floor=0.0, x_h=None, xt_h=None, xt_DN=None):  # fmt: skip
    return path_iteration(
        model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype, basis, floor, x_h, xt_h,
        xt_DN,
    )  # fmt: skip


def path_iteration(model, max_cg_iter, c_B, x_ND, y_N, l2_B, mask_N, hvp_dtype=None, basis=None,
                   floor=0.0, x_h=None, xt_h=None, xt_DN=None):  # fmt: skip
    """One Newton-CG iteration of each of B lanes (compiled once per block size B);
    preconditioned, and its objective and products ``kron``'s, when a ``kron.Basis`` of the
    data is given."""
    unravel = unravel_for(model, x_ND.dtype)

    def one(c, l2):
        prob = problem(model, unravel, x_ND, y_N, l2, mask_N, hvp_dtype, x_h, basis, xt_h, xt_DN)
        precond_at = preconditioner(model, unravel, basis, x_ND, l2, mask_N)
        return newton_iteration(prob, c, max_cg_iter, precond_at, floor)

    return jax.vmap(one)(c_B, l2_B)


@functools.partial(jax.jit, static_argnames=("model",))
def path_result_jit(model, c_L, x_ND, y_N, l2_L, mask_N, tol, certified):
    unravel = unravel_for(model, x_ND.dtype)

    def one(c, l2):
        return make_result(
            model, unravel, c.p_P, c.it, c.hvps, c.stalled, x_ND, y_N, l2, mask_N, tol, certified
        )

    return jax.vmap(one)(c_L, l2_L)


@jax.jit
def transposed(x_ND):
    """``x_ND^T`` as an array of its own (row-major ``[D, N]``), for the products that read
    the data transposed."""
    return x_ND.T


def block_size(active: int, total: int) -> int:
    """The smallest block that holds ``active`` lanes: a power of two below ``total``, or
    ``total`` (so at most log2(L) + 1 programs compile)."""
    size = 1
    while size < active:
        size *= 2
    return min(size, total)


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def path_sizes(num: int, num_zero: int) -> list[int]:
    """The block sizes ``solve_path_host`` is likely to run for ``num`` lambdas of which
    ``num_zero`` are 0, largest first: those of the lambdas > 0 running and then leaving one
    by one, assuming the lambdas 0 certified up front (the one-class certificate holds on
    task4's MNIST images: 43 pixels). A larger block, for a lambda 0 that is not certified, is
    compiled when it runs."""
    first = block_size(num - num_zero, num) if num > num_zero else 1
    return sorted({block_size(a, num) for a in range(1, first + 1)}, reverse=True)


def view_specs(x_ND, hvp_dtype=None) -> Views:
    """The shapes and dtypes of ``views(x_ND, hvp_dtype)`` (``jax.ShapeDtypeStruct``), for
    compiling ahead; ``x_ND`` an array or a ``jax.ShapeDtypeStruct``."""
    return jax.eval_shape(functools.partial(views, hvp_dtype=hvp_dtype), x_ND)


def compile_path_host(model, max_cg_iter, x_ND, y_N, mask_N, num, num_zero, hvp_dtype, basis,
                      data_views=None, stopped=None):  # fmt: skip
    """Compiles, running nothing, the programs ``solve_path_host`` runs on data of these
    shapes and dtypes (``jax.ShapeDtypeStruct`` or arrays; ``basis`` likewise, or None), for
    ``num`` lambdas (``jit``'s ``lower(...).compile()``, which also fills ``jit``'s caches,
    so the later calls neither trace nor compile). The specs mirror the calls there: a
    mismatch only costs the saving, never a result. ``data_views``: ``view_specs`` of the
    data, made here if None. ``stopped``: ``() -> bool``; once True, no further program is
    started."""
    stopped = stopped or (lambda: False)
    dtype = x_ND.dtype
    template = zeros_like_model(model, dtype)
    params0_L = jax.tree.map(lambda a: _spec((num, *a.shape), dtype), template)
    l2_L = _spec((num,), dtype)
    if basis is None:  # as solve_path_host: the cast data only
        x_h = _spec(x_ND.shape, dtype if hvp_dtype is None else hvp_dtype)
        xt_h = xt_DN = None
    else:
        xt_DN, x_h, xt_h = view_specs(x_ND, hvp_dtype) if data_views is None else data_views
        transposed.lower(x_ND).compile()
        if x_h.dtype != dtype:
            transposed.lower(x_h).compile()
    start = (model, params0_L, x_ND, y_N, l2_L, mask_N, basis, xt_DN)
    path_start_jit.lower(*start).compile()
    c_L = jax.eval_shape(functools.partial(path_start, model), *start[1:])
    c_L = NewtonState(*(_spec(a.shape, a.dtype) for a in c_L[0]))
    floor, tol = _spec((), dtype), _spec((), dtype)
    for size in path_sizes(num, num_zero):
        if stopped():
            return
        c_B = NewtonState(*(_spec((size, *a.shape[1:]), a.dtype) for a in c_L))
        path_iteration_jit.lower(
            model, max_cg_iter, c_B, x_ND, y_N, _spec((size,), dtype), mask_N, hvp_dtype,
            basis, floor, x_h, xt_h, xt_DN,
        ).compile()  # fmt: skip
    if not stopped():
        path_result_jit.lower(model, c_L, x_ND, y_N, l2_L, mask_N, tol, _spec((), bool)).compile()


def solve_path_host(model, max_iter, max_cg_iter, params0_L, x_ND, y_N, l2_L, mask_N, tol,
                     progress, hvp_dtype=None, basis=None, data_views=None):  # fmt: skip
    """Newton-CG over a path, each lambda leaving the batch as soon as it is done
    (preconditioned, with ``kron``'s objective and products, with ``basis``, a ``kron.Basis``
    of the data, when given; ``data_views``: the data's ``Views``, made here if None)."""
    t0 = time.perf_counter()
    num = int(l2_L.shape[0])
    hdtype = x_ND.dtype if hvp_dtype is None else jnp.dtype(hvp_dtype)
    if basis is None:  # autodiff: no stored copies; cast once, not per iteration
        x_h = x_ND if hdtype == x_ND.dtype else x_ND.astype(hdtype)
        xt_h = xt_DN = None
    else:
        xt_DN, x_h, xt_h = views(x_ND, hvp_dtype) if data_views is None else data_views
    c_dev, certified = path_start_jit(model, params0_L, x_ND, y_N, l2_L, mask_N, basis, xt_DN)
    c = NewtonState(*(np.array(a) for a in c_dev))
    lam_L = np.asarray(l2_L)
    certified = bool(certified)
    stop = (lam_L == 0, (lam_L == 0) & certified)
    tol_host = np.asarray(tol)
    done_at = [0.0 if stop[1][i] else None for i in range(num)]
    last_log = t0
    while True:
        running = newton_running(c, tol_host, stop, max_iter)
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
        size = block_size(active.size, num)
        idx = np.concatenate([active, np.repeat(active[:1], size - active.size)])
        out = path_iteration_jit(
            model,
            max_cg_iter,
            NewtonState(*(a[idx] for a in c)),
            x_ND,
            y_N,
            jnp.asarray(lam_L[idx]),
            mask_N,
            hvp_dtype,
            basis,
            FORCING_FLOOR * tol,
            x_h,
            xt_h,
            xt_DN,
        )
        for mine, new in zip(c, out, strict=True):
            mine[active] = np.asarray(new)[: active.size]
    result = path_result_jit(
        model, NewtonState(*map(jnp.asarray, c)), x_ND, y_N, l2_L, mask_N, tol,
        np.bool_(certified),
    )  # fmt: skip
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
