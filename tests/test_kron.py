"""jaxlr.core.kron: the Kronecker preconditioner of Newton-CG and the exact curvature at zero.

Checked against dense Hessians (``jax.hessian`` on small problems) for every bias and L2
convention, with and without a mask: the curvature at zero is exact, the preconditioner is
the inverse of the matrix its docstring names, and preconditioned Newton-CG reaches the same
optimum as plain CG with fewer Hessian-vector products on an ill-conditioned problem.

Dimension legend: N examples, D features, E weight rows, K classes, P parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlr.core import kron, newton, newton_path, solver
from jaxlr.core.objective import make_model

F64 = jnp.float64

CASES = [
    # kind, bias, l2 convention, l2_bias
    ("softmax", "trick", "sum", True),
    ("softmax", "trick", "sum", False),
    ("softmax", "explicit", "half", False),
    ("logistic", "trick", "half", True),
    ("logistic", "explicit", "sum", False),
]


def _problem(kind, bias, convention, l2_bias, n=60, d=6, k=3, seed=0, masked=False):
    rng = np.random.default_rng(seed)
    x_ND = rng.normal(size=(n, d - 1))
    x_ND[:, 0] = 0.0  # a constant-zero "pixel": only the penalty curves its weights
    if bias == "trick":
        x_ND = np.concatenate([x_ND, np.ones((n, 1))], axis=1)
    y_N = rng.integers(0, 2 if kind == "logistic" else k, n).astype(np.int32)
    model = make_model(
        kind,
        num_features=x_ND.shape[1],
        num_classes=None if kind == "logistic" else k,
        bias=bias,
        l2_convention=convention,
        l2_bias=l2_bias,
        dtype=F64,
    )
    mask = (rng.random(n) < 0.8).astype(np.float64) if masked else None
    mask = None if mask is None else jnp.asarray(mask)
    return model, jnp.asarray(x_ND, F64), jnp.asarray(y_N), mask


def _dense_hessian(model, params, x, y, l2, mask):
    p_P, unravel = ravel_pytree(params)
    return np.asarray(jax.hessian(lambda q: model.loss(unravel(q), x, y, l2, mask)[0])(p_P))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_curvature_at_zero_is_the_dense_hessians_largest_eigenvalue(case, masked):
    with jax.enable_x64(True):
        model, x, y, mask = _problem(*case, masked=masked)
        zeros = newton.zeros_like_model(model, F64)
        b = kron.basis(model, zeros, x, mask)
        lams = [0.0, 0.05, 3.0]
        got = np.asarray(kron.max_eigenvalue_at_zero(model, b, zeros, x, jnp.asarray(lams)))
        for lam, value in zip(lams, got, strict=True):
            want = np.linalg.eigvalsh(_dense_hessian(model, zeros, x, y, lam, mask))[-1]
            assert value == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_the_preconditioner_inverts_the_kronecker_approximation(case):
    """M^-1 v against a dense (A (x) S + lambda r_max I)^-1 v built from its definition."""
    kind, bias = case[0], case[1]
    with jax.enable_x64(True):
        model, x, y, _ = _problem(*case)
        rng = np.random.default_rng(1)
        params = jax.tree.map(
            lambda a: jnp.asarray(rng.normal(size=a.shape), F64),
            newton.zeros_like_model(model, F64),
        )
        template = newton.zeros_like_model(model, F64)
        b = kron.basis(model, template, x, None)
        s_KK = kron.mean_output_curvature(model, params, x, None)
        lam = 0.03
        apply = kron.precondition(b, s_KK, lam, template)
        # The same matrix by its definition, in the layout of the "w" (and "b") leaves.
        z = np.asarray(x) if bias == "trick" else np.c_[np.asarray(x), np.ones(len(x))]
        a_EE = z.T @ z / len(z)
        big_EK = np.kron(a_EE, np.asarray(s_KK)) + lam * float(np.max(b.r_E)) * np.eye(
            a_EE.shape[0] * s_KK.shape[0]
        )
        v_P = rng.normal(size=ravel_pytree(template)[0].shape)
        got = kron._to_matrix(ravel_pytree(template)[1](apply(jnp.asarray(v_P))))
        v_EK = np.asarray(kron._to_matrix(ravel_pytree(template)[1](jnp.asarray(v_P))))
        want = np.linalg.solve(big_EK, v_EK.reshape(-1)).reshape(v_EK.shape)
        assert np.asarray(got) == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert kind in ("logistic", "softmax")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_hessian_matvec_equals_autodiff_and_the_dense_hessian(case, masked):
    """The hand-derived product at a random point against jax.linearize of jax.grad and
    against the dense Hessian, with the transposed data stored and as ``x.T``."""
    with jax.enable_x64(True):
        model, x, y, mask = _problem(*case, masked=masked)
        rng = np.random.default_rng(2)
        template = newton.zeros_like_model(model, F64)
        p_P, unravel = ravel_pytree(
            jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), F64), template)
        )
        b = kron.basis(model, template, x, mask)
        lam = 0.07
        v_P = jnp.asarray(rng.normal(size=p_P.shape))

        def objective(q_P):
            return model.loss(unravel(q_P), x, y, lam, mask)[0]

        want = jax.linearize(jax.grad(objective), p_P)[1](v_P)
        dense = _dense_hessian(model, unravel(p_P), x, y, lam, mask) @ np.asarray(v_P)
        xt = newton_path.transposed(x)
        for xt_DN in (xt, x.T):
            got = kron.hessian_matvec(b, template, x, xt_DN, mask, lam, p_P)(v_P)
            assert np.asarray(got) == pytest.approx(np.asarray(want), rel=1e-12, abs=1e-13)
            assert np.asarray(got) == pytest.approx(dense, rel=1e-12, abs=1e-13)
        # Float32 products for a float64 vector: the result comes back in float64.
        x32 = x.astype(jnp.float32)
        got32 = kron.hessian_matvec(
            b, newton.zeros_like_model(model, jnp.float32), x32, newton_path.transposed(x32),
            None if mask is None else mask.astype(jnp.float32), lam, p_P,
        )(v_P)  # fmt: skip
        assert got32.dtype == F64
        assert np.asarray(got32) == pytest.approx(np.asarray(want), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_value_and_grad_equals_the_models_objective_and_autodiff(case, masked):
    """The hand-derived objective, gradient and logits at a random point against
    ``model.loss``, ``jax.grad`` of it and ``model.apply``, for lambda 0 and > 0."""
    with jax.enable_x64(True):
        model, x, y, mask = _problem(*case, masked=masked)
        rng = np.random.default_rng(3)
        template = newton.zeros_like_model(model, F64)
        params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), F64), template)
        p_P, unravel = ravel_pytree(params)
        b = kron.basis(model, template, x, mask)
        for lam in (0.0, 0.07):
            f, g_P, logits = kron.value_and_grad(
                b, template, x, newton_path.transposed(x), y, mask, lam, p_P
            )
            want_f, want_g = jax.value_and_grad(
                lambda q: model.loss(unravel(q), x, y, lam, mask)[0]  # noqa: B023
            )(p_P)
            assert float(f) == pytest.approx(float(want_f), rel=1e-14)
            assert np.asarray(g_P) == pytest.approx(np.asarray(want_g), rel=1e-12, abs=1e-14)
            assert np.asarray(logits) == pytest.approx(
                np.asarray(model.apply(params, x)), rel=1e-14, abs=1e-14
            )
            assert logits.shape == model.apply(params, x).shape


def test_penalty_rows_read_from_the_model():
    with jax.enable_x64(True):
        for case, want in [
            (("softmax", "trick", "sum", True), 2.0),
            (("softmax", "trick", "half", False), 1.0),
        ]:
            model, x, _, _ = _problem(*case)
            b = kron.basis(model, newton.zeros_like_model(model, F64), x, None)
            r = np.asarray(b.r_E)
            assert np.all(r[:-1] == want)
            assert r[-1] == (want if case[3] else 0.0)  # the bias row of the bias trick


def test_preconditioned_newton_reaches_the_same_optimum_with_fewer_products():
    """Badly scaled features and a small lambda: plain CG needs many more products."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        n, d, k = 400, 12, 4
        x = rng.normal(size=(n, d - 1)) * np.logspace(-2, 1, d - 1)
        x = np.c_[x, np.ones(n)]
        y = rng.integers(0, k, n).astype(np.int32)
        model = make_model("softmax", num_features=d, num_classes=k, dtype=F64)
        plain = solver.solve(model, None, x, y, 1e-4, precondition=False)
        pre = solver.solve(model, None, x, y, 1e-4)
        assert bool(plain.converged) and bool(pre.converged)
        mu = 2e-4  # R = sum w^2, bias penalised: mu = 2 lambda
        dist = np.linalg.norm(ravel_pytree(plain.params)[0] - ravel_pytree(pre.params)[0])
        assert dist <= (float(plain.grad_norm) + float(pre.grad_norm)) / mu
        assert int(pre.hvps) < 0.5 * int(plain.hvps)
        path = solver.solve_path(model, x, y, [1e-4], progress=False)
        assert int(path.hvps[0]) == int(pre.hvps)  # the host path takes the same steps
