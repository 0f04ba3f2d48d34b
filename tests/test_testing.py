"""Numerics helpers of jaxlr.core.testing: tolerances, finite differences, comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import testing


def test_tolerance_lookup_and_errors():
    tol = testing.tolerance(jnp.float32, "grad_vs_autodiff")
    assert set(tol) == {"rtol", "atol"}
    assert testing.tolerance("float64", "grad_vs_autodiff")["rtol"] < tol["rtol"]
    tol["rtol"] = 123.0  # a copy: the table is unchanged
    assert testing.TOLERANCES["float32"]["grad_vs_autodiff"]["rtol"] != 123.0
    assert testing.tolerance(np.float64, "course") == {"rtol": 0.0, "atol": 1e-6}
    assert "eps" in testing.tolerance(jnp.float64, "check_grads")
    with pytest.raises(ValueError, match="unknown tolerance kind"):
        testing.tolerance(jnp.float64, "nope")
    with pytest.raises(ValueError, match="no tolerances"):
        testing.tolerance(jnp.int32, "course")
    assert testing.fd_eps(jnp.float32) > testing.fd_eps(jnp.float64)


def test_finite_difference_grad_of_a_known_function():
    """f(a, b) = sum(a^3) + sum(sin(b)) * a[0]: gradient built by hand, every coordinate."""
    params = {"a": jnp.asarray([0.5, -1.0, 2.0]), "b": jnp.asarray([[0.1, 0.2], [0.3, -0.4]])}

    def f(p):
        return jnp.sum(p["a"] ** 3) + jnp.sum(jnp.sin(p["b"])) * p["a"][0]

    a, b = np.asarray(params["a"]), np.asarray(params["b"])
    expected = {"a": 3 * a**2 + np.eye(3)[0] * np.sin(b).sum(), "b": np.cos(b) * a[0]}
    # Small batches force the lax.map path; the default takes the single-vmap path.
    for batch_size in (2, 256):
        got = testing.finite_difference_grad(f, params, eps=1e-5, batch_size=batch_size)
        testing.assert_tree_allclose(got, expected, rtol=1e-9, atol=1e-10)


def test_tree_allclose_and_assert_messages():
    a = {"w": np.ones((2, 3)), "layers": [np.zeros(2)]}
    b = {"w": np.ones((2, 3)) + 1e-9, "layers": [np.zeros(2)]}
    assert testing.tree_allclose(a, b, rtol=1e-6, atol=0)
    assert not testing.tree_allclose(a, b, rtol=1e-12, atol=0)
    assert not testing.tree_allclose(a, {"w": a["w"]}, rtol=1, atol=1)  # structure
    assert not testing.tree_allclose({"w": np.ones(2)}, {"w": np.ones(3)}, rtol=1, atol=1)
    c = {"w": np.ones((2, 3)), "layers": [np.asarray([0.0, 0.5])]}
    with pytest.raises(AssertionError, match=r"\['layers'\]\[0\].*1 of 2 entries.*worst at \(1,\)"):
        testing.assert_tree_allclose(c, a, kind="grad_vs_autodiff", err_msg="ctx")
    with pytest.raises(AssertionError, match="structures differ"):
        testing.assert_tree_allclose(a, {"w": a["w"]}, rtol=1, atol=1)
    with pytest.raises(AssertionError, match="dtype"):
        testing.assert_tree_allclose(
            {"w": np.ones(2, np.float32)}, {"w": np.ones(2)}, rtol=1, check_dtypes=True
        )
    # float32 leaves pick the float32 row of the table.
    testing.assert_tree_allclose(
        {"w": np.float32(1.0) + np.float32(1e-6)}, {"w": np.float32(1.0)}, kind="grad_vs_autodiff"
    )


def test_trace_counter_counts_compilations():
    counted = testing.count_traces(lambda x, lam: x * lam)
    jitted = jax.jit(counted)
    jitted(jnp.ones(3), jnp.asarray(0.1))
    jitted(jnp.zeros(3), jnp.asarray(2.0))  # new values, same shapes: no retrace
    assert counted.count == 1
    jitted(jnp.ones(4), jnp.asarray(2.0))  # new shape: retrace
    assert counted.count == 2


def test_objective_with_grad_uses_the_given_gradient():
    """Its derivative is whatever grad_f says (so check_grads tests grad_f, not autodiff)."""
    f = lambda p: jnp.sum(p["w"] ** 2)
    right = testing.objective_with_grad(f, lambda p: {"w": 2 * p["w"]})
    wrong = testing.objective_with_grad(f, lambda p: {"w": 3 * p["w"]})
    p = {"w": jnp.asarray([1.0, -2.0])}
    assert float(right(p)) == 5.0
    np.testing.assert_allclose(jax.grad(right)(p)["w"], [2.0, -4.0])
    np.testing.assert_allclose(jax.grad(wrong)(p)["w"], [3.0, -6.0])
    _, tangent = jax.jvp(right, (p,), ({"w": jnp.asarray([1.0, 1.0])},))
    assert float(tangent) == -2.0
