"""Numerical checks of the individual steps in docs/derivations.md.

Each test is named in the derivation it checks. Single examples use the course's
orientation (``W^l`` is out x in, column vectors); batches use jaxlr's (``w_IO``).

Dimension legend: N examples, D features, K classes, I/O layer input/output width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.core import gradients, losses, models

RNG = np.random.default_rng(42)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# --- Logistic and softmax regression -------------------------------------------------


def test_sigmoid_derivative_is_sigma_times_one_minus_sigma():
    z = jnp.linspace(-6.0, 6.0, 25)
    s = jax.nn.sigmoid(z)
    np.testing.assert_allclose(jax.vmap(jax.grad(jax.nn.sigmoid))(z), s * (1 - s), rtol=1e-13)


def test_logistic_per_example_gradient_is_minus_y_minus_yhat_times_x():
    """dC^n/dw_i = -(y^n - yhat^n) x_i^n for one example (the hand-ins' Task 1a)."""
    x_D, w_D = RNG.normal(size=6), RNG.normal(size=6)
    for y in (0.0, 1.0):

        def c_n(w, y=y):
            y_hat = jax.nn.sigmoid(x_D @ w)
            return -(y * jnp.log(y_hat) + (1 - y) * jnp.log(1 - y_hat))

        np.testing.assert_allclose(jax.grad(c_n)(w_D), -(y - _sigmoid(x_D @ w_D)) * x_D, rtol=1e-12)


def test_logistic_batch_gradient_is_minus_xt_residual_over_n():
    """dC/dw = -X^T (y - yhat) / N, built by hand in numpy."""
    x_ND, w_D1 = RNG.normal(size=(7, 5)), RNG.normal(size=(5, 1))
    y_N = RNG.integers(0, 2, size=7)
    by_hand = -(x_ND.T @ (y_N - _sigmoid(x_ND @ w_D1[:, 0]))) / 7
    got = gradients.logistic_grad({"w": jnp.asarray(w_D1)}, x_ND, y_N, 0.0)["w"][:, 0]
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)


def test_softmax_jacobian_cases_k_equal_j_and_k_not_j():
    """d yhat_k / d z_j = yhat_k (1 - yhat_k) if k = j, and -yhat_k yhat_j if k != j."""
    z_K = jnp.asarray(RNG.normal(size=5))
    p = np.asarray(jax.nn.softmax(z_K))
    jac = np.asarray(jax.jacobian(jax.nn.softmax)(z_K))  # jac[k, j]
    for k in range(5):
        for j in range(5):
            expected = p[k] * (1 - p[k]) if k == j else -p[k] * p[j]
            np.testing.assert_allclose(jac[k, j], expected, rtol=1e-12, atol=1e-15)


def test_softmax_batch_gradient_is_minus_xt_residual_over_n():
    """dC/dW = -X^T (Y - Yhat) / N with one-hot Y, built by hand in numpy."""
    x_ND, w_DK = RNG.normal(size=(8, 4)), RNG.normal(size=(4, 3))
    y_N = RNG.integers(0, 3, size=8)
    z = x_ND @ w_DK
    y_hat = np.exp(z - z.max(1, keepdims=True))
    y_hat /= y_hat.sum(1, keepdims=True)
    by_hand = -(x_ND.T @ (np.eye(3)[y_N] - y_hat)) / 8
    got = gradients.softmax_grad({"w": jnp.asarray(w_DK)}, x_ND, y_N, 0.0)["w"]
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)


@pytest.mark.parametrize("convention,coef", [("sum", 2.0), ("half", 1.0)])
def test_l2_regularized_gradient_adds_coef_lambda_w(convention, coef):
    """dJ/dw = dC/dw + 2 lambda w (R = sum w^2) or + lambda w (R = 1/2 sum w^2)."""
    x_ND, w_DK = RNG.normal(size=(8, 4)), RNG.normal(size=(4, 3))
    y_N = RNG.integers(0, 3, size=8)
    lam = 0.7
    plain = gradients.softmax_grad({"w": jnp.asarray(w_DK)}, x_ND, y_N, 0.0)["w"]
    reg = gradients.softmax_grad(
        {"w": jnp.asarray(w_DK)}, x_ND, y_N, lam, l2_convention=convention
    )["w"]
    np.testing.assert_allclose(reg - plain, coef * lam * w_DK, rtol=1e-12)


def test_l2_conventions_differ_by_a_factor_of_two():
    """R = 1/2 sum w^2 with 2 lambda is R = sum w^2 with lambda: same objective, same gradient."""
    x_ND, w_DK = RNG.normal(size=(8, 4)), RNG.normal(size=(4, 3))
    y_N = RNG.integers(0, 3, size=8)
    params = {"w": jnp.asarray(w_DK)}
    g_sum = gradients.softmax_grad(params, x_ND, y_N, 0.3, l2_convention="sum")
    g_half = gradients.softmax_grad(params, x_ND, y_N, 0.6, l2_convention="half")
    np.testing.assert_allclose(g_half["w"], g_sum["w"], rtol=1e-14)
    np.testing.assert_allclose(
        0.6 * losses.l2_penalty(params, "half"), 0.3 * losses.l2_penalty(params, "sum"), rtol=1e-14
    )


# --- Backpropagation ------------------------------------------------------------------


def _network(activation, sizes=(4, 5, 3, 3)):
    """Course-orientation weights W^l [out, in], biases b^l, one example x, label y."""
    ws = [RNG.normal(size=(o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [RNG.normal(size=o) for o in sizes[1:]]
    x = RNG.normal(size=sizes[0])
    y = np.eye(sizes[-1])[RNG.integers(0, sizes[-1])]
    return ws, bs, x, y, models.get_activation(activation)


def _forward(ws, bs, x, act):
    """Returns the pre-activations z^l and activations a^l (a^0 = x); softmax output."""
    zs, acts = [], [x]
    for l, (w, b) in enumerate(zip(ws, bs, strict=True)):
        z = w @ acts[-1] + b
        zs.append(z)
        acts.append(jax.nn.softmax(z) if l == len(ws) - 1 else act.fn(z))
    return zs, acts


def _cost_from_z(l, ws, bs, x, y, act):
    """C as a function of z^l (layers after l recomputed), for dC/dz^l by autodiff."""

    def cost(z):
        a = act.fn(z) if l < len(ws) - 1 else None
        if l == len(ws) - 1:
            return -jnp.sum(y * jax.nn.log_softmax(z))
        for m in range(l + 1, len(ws)):
            z_m = ws[m] @ a + bs[m]
            if m == len(ws) - 1:
                return -jnp.sum(y * jax.nn.log_softmax(z_m))
            a = act.fn(z_m)

    return cost


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_backprop_four_equations_single_example(activation):
    """delta^L = a^L - y; delta^l = Sigma'(z^l) (W^{l+1})^T delta^{l+1};
    dC/db^l = delta^l; dC/dW^l = delta^l (a^{l-1})^T -- each against autodiff."""
    ws, bs, x, y, act = _network(activation)
    zs, acts = _forward(ws, bs, x, act)
    num_layers = len(ws)
    deltas = [None] * num_layers
    deltas[-1] = acts[-1] - y  # equation 1 (softmax + cross-entropy)
    for l in reversed(range(num_layers - 1)):
        sigma_prime = np.diag(np.asarray(act.deriv(zs[l], acts[l + 1])))  # Sigma'(z^l)
        deltas[l] = sigma_prime @ ws[l + 1].T @ deltas[l + 1]  # equation 2
    for l in range(num_layers):
        np.testing.assert_allclose(
            deltas[l], jax.grad(_cost_from_z(l, ws, bs, x, y, act))(zs[l]), rtol=1e-10, atol=1e-12
        )

    def cost(ws, bs):
        return -jnp.sum(y * jnp.log(_forward(ws, bs, x, act)[1][-1]))

    g_ws, g_bs = jax.grad(cost, argnums=(0, 1))(ws, bs)
    for l in range(num_layers):
        np.testing.assert_allclose(g_bs[l], deltas[l], rtol=1e-10, atol=1e-12)  # equation 3
        np.testing.assert_allclose(  # equation 4
            g_ws[l], np.outer(deltas[l], acts[l]), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_backprop_product_form(activation):
    """delta^l = Sigma'(z^l) (W^{l+1})^T ... Sigma'(z^{L-1}) (W^L)^T Sigma'(z^L) grad_a C.

    With a sigmoid output and the quadratic cost C = 1/2 |a^L - y|^2 (grad_a C = a^L - y,
    Sigma'(z^L) = diag(sigma'(z^L))), so that every factor of the general form appears.
    """
    ws, bs, x, y, act = _network(activation, sizes=(3, 4, 4, 2))
    out = models.get_activation("sigmoid")

    def layers_from(l, z):
        """C as a function of z^l."""
        a = (out if l == len(ws) - 1 else act).fn(z)
        for m in range(l + 1, len(ws)):
            z = ws[m] @ a + bs[m]
            a = (out if m == len(ws) - 1 else act).fn(z)
        return 0.5 * jnp.sum((a - y) ** 2)

    zs, a = [], x
    for m, (w, b) in enumerate(zip(ws, bs, strict=True)):
        zs.append(w @ a + b)
        a = (out if m == len(ws) - 1 else act).fn(zs[-1])
    big_l = len(ws) - 1
    a_last = np.asarray(a)
    product = np.diag(a_last * (1 - a_last)) @ (a_last - y)  # Sigma'(z^L) grad_a C
    np.testing.assert_allclose(
        product, jax.grad(lambda z: layers_from(big_l, z))(zs[-1]), rtol=1e-10
    )
    for l in reversed(range(big_l)):
        a_l = np.asarray(act.fn(zs[l]))
        product = np.diag(np.asarray(act.deriv(zs[l], a_l))) @ ws[l + 1].T @ product
        np.testing.assert_allclose(
            product, jax.grad(lambda z, l=l: layers_from(l, z))(zs[l]), rtol=1e-10
        )


def test_backprop_linear_activation_sigma_prime_is_identity():
    """With sigma(z) = z: Sigma' = I, so delta^l = (W^{l+1})^T delta^{l+1} = (W^{l+1})^T ...
    (W^L)^T (a^L - y), dC/db^l = delta^l and dC/dW^l = delta^l (a^{l-1})^T, with a^l = z^l."""
    ws, bs, x, y, act = _network("linear")
    zs, acts = _forward(ws, bs, x, act)
    np.testing.assert_array_equal(np.asarray(act.deriv(zs[0], acts[1])), 1.0)  # Sigma' = I
    delta = acts[-1] - y
    expected_deltas = [delta]
    for l in reversed(range(len(ws) - 1)):
        delta = ws[l + 1].T @ delta  # no Sigma' factor
        expected_deltas.insert(0, delta)
    # The product form collapses to a product of transposed weights.
    np.testing.assert_allclose(expected_deltas[0], ws[1].T @ ws[2].T @ (acts[-1] - y), rtol=1e-12)
    g_ws, g_bs = jax.grad(
        lambda ws, bs: -jnp.sum(y * jnp.log(_forward(ws, bs, x, act)[1][-1])), argnums=(0, 1)
    )(ws, bs)
    for l in range(len(ws)):
        np.testing.assert_allclose(g_bs[l], expected_deltas[l], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g_ws[l], np.outer(expected_deltas[l], acts[l]), rtol=1e-10)
    # And jaxlr's batched mlp_grad agrees (its weights are the transposes, w_IO = W^T).
    params = {"layers": [{"w": jnp.asarray(w.T), "b": jnp.asarray(b)} for w, b in zip(ws, bs)]}
    g = gradients.mlp_grad(params, x[None], np.argmax(y)[None], 0.0, activation="linear")
    for l in range(len(ws)):
        np.testing.assert_allclose(g["layers"][l]["w"], g_ws[l].T, rtol=1e-10)
        np.testing.assert_allclose(g["layers"][l]["b"], g_bs[l], rtol=1e-10, atol=1e-12)


# --- Cross-entropy facts --------------------------------------------------------------


def test_swapped_cross_entropy_breaks_at_hard_labels():
    """-[a ln y + (1-a) ln(1-y)] with y in {0, 1} hits ln 0: -inf * a = inf, or 0 * ln 0 = nan;
    the correct -[y ln a + (1-y) ln(1-a)] is finite for any a in (0, 1)."""
    a = np.asarray([0.1, 0.5, 0.9])
    with np.errstate(divide="ignore", invalid="ignore"):
        for y in (0.0, 1.0):
            swapped = -(a * np.log(y) + (1 - a) * np.log(1 - y))
            correct = -(y * np.log(a) + (1 - y) * np.log(1 - a))
            assert np.all(np.isinf(swapped))
            assert np.all(np.isfinite(correct))
        # At a in {0, 1} as well the swapped form gives 0 * (-inf) = nan.
        assert np.isnan(-(0.0 * np.log(0.0) + 1.0 * np.log(1.0)))


def test_binary_cross_entropy_is_bernoulli_negative_log_likelihood():
    """-ln P(y | x) with P(y) = a^y (1 - a)^(1 - y), averaged over examples."""
    z_N = RNG.normal(0, 3, size=20)
    y_N = RNG.integers(0, 2, size=20)
    a = _sigmoid(z_N)
    nll = -np.mean(np.log(a**y_N * (1 - a) ** (1 - y_N)))
    np.testing.assert_allclose(losses.binary_cross_entropy(z_N, y_N), nll, rtol=1e-12)


def test_softmax_cross_entropy_is_categorical_negative_log_likelihood():
    """-ln prod_k a_k^{y_k} = -sum_k y_k ln a_k with one-hot y, averaged over examples."""
    z_NK = RNG.normal(0, 3, size=(20, 6))
    y_N = RNG.integers(0, 6, size=20)
    a = np.exp(z_NK) / np.exp(z_NK).sum(1, keepdims=True)
    y_NK = np.eye(6)[y_N]
    nll = -np.mean(np.log(np.prod(a**y_NK, axis=1)))
    np.testing.assert_allclose(losses.softmax_cross_entropy(z_NK, y_N), nll, rtol=1e-12)


def test_cross_entropy_is_minimized_when_prediction_equals_target():
    """For a target y in (0, 1), C(z) = -[y ln s(z) + (1-y) ln(1-s(z))] has its unique
    minimum where s(z) = y; the minimum value is the entropy of y. Likewise for softmax."""
    for y in (0.1, 0.5, 0.83):
        c = lambda z, y=y: losses.binary_cross_entropy(jnp.atleast_1d(z), jnp.asarray([y]))
        z_star = np.log(y / (1 - y))  # sigmoid(z_star) = y
        assert abs(float(jax.grad(c)(z_star))) < 1e-12
        entropy = -(y * np.log(y) + (1 - y) * np.log(1 - y))
        np.testing.assert_allclose(c(z_star), entropy, rtol=1e-12)
        grid = np.linspace(z_star - 5, z_star + 5, 2001)
        values = np.asarray(jax.vmap(c)(jnp.asarray(grid)))
        assert abs(grid[np.argmin(values)] - z_star) < 5e-3
        assert np.all(values >= entropy - 1e-12)
        assert float(jax.grad(jax.grad(c))(z_star)) > 0  # convex: a minimum
    # Softmax: target distribution q; C(z) = -sum q ln softmax(z) is minimal at softmax(z) = q.
    q = np.asarray([0.2, 0.5, 0.3])
    c = lambda z: losses.softmax_cross_entropy(z[None], q[None])
    z_star = jnp.log(jnp.asarray(q))
    np.testing.assert_allclose(jax.grad(c)(z_star), 0.0, atol=1e-12)
    for _ in range(20):
        assert float(c(z_star + RNG.normal(size=3))) > float(c(z_star))
    # With a hard label the infimum 0 is only approached as the prediction tends to y.
    values = [
        float(losses.binary_cross_entropy(jnp.asarray([z]), jnp.asarray([1]))) for z in (1, 5, 20)
    ]
    assert values[0] > values[1] > values[2] > 0


def test_softmax_is_a_soft_argmax_and_logsumexp_a_soft_max():
    """softmax(beta z) -> one-hot of argmax z and logsumexp(beta z)/beta -> max z as beta grows;
    softmax is the gradient of logsumexp (a smooth max), whence the name."""
    z = jnp.asarray([0.3, 1.7, -0.4, 1.2])
    errors = []
    for beta in (1.0, 10.0, 100.0):
        p = jax.nn.softmax(beta * z)
        errors.append(float(jnp.max(jnp.abs(p - jax.nn.one_hot(jnp.argmax(z), 4)))))
        soft_max = jax.nn.logsumexp(beta * z) / beta
        assert float(jnp.max(z)) <= float(soft_max) <= float(jnp.max(z)) + np.log(4) / beta
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-20
    np.testing.assert_allclose(jax.grad(jax.nn.logsumexp)(z), jax.nn.softmax(z), rtol=1e-14)
    # Invariant to shifting every logit (only differences matter).
    np.testing.assert_allclose(jax.nn.softmax(z + 1e3), jax.nn.softmax(z), rtol=1e-12)


def test_output_delta_is_prediction_minus_target():
    """delta^L = dC/dz^L = a^L - y, for softmax + cross-entropy and sigmoid + BCE
    (per example; the batch mean divides by N)."""
    z_NK = jnp.asarray(RNG.normal(size=(5, 4)))
    y_N = RNG.integers(0, 4, size=5)
    grad = jax.grad(losses.softmax_cross_entropy)(z_NK, y_N)
    np.testing.assert_allclose(5 * grad, jax.nn.softmax(z_NK) - np.eye(4)[y_N], rtol=1e-12)
    z_N = jnp.asarray(RNG.normal(size=5))
    y01 = RNG.integers(0, 2, size=5)
    grad = jax.grad(losses.binary_cross_entropy)(z_N, y01)
    np.testing.assert_allclose(5 * grad, jax.nn.sigmoid(z_N) - y01, rtol=1e-12)
    # Through the general form delta^L = J^T grad_a C, with the softmax Jacobian
    # J = diag(a) - a a^T in place of Sigma'(z^L) and grad_a C = -y / a.
    z_K, y_K = z_NK[0], np.eye(4)[y_N[0]]
    a = jax.nn.softmax(z_K)
    jac = jax.jacobian(jax.nn.softmax)(z_K)
    np.testing.assert_allclose(jac, np.diag(a) - np.outer(a, a), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jac.T @ (-y_K / a), a - y_K, rtol=1e-12, atol=1e-15)


# --- The document itself --------------------------------------------------------------


def test_derivations_doc_cites_only_existing_tests():
    """Every section of docs/derivations.md (1.x-5.x) ends by naming tests, and they exist."""
    import importlib
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "docs" / "derivations.md").read_text()
    cited = set(re.findall(r"tests/(test_\w+)\.py::(test_\w+)", text))
    assert len(cited) >= 20
    for module_name, test_name in sorted(cited):
        module = importlib.import_module(module_name)
        assert callable(getattr(module, test_name, None)), f"{module_name}::{test_name} missing"
    sections = re.split(r"\n### ", text)[1:]
    for section in sections:
        title = section.splitlines()[0]
        if re.match(r"[1-5]\.\d", title):
            assert "Checked by" in section, f"section {title!r} names no test"
