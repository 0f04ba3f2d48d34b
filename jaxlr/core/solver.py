"""The exact optimum of the convex linear models: full-batch Newton-CG (or L-BFGS) in float64.

Logistic and softmax regression minimise a convex objective, ``mean cross-entropy +
lambda * R(w)``, so every training run has a true optimum to measure it against. ``solve``
finds it for the model's own objective (``model.loss``: either L2 convention, bias
penalised or not, the same function training minimises) and ``solve_path`` solves a whole
regularization path in one compiled call.

Method ("newton_cg", the default): truncated Newton. Each iteration linearises the gradient
at the current point (``jax.linearize`` of ``jax.grad``: the Hessian-vector product
``jvp(grad f)``, one forward and one backward pass per product), solves ``H d = -g`` by
conjugate gradients to the residual ``min(0.5, sqrt(||g||)) ||g||`` (the forcing sequence of
Nocedal & Wright, Algorithm 7.1, which gives superlinear convergence; never below ``0.1
tol``; at most ``max_cg_iter`` products), then backtracks from the full step ``t = 1`` by
halving until the Armijo condition ``f(p + t d) <= f(p) + 1e-4 t g.d`` holds. Close to the
optimum the decrease falls below the rounding of ``f``, so a step is also accepted when
``f`` rises by no more than ``100 eps |f|`` while the gradient norm falls (a relaxation in
the spirit of Hager & Zhang's approximate Wolfe conditions). "lbfgs": optax's L-BFGS (memory
10) with its zoom line search; it needs many more iterations and is kept as an independent
cross-check.

Preconditioning (``precondition=True``, the default): CG runs on ``M^-1 H`` with ``M`` the
Kronecker approximation ``A (x) S + lambda r I`` of the Hessian (``jaxlr.core.kron``: the
Gram of the inputs, eigendecomposed once per data set, times the mean output curvature at
the current point), updated by L-BFGS from the first ``newton.QN_MEMORY`` pairs
``(s, H s)`` of the previous Newton iteration's CG (Morales & Nocedal, 2000). On
``tdt4265_task4`` (20,000 x 785, ten classes) it cuts the products of the five lambdas from
940 to about 270; the iterates, and so the optimum up to ``tol``, do not depend on it.

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
also checked for a one-class feature (``newton.one_class_certificate``: a feature above its
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

What a sweep reports beside its trained points (optimum, gap, gradient-descent limit per
point, and the compiles and data work done ahead of it) is ``jaxlr.core.optimum``.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr.core import kron, newton, newton_path
from jaxlr.core.inputs import check_finite, check_labels, format_number
from jaxlr.core.newton import SolveResult

log = logging.getLogger("jaxlr.solver")

__all__ = [
    "CONVEX_KINDS",
    "DEFAULT_TOL",
    "METHODS",
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


# ---------------------------------------------------------------------------------------------
# Validation (host side; traced values are not checked).


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_model(model, where: str) -> None:
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


def check_l2(where: str, l2, ndim: int) -> None:
    if not _is_concrete(l2):
        return
    a = np.asarray(l2, dtype=np.float64)
    if a.ndim != ndim or (ndim == 1 and a.size == 0):
        what = "a scalar" if ndim == 0 else "a non-empty 1-D array"
        raise ValueError(f"{where}: l2 must be {what}, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        shown = format_number(np.asarray(l2))  # as given: 0.01, not a float32's 0.00999...
        raise ValueError(f"{where}: l2 must be finite and >= 0, got {shown}")


def check_data(where: str, x_ND, y_N, mask_N) -> None:
    xs, ys = np.shape(x_ND), np.shape(y_N)
    if len(xs) != 2:
        raise ValueError(f"{where}: x_ND must have rank 2 [N, D], got shape {xs}")
    if len(ys) < 1 or ys[0] != xs[0]:
        raise ValueError(f"{where}: y_N has shape {ys}, expected {xs[0]} labels for x_ND {xs}")
    if mask_N is not None and np.shape(mask_N) != (xs[0],):
        raise ValueError(f"{where}: mask_N has shape {np.shape(mask_N)}, expected ({xs[0]},)")


def check_values(where: str, model, x_ND, y_N) -> None:
    """Labels the model can represent and finite features (host values; one pass each)."""
    k = 2 if model.kind == "logistic" else int(model.num_classes)
    check_labels(y_N, k, name="y_N", where=where, model=model.kind)
    check_finite(x_ND, name="x_ND", where=where)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tree)


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
    precondition: bool = True,
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
      precondition: precondition CG with the Kronecker approximation of the Hessian
        (``jaxlr.core.kron``; default) or not (plain CG); "newton_cg" only.

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
    params0 = newton.zeros_like_model(model, dtype) if params0 is None else _cast(params0, dtype)
    return newton.solve_jit(
        params0=params0, l2=jnp.asarray(l2).astype(dtype), precondition=bool(precondition),
        **common,
    )  # fmt: skip


def _checked_inputs(where, model, x_ND, y_N, mask_N, l2, l2_ndim, tol, max_iter, method,
                    max_cg_iter, dtype, hvp_dtype=None):  # fmt: skip
    """Checks the arguments shared by `solve` and `solve_path`; returns (dtype, the
    keyword arguments of the compiled solvers other than params0 and lambda)."""
    check_model(model, where)
    _check_options(where, method, max_iter, max_cg_iter)
    dtype = _resolve_dtype(where, dtype)
    tol = _resolve_tol(where, tol, dtype)
    check_l2(where, l2, l2_ndim)
    check_data(where, x_ND, y_N, mask_N)
    hvp_dtype = jnp.dtype(HVP_DTYPE if hvp_dtype is None else hvp_dtype)
    if hvp_dtype.name not in DEFAULT_TOL:
        raise ValueError(f"{where}: hvp_dtype must be float32 or float64, got {hvp_dtype.name!r}")
    check_values(where, model, x_ND, y_N)
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
    precondition: bool | kron.Basis = True,
    progress: bool = True,
    data_views: newton_path.Views | None = None,
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
      precondition: as in ``solve``; also a ``kron.Basis`` already built for these data
        (``newton.make_basis_jit``), which is then not rebuilt.
      progress: "newton_cg" logs (``jaxlr.core.solver``, INFO) the iteration, the slowest
        lambda's gradient norm and the lambdas left at most every ``PROGRESS_SECONDS``, and
        one line with the total time and each lambda's iterations.
      data_views: the stored copies of the data the preconditioned path reads
        (``newton_path.views(x_ND in dtype, hvp_dtype)``), when the caller already made them
        (``optimum_report`` shares them with the limits); made here if None.

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
    template = newton.zeros_like_model(model, dtype)
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
        return newton.solve_path_jit(
            params0=params0, l2_L=l2_L, batched_params=batched, precondition=False, **common
        )
    basis = precondition if isinstance(precondition, kron.Basis) else None
    if basis is None and precondition:
        basis = newton.make_basis_jit(common["model"], common["x_ND"], common["mask_N"])
    if not batched:
        params0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (num, *a.shape)), params0)
    return newton_path.solve_path_host(
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
        basis,
        data_views,
    )
