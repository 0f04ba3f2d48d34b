"""Kronecker curvature of the linear models: the CG preconditioner and the exact curvature at zero.

For logistic and softmax regression the Hessian of the mean cross-entropy is

    H = (1 / M) sum_n m_n (z_n z_n^T) (x) S_n,   S_n = diag(p_n) - p_n p_n^T   (softmax),
                                                 S_n = s_n (1 - s_n)           (logistic, K' = 1)

with ``z_n`` the input (plus a constant 1 for an explicit bias), ``m_n`` the 0/1 example
weights and ``M = sum m_n``; the L2 penalty adds a diagonal ``lambda r`` (``r`` 2 for the
penalised entries of ``R = sum w^2``, 1 for ``"half"``, 0 for an unpenalised bias). Replacing
each ``S_n`` by their mean ``S`` gives ``A (x) S + lambda r_max I`` with the weighted Gram
``A = (1 / M) sum m_n z_n z_n^T``: its inverse is two small eigenbases away
(``A = U a U^T`` once per data set, ``S = V s V^T`` once per Newton iteration, a ``K' x K'``
matrix), so ``precondition`` applies it for about 2 D^2 K' flops against the 4 N D K' of a
Hessian-vector product. The approximation is exact where it matters for conditioning:
directions of pixels that are constant zero (``a = 0``) have curvature ``lambda r`` only,
and softmax's shift direction (the same vector added to every class) lies in ``S``'s null
space.

At zero parameters every ``p_n`` is uniform, so ``S_n = S_0`` for all ``n`` and the Hessian
is exactly ``A (x) S_0 + lambda diag(r)``; its largest eigenvalue is the largest of
``sigma_max(S_0) A + lambda diag(r_E)`` (``A`` positive semi-definite, so larger ``sigma`` can
only raise it): a shift of ``a_max`` when every row is penalised alike, otherwise one
symmetric eigenvalue problem of size D per lambda (``max_eigenvalue_at_zero``).

Dimension legend:
  N  examples
  D  input features (785 for MNIST with the bias trick)
  E  rows of the weight matrix: D, or D + 1 with an explicit bias
  K  outputs (K' in the text: 1 for logistic regression)
  P  scalar parameters (all leaves flattened)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlr.core import losses

__all__ = [
    "Basis",
    "basis",
    "hessian_matvec",
    "value_and_grad",
    "max_eigenvalue_at_zero",
    "mean_output_curvature",
    "output_curvature_from_logits",
    "precondition",
]


class Basis(NamedTuple):
    """The lambda-independent pieces: the Gram ``A_EE``, its eigenvalues ``a_E`` (ascending)
    and eigenvectors ``u_EE``, and the penalty's Hessian diagonal per row ``r_E``."""

    gram_EE: jax.Array
    a_E: jax.Array
    u_EE: jax.Array
    r_E: jax.Array


def _to_matrix(params) -> jax.Array:
    """The linear model's parameters as one ``E x K`` matrix (bias as the last row)."""
    w = params["w"]
    w_DK = w.reshape(w.shape[0], -1)
    if "b" not in params:
        return w_DK
    return jnp.concatenate([w_DK, params["b"].reshape(1, -1)], axis=0)


def _from_matrix(m_EK, template) -> Any:
    d = template["w"].shape[0]
    out = {"w": m_EK[:d].reshape(template["w"].shape)}
    if "b" in template:
        out["b"] = m_EK[d].reshape(template["b"].shape)
    return out


def _inputs(template, x_ND) -> jax.Array:
    if "b" not in template:
        return x_ND
    return jnp.concatenate([x_ND, jnp.ones((x_ND.shape[0], 1), x_ND.dtype)], axis=1)


def basis(model, template, x_ND, mask_N) -> Basis:
    """The Gram of the inputs and its eigenbasis, and the penalty's curvature per row.

    ``template``: zero parameters of the model in the data's dtype. The penalty's Hessian
    diagonal is read from the model's own objective (``objective(l2=1) - objective(l2=0)`` on
    one example is ``R``, a separable quadratic: its gradient at all-ones parameters is that
    diagonal), so either L2 convention and ``l2_bias`` are honoured without being told.
    """
    z_NE = _inputs(template, x_ND)
    if mask_N is None:
        zw_NE, total = z_NE, z_NE.shape[0]
    else:
        m_N = mask_N.astype(z_NE.dtype)
        zw_NE, total = z_NE * m_N[:, None], jnp.maximum(jnp.sum(m_N), 1)
    gram_EE = (zw_NE.T @ z_NE) / total
    gram_EE = 0.5 * (gram_EE + gram_EE.T)
    a_E, u_EE = jnp.linalg.eigh(gram_EE)
    one = jnp.asarray(1, x_ND.dtype)

    def penalty(p):
        x1, y1 = x_ND[:1], jnp.zeros((1,), jnp.int32)
        return model.loss(p, x1, y1, one)[0] - model.loss(p, x1, y1, 0 * one)[0]

    ones = jax.tree.map(jnp.ones_like, template)
    r_EK = _to_matrix(jax.grad(penalty)(ones))
    r_E = jnp.round(2 * r_EK[:, 0]) / 2  # exactly 0, 1 or 2; the same in every column
    return Basis(gram_EE, a_E, u_EE, r_E)


def mean_output_curvature(model, params, x_ND, mask_N) -> jax.Array:
    """``S``: the mean over examples of the output curvature ``S_n`` (``K x K``)."""
    return output_curvature_from_logits(model.apply(params, x_ND), mask_N)


def output_curvature_from_logits(logits, mask_N) -> jax.Array:
    """``mean_output_curvature`` from the logits (rank 1: logistic)."""
    dtype = logits.dtype
    m_N = jnp.ones(logits.shape[0], dtype) if mask_N is None else mask_N.astype(dtype)
    total = jnp.maximum(jnp.sum(m_N), 1)
    if logits.ndim == 1:
        s_N = jax.nn.sigmoid(logits)
        return (jnp.sum(m_N * s_N * (1 - s_N)) / total).reshape(1, 1)
    p_NK = jax.nn.softmax(logits, axis=-1)
    pw_NK = p_NK * m_N[:, None]
    return jnp.diag(jnp.sum(pw_NK, axis=0) / total) - (pw_NK.T @ p_NK) / total


def precondition(b: Basis, s_KK, l2, template):
    """``v_P -> (A (x) S + lambda r_max I)^-1 v_P`` on flat parameters (``ravel_pytree``
    order of ``template``). Eigenvalues are floored at ``1e-12`` of the largest, so a
    singular approximation (lambda 0 with constant pixels) stays finite."""
    s_K, v_KK = jnp.linalg.eigh(0.5 * (s_KK + s_KK.T))
    rho = l2 * jnp.max(b.r_E)
    denom_EK = jnp.maximum(b.a_E, 0)[:, None] * jnp.maximum(s_K, 0)[None, :] + rho
    denom_EK = jnp.maximum(denom_EK, 1e-12 * jnp.max(denom_EK))
    unravel = ravel_pytree(template)[1]

    def apply(v_P):
        m_EK = _to_matrix(unravel(v_P.astype(b.u_EE.dtype)))
        t_EK = (b.u_EE.T @ m_EK @ v_KK) / denom_EK
        out = ravel_pytree(_from_matrix(b.u_EE @ t_EK @ v_KK.T, template))[0]
        return out.astype(v_P.dtype)

    return apply


def hessian_matvec(b: Basis, template, x_ND, xt_DN, mask_N, l2, p_P):
    """``v_P -> H v_P``, the objective's Hessian at ``p_P`` (flat, ``template``'s order), by hand.

    ``H v = (1 / M) Z^T u + lambda r (.) V`` with ``V`` the direction as an ``E x K'`` matrix,
    ``Z = [x, 1]`` (the 1 only with an explicit bias), ``d = Z V`` and ``u_n = m_n S_n d_n``
    (``S_n = diag(p_n) - p_n p_n^T``, or ``s_n (1 - s_n)`` for logistic regression): the
    Gauss-Newton form, exact for these models (the cross-entropy's link is canonical). Two
    products with the data per call against ``jax.linearize``'s two, but the second reads
    ``xt_DN = x_ND^T`` stored as its own array: XLA's CPU dot with a transposed operand
    copies the operand first (20,000 x 785: 4.6 vs 9.7 ms per product, WORKSPACE.md), and
    the probabilities are computed once, not per product. ``xt_DN`` may be ``x_ND.T``
    inside ``jit`` (then XLA picks the layout). Vectors in and out in ``p_P``'s dtype; the
    products in ``x_ND``'s. Equal to ``jax.linearize(jax.grad(objective))`` in
    ``tests/test_kron.py`` for every bias and L2 convention, with and without a mask.
    """
    dtype = x_ND.dtype
    d = x_ND.shape[1]
    bias = "b" in template
    unravel = ravel_pytree(template)[1]
    m_EK = _to_matrix(unravel(p_P.astype(dtype)))

    def outputs(v_EK):
        out_NK = x_ND @ v_EK[:d]
        return out_NK + v_EK[d] if bias else out_NK

    m_N = jnp.ones(x_ND.shape[0], dtype) if mask_N is None else mask_N.astype(dtype)
    total = jnp.sum(m_N)
    w_N = m_N / jnp.where(total > 0, total, 1)
    logits_NK = outputs(m_EK)
    if logits_NK.shape[1] == 1:
        s_N = jax.nn.sigmoid(logits_NK[:, 0])
        c_N1 = (w_N * s_N * (1 - s_N))[:, None]

        def curve(d_NK):
            return c_N1 * d_NK
    else:
        p_NK = jax.nn.softmax(logits_NK, axis=-1)
        q_NK = w_N[:, None] * p_NK

        def curve(d_NK):
            return q_NK * d_NK - q_NK * jnp.sum(p_NK * d_NK, axis=1, keepdims=True)

    pen_E1 = (jnp.asarray(l2).astype(dtype) * b.r_E.astype(dtype))[:, None]

    def matvec(v_P):
        v_EK = _to_matrix(unravel(v_P.astype(dtype)))
        u_NK = curve(outputs(v_EK))
        h_EK = xt_DN @ u_NK
        if bias:
            h_EK = jnp.concatenate([h_EK, jnp.sum(u_NK, axis=0, keepdims=True)], axis=0)
        h_P = ravel_pytree(_from_matrix(h_EK + pen_E1 * v_EK, template))[0]
        return h_P.astype(v_P.dtype)

    return matvec


def value_and_grad(b: Basis, template, x_ND, xt_DN, y_N, mask_N, l2, p_P):
    """``(objective, gradient, logits)`` of the linear model at ``p_P`` (flat, ``template``'s
    order), by hand, in ``x_ND``'s dtype.

    The logits ``Z M`` (``M`` the parameters as an ``E x K'`` matrix, ``Z = [x, 1]`` with an
    explicit bias), the mean cross-entropy and its gradient in the logits ``u`` (autodiff of
    ``losses.cross_entropy``, elementwise), the data part ``Z^T u`` on the stored transposed
    copy ``xt_DN`` (what ``jax.value_and_grad`` of the objective does with a copy of ``x``
    transposed per call, ``hessian_matvec``), and the penalty ``lambda / 2 sum_E r_E
    ||M_E||^2`` with gradient ``lambda r (.) M`` (``R`` is a separable quadratic, ``b.r_E``
    its Hessian diagonal, read from the model's own objective). The logits (rank 1 for
    logistic regression) come back for the caller's probe, which then needs no pass of its
    own. Equal to ``jax.value_and_grad`` of ``model.loss`` in ``tests/test_kron.py``.
    """
    dtype = x_ND.dtype
    d = x_ND.shape[1]
    bias = "b" in template
    unravel = ravel_pytree(template)[1]
    m_EK = _to_matrix(unravel(p_P.astype(dtype)))
    out_NK = x_ND @ m_EK[:d]
    if bias:
        out_NK = out_NK + m_EK[d]
    logits = out_NK[:, 0] if out_NK.shape[1] == 1 else out_NK
    ce, pull = jax.vjp(lambda z: losses.cross_entropy(z, y_N, mask_N), logits)
    u_NK = pull(jnp.ones((), ce.dtype))[0].reshape(out_NK.shape)
    g_EK = xt_DN @ u_NK
    if bias:
        g_EK = jnp.concatenate([g_EK, jnp.sum(u_NK, axis=0, keepdims=True)], axis=0)
    l2 = jnp.asarray(l2).astype(dtype)
    r_E1 = b.r_E.astype(dtype)[:, None]
    f = ce + l2 * (0.5 * jnp.sum(r_E1 * m_EK * m_EK))
    g_P = ravel_pytree(_from_matrix(g_EK + l2 * r_E1 * m_EK, template))[0]
    return f, g_P.astype(p_P.dtype), logits


def max_eigenvalue_at_zero(model, b: Basis, template, x_ND, l2_L) -> jax.Array:
    """The largest Hessian eigenvalue of the objective at zero parameters, for each lambda
    (exact: ``eigmax(sigma_max(S_0) A + lambda diag(r_E))``). Host side: one eigenvalue
    problem of size E per lambda only when the rows are penalised unequally."""
    s0 = jnp.max(jnp.linalg.eigvalsh(mean_output_curvature(model, template, x_ND[:1], None)))
    l2_L = jnp.asarray(l2_L, b.a_E.dtype)
    if bool(jnp.all(b.r_E == b.r_E[0])):
        return s0 * b.a_E[-1] + l2_L * b.r_E[0]
    return jnp.stack(
        [jnp.linalg.eigvalsh(s0 * b.gram_EE + lam * jnp.diag(b.r_E))[-1] for lam in l2_L]
    )
