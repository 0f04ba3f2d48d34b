"""jaxlr.curvature: largest Hessian eigenvalue by power iteration, the gradient-descent limit.

Expected values are built by hand: a quadratic with a chosen spectrum, the dense Hessian
(`jax.hessian`) and its `eigvalsh`, and the closed form of the logistic Hessian at zero.
Eigenvalues are compared within the power iteration's own certificate (some eigenvalue lies
within the residual ||Hv - rho v|| of rho) plus the float64 rounding allowance of
`jaxlr.core.testing`.

Dimension legend: N examples, D features, K classes, P parameters, T steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlr.core import curvature, solver, testing
from jaxlr.core.objective import make_model

ROUND = testing.tolerance(jnp.float64, "loss_value")


def _data(kind, n=80, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x_ND = np.concatenate([rng.normal(size=(n, d - 1)), np.ones((n, 1))], axis=1)
    if kind == "logistic":
        p_N = 1 / (1 + np.exp(-x_ND @ rng.normal(size=d)))
        y_N = (rng.random(n) < p_N).astype(np.int32)
    else:
        logits_NK = x_ND @ rng.normal(size=(d, k))
        u_N = rng.random(n)[:, None]
        cdf_NK = np.cumsum(np.exp(logits_NK) / np.exp(logits_NK).sum(1, keepdims=True), axis=1)
        y_N = np.minimum((u_N > cdf_NK).sum(1), k - 1).astype(np.int32)
    return x_ND, y_N


@functools.cache
def _model(kind, l2_convention="sum", l2_bias=True):
    # One Model object per configuration, so compiled functions keyed on it are shared.
    num_classes = None if kind == "logistic" else 3
    return make_model(
        kind,
        num_features=5,
        num_classes=num_classes,
        l2_convention=l2_convention,
        l2_bias=l2_bias,
        dtype=jnp.float64,
    )


def _dense_eigvalsh(f, params):
    flat_P, unravel = ravel_pytree(params)
    h_PP = jax.hessian(lambda q: f(unravel(q)))(flat_P)
    return np.linalg.eigvalsh(np.asarray(h_PP))


def _quadratic(eigs, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
    a_PP = jnp.asarray(q @ np.diag(eigs) @ q.T)
    return a_PP, lambda v: 0.5 * v @ a_PP @ v


def test_quadratic_known_spectrum():
    _, f = _quadratic([0.1, 0.5, 1.0, 3.0, 4.0])
    value, iterations = curvature.hessian_max_eigenvalue(f, jnp.ones(5))
    assert 1 < int(iterations) < curvature.DEFAULT_NUM_ITER
    # Residual stopping at rtol certifies |value - 4| <= rtol * value (the nearest is 4).
    assert abs(float(value) - 4.0) <= curvature.DEFAULT_RTOL["float64"] * 4.0


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
@pytest.mark.parametrize("point", ["zeros", "random", "optimum"])
def test_max_eigenvalue_matches_eigvalsh(kind, point):
    x_ND, y_N = _data(kind)
    model = _model(kind, l2_convention="half", l2_bias=False)
    l2 = 0.05
    params = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))
    if point == "random":
        params = jax.tree.map(
            lambda a: jax.random.normal(jax.random.key(1), a.shape, a.dtype), params
        )
    elif point == "optimum":
        params = solver.solve(model, None, x_ND, y_N, l2).params

    def f(p):
        return model.loss(p, x_ND, y_N, l2)[0]

    expected = _dense_eigvalsh(f, params)[-1]
    flat_P, unravel = ravel_pytree(params)
    _, matvec = jax.linearize(jax.grad(lambda q: f(unravel(q))), flat_P)
    res = curvature.power_iteration(matvec, jax.random.normal(jax.random.key(0), flat_P.shape))
    assert bool(res.converged)
    bound = float(res.residual) + ROUND["rtol"] * abs(expected)
    assert abs(float(res.value) - expected) <= bound
    limit = curvature.lr_limit(model, params, x_ND, y_N, l2)
    assert float(limit) == pytest.approx(2 / expected, rel=curvature.DEFAULT_RTOL["float64"])


@pytest.mark.parametrize("convention,factor", [("sum", 2.0), ("half", 1.0)])
def test_lr_limit_at_zero_closed_form(convention, factor):
    """At w = 0 every sigmoid is 1/2: H = X^T X / (4N) + factor * lambda * I (bias excluded)."""
    x_ND, y_N = _data("logistic")
    model = _model("logistic", l2_convention=convention, l2_bias=False)
    l2 = 0.3
    pen_D = np.ones(5)
    pen_D[-1] = 0.0  # the bias trick's last row is not penalised
    h_DD = x_ND.T @ x_ND / (4 * len(x_ND)) + factor * l2 * np.diag(pen_D)
    expected = 2 / np.linalg.eigvalsh(h_DD)[-1]
    zeros = model.init(jax.random.key(0))
    got = curvature.lr_limit(model, zeros, x_ND, y_N, l2)
    assert float(got) == pytest.approx(expected, rel=curvature.DEFAULT_RTOL["float64"])


def test_lr_limit_vmaps_over_l2_and_params():
    x_ND, y_N = _data("softmax")
    model = _model("softmax")
    l2_L = jnp.array([0.001, 0.1, 1.0])
    path = solver.solve_path(model, x_ND, y_N, l2_L)

    def limit(p, lam):
        return curvature.lr_limit(model, p, x_ND, y_N, lam)

    batched_L = jax.jit(jax.vmap(limit))(path.params, l2_L)
    for i, lam in enumerate(l2_L):
        one = limit(jax.tree.map(lambda a, i=i: a[i], path.params), lam)
        assert float(batched_L[i]) == pytest.approx(float(one), rel=ROUND["rtol"])
    # More penalty, more curvature, a smaller limit.
    assert np.all(np.diff(np.asarray(batched_L)) < 0)


def _gd(grad_fn, p0, lr, steps):
    """`steps` gradient-descent steps at each of the learning rates `lr` (vmapped)."""

    def one(lr):
        def step(p, _):
            return jax.tree.map(lambda a, g: a - lr * g, p, grad_fn(p)), None

        return jax.lax.scan(step, p0, None, length=steps)[0]

    return jax.jit(jax.vmap(one))(jnp.asarray(lr))


def test_gradient_descent_on_quadratic_at_0_9_and_1_1_of_the_limit():
    _, f = _quadratic([0.1, 0.5, 1.0, 3.0, 4.0], seed=3)
    x0 = jnp.ones(5)
    h_max, _ = curvature.hessian_max_eigenvalue(f, x0)
    limit = 2 / h_max
    below, above = _gd(jax.grad(f), x0, jnp.array([0.9, 1.1]) * limit, 500)
    # The slowest mode contracts by 1 - 0.9 * 2 * 0.1 / 4 = 0.955 a step: 0.955^500 ~ 1e-10.
    assert float(jnp.linalg.norm(below)) < 1e-6 * float(jnp.linalg.norm(x0))
    # The top mode grows by |1 - 2.2| = 1.2 a step.
    assert float(jnp.linalg.norm(above)) > 1e6 * float(jnp.linalg.norm(x0))


def test_gradient_descent_on_logistic_regression_at_0_9_and_1_1_of_the_limit():
    x_ND, y_N = _data("logistic", n=100)
    model = _model("logistic", l2_convention="sum", l2_bias=True)
    l2 = 0.01

    def f(p):
        return model.loss(p, x_ND, y_N, l2)[0]

    opt = solver.solve(model, None, x_ND, y_N, l2)
    assert bool(opt.converged)
    limit = float(curvature.lr_limit(model, opt.params, x_ND, y_N, l2))
    u = jax.random.normal(jax.random.key(2), opt.params["w"].shape)
    start = {"w": opt.params["w"] + 1e-4 * u / jnp.linalg.norm(u)}

    def dist(p):
        return float(jnp.linalg.norm(p["w"] - opt.params["w"]))

    both = _gd(jax.grad(f), start, jnp.array([0.9, 1.1]) * limit, 2000)
    below, above = (jax.tree.map(lambda a, i=i: a[i], both) for i in range(2))
    assert dist(below) < 1e-3 * dist(start)
    assert float(f(below)) - float(opt.objective) < 1e-3 * (float(f(start)) - float(opt.objective))
    # Above the limit gradient descent leaves the optimum (here into an oscillation).
    assert dist(above) > 100 * dist(start)
    assert float(f(above)) - float(opt.objective) > 100 * (float(f(start)) - float(opt.objective))


def test_bad_num_iter():
    with pytest.raises(ValueError, match="num_iter"):
        curvature.power_iteration(lambda v: v, jnp.ones(3), num_iter=0)


def test_lanczos_on_a_small_gap_beats_power_iteration():
    """Top eigenvalues 3.99 and 4 among 200: power iteration crawls, Lanczos does not."""
    eigs = np.r_[np.linspace(0.01, 3.9, 198), 3.99, 4.0]
    a_PP, _ = _quadratic(eigs, seed=5)
    v0_P = jax.random.normal(jax.random.key(0), (200,), jnp.float64)
    lz = jax.jit(lambda v: curvature.lanczos(lambda u: a_PP @ u, v))(v0_P)
    pw = jax.jit(lambda v: curvature.power_iteration(lambda u: a_PP @ u, v))(v0_P)
    assert bool(lz.converged)
    # The returned residual is the true one of the returned unit vector and value.
    y_P = np.asarray(lz.vector)
    assert np.linalg.norm(y_P) == pytest.approx(1.0, abs=1e-12)
    assert float(lz.value) == pytest.approx(y_P @ np.asarray(a_PP) @ y_P, rel=1e-14)
    true_res = np.linalg.norm(np.asarray(a_PP) @ y_P - float(lz.value) * y_P)
    assert float(lz.residual) == pytest.approx(true_res, rel=1e-6, abs=1e-15)
    assert abs(float(lz.value) - 4.0) <= float(lz.residual) + ROUND["rtol"] * 4.0
    assert float(lz.residual) <= curvature.DEFAULT_RTOL["float64"] * float(lz.value)
    assert int(lz.iterations) * 5 < int(pw.iterations)


@pytest.mark.parametrize("block", [3, 8, curvature.LANCZOS_BLOCK])
def test_lanczos_restarts_reach_the_same_eigenvalue(block):
    eigs = np.r_[np.linspace(0.1, 2.0, 48), 2.5, 3.0]
    a_PP, _ = _quadratic(eigs, seed=6)
    v0_P = jax.random.normal(jax.random.key(1), (50,), jnp.float64)
    res = curvature.lanczos(lambda u: a_PP @ u, v0_P, block=block)
    assert bool(res.converged) and int(res.iterations) < curvature.DEFAULT_NUM_ITER
    assert abs(float(res.value) - 3.0) <= float(res.residual) + ROUND["rtol"] * 3.0
    # Out of products: not converged, and it says so.
    short = curvature.lanczos(lambda u: a_PP @ u, v0_P, block=block, num_iter=3)
    assert int(short.iterations) <= 3 and not bool(short.converged)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_lanczos_and_power_limits_agree_at_the_optimum(kind):
    x_ND, y_N = _data(kind)
    model = _model(kind)
    params = solver.solve(model, None, x_ND, y_N, 0.01).params

    def f(p):
        return model.loss(p, x_ND, y_N, 0.01)[0]

    expected = _dense_eigvalsh(f, params)[-1]
    for method in curvature.EIGEN_METHODS:
        got = float(curvature.lr_limit(model, params, x_ND, y_N, 0.01, method=method))
        assert got == pytest.approx(2 / expected, rel=curvature.DEFAULT_RTOL["float64"]), method


def test_bad_lanczos_arguments():
    with pytest.raises(ValueError, match="num_iter"):
        curvature.lanczos(lambda v: v, jnp.ones(3), num_iter=1)
    with pytest.raises(ValueError, match="block"):
        curvature.lanczos(lambda v: v, jnp.ones(3), block=0)
    with pytest.raises(ValueError, match="method"):
        curvature.hessian_max_eigenvalue(lambda p: jnp.sum(p**2), jnp.ones(3), method="qr")
