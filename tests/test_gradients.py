"""The gradient suite: every hand-derived gradient checked three ways.

1. against ``jax.grad`` of the objective (tight tolerance, same pytree and dtypes);
2. against central finite differences of the objective on every coordinate;
3. with ``jax.test_util.check_grads`` on a function whose derivative is defined by the
   hand-derived gradient (order 2 in forward mode and order 1 in reverse mode; both
   modes at order 2 in the slow exhaustive test).

At random points away from the optimum, for logistic and softmax regression and MLPs
of random depth and widths with every activation, both bias conventions, both L2
conventions, L2 on/off for the bias, lambda = 0 and > 0, float64 and float32, jitted
and not. Every factor is covered by the default tests, with configurations rotating
through the parametrization so that the file runs in under a minute on two CPU cores;
``test_grad_exhaustive`` (marked slow: ``pytest -m slow``) runs the full cross product.
Compilation dominates the run time (~25 ms per compiled program here), hence one jitted
program per model and dtype for the autodiff comparison and few eager tests.

Dimension legend: N examples, D features, K classes.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxlr.core import gradients, losses, models, objective, testing

DTYPES = [jnp.float64, jnp.float32]
MODEL_CASES = ["logistic", "softmax", "mlp-sigmoid", "mlp-tanh", "mlp-relu", "mlp-linear"]
L2_CASES = [("sum", True), ("sum", False), ("half", True), ("half", False)]
CONFIGS = [(bias, conv, l2_bias) for bias in ("trick", "explicit") for conv, l2_bias in L2_CASES]
LAMBDAS = (0.0, 0.37)
NUM_EXAMPLES = 6
NUM_FEATURES = 5  # D: with the bias trick the last of them is the constant 1.
# ReLU is not differentiable at 0; finite differences that straddle a kink disagree
# with any gradient, so only examples whose hidden pre-activations all stay this far
# from 0 are kept (larger than any finite-difference step moves them).
KINK_MARGIN = 0.15


def _seed(*parts) -> int:
    """A stable seed per test case (Python's hash() is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def _architecture(case):
    """(num_classes, hidden widths): random depth and widths, drawn once per case.

    Fixed per case (not per dtype or convention) so that the eager-mode op cache is
    shared between test cases and the suite stays fast.
    """
    if case == "mlp-eager":
        return 3, (4,)  # small and shared: eager mode compiles each op once per shape
    kind = case.partition("-")[0]
    rng = np.random.default_rng(_seed("architecture", case))
    num_classes = 2 if kind == "logistic" else int(rng.integers(3, 6))
    hidden = ()
    if kind == "mlp":
        hidden = tuple(int(h) for h in rng.integers(2, 7, size=int(rng.integers(1, 4))))
    return num_classes, hidden


def _hidden_preactivations_np(layers, x_ND):
    """All hidden z^l (numpy) of an MLP with ReLU, for keeping examples off the kinks."""
    zs, a = [], x_ND
    for layer in layers[:-1]:
        z = a @ layer["w"] + layer.get("b", 0.0)
        zs.append(z)
        a = np.maximum(z, 0.0)
    return zs


def make_case(case, dtype, bias="trick", l2_convention="sum", l2_bias=True, arch=None):
    """A model, a random point (params), a batch and a mask for one test case.

    The point is random (biases included): far from the optimum and from the
    symmetric zero initialisation. ``arch`` names the architecture to draw (default:
    the case's own).
    """
    kind, _, activation = case.partition("-")
    activation = activation or "relu"
    num_classes, hidden = _architecture(arch or case)
    model = objective.make_model(
        kind,
        num_features=NUM_FEATURES,
        num_classes=num_classes,
        hidden=hidden,
        activation=activation,
        bias=bias,
        l2_convention=l2_convention,
        l2_bias=l2_bias,
        dtype=dtype,
    )
    rng = np.random.default_rng(_seed("point", case))
    num_outputs = 1 if kind == "logistic" else num_classes
    sizes = (NUM_FEATURES, *hidden, num_outputs)
    layers = [{"w": rng.normal(0.0, 0.8, size=io)} for io in zip(sizes[:-1], sizes[1:])]
    if bias == "explicit":
        for layer, width in zip(layers, sizes[1:], strict=True):
            layer["b"] = rng.normal(0.0, 0.8, size=width)
    x_ND = rng.normal(0.0, 1.0, size=(256, NUM_FEATURES))
    if bias == "trick":
        x_ND[:, -1] = 1.0
    if activation == "relu" and hidden:
        zs = _hidden_preactivations_np(layers, x_ND)
        keep = np.all([np.all(np.abs(z) >= KINK_MARGIN, axis=1) for z in zs], axis=0)
        x_ND = x_ND[keep]
    assert x_ND.shape[0] >= NUM_EXAMPLES, "not enough examples away from the ReLU kinks"
    x_ND = jnp.asarray(x_ND[:NUM_EXAMPLES], dtype)
    y_N = jnp.asarray(rng.integers(0, num_classes, size=NUM_EXAMPLES), jnp.int32)
    mask_N = jnp.asarray([1, 0, 1, 1, 0, 1], dtype)
    raw = {"layers": layers} if kind == "mlp" else layers[0]
    # The structure and shapes must be exactly what the model's init builds.
    template = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree.map(lambda t, p: jnp.asarray(np.reshape(p, t.shape), t.dtype), template, raw)
    return model, params, x_ND, y_N, mask_N


def _objective_fn(model, x_ND, y_N, l2, mask_N=None):
    return lambda p: model.loss(p, x_ND, y_N, l2, mask_N)[0]


def _max_abs(tree) -> float:
    # numpy, not jnp: eager jnp ops compile once per shape and slow the suite down.
    return max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(jax.device_get(tree)))


def _rotate(case, dtype, offset=0):
    """A per-test index that rotates configurations through the parametrization."""
    return MODEL_CASES.index(case) + 3 * DTYPES.index(dtype) + offset


def _configs_for(case, dtype):
    """Half of CONFIGS for one model and dtype; the two dtypes together cover all.

    Each half holds every value of every factor twice (the configurations whose
    three binary choices have even, resp. odd, parity).
    """
    parity = (MODEL_CASES.index(case) + DTYPES.index(dtype)) % 2
    return [c for i, c in enumerate(CONFIGS) if (i // 4 + i // 2 + i) % 2 == parity]


def _check_against_autodiff(results, labels):
    for (got, expected), label in zip(jax.device_get(results), labels, strict=True):
        assert _max_abs(expected) > 1e-2, f"{label}: test point too close to an optimum"
        testing.assert_tree_allclose(
            got, expected, kind="grad_vs_autodiff", check_dtypes=True, err_msg=label
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_grad_matches_autodiff(case, dtype):
    """Analytic == jax.grad of the objective, jitted: same pytree, same dtypes, tight tol.

    One compiled program per model and dtype covers half of the bias convention x L2
    convention x L2-on-bias configurations (the other dtype covers the other half), at
    lambda = 0 and > 0 (vmapped: lambda is a traced array), with a mask (the unmasked
    mean is covered by the eager test and check_grads).
    """
    lambdas = jnp.asarray(LAMBDAS, dtype)
    configs = _configs_for(case, dtype)
    problems = [make_case(case, dtype, *config) for config in configs]

    @jax.jit
    def both_gradients(lambdas):
        pairs = []
        for model, params, x_ND, y_N, mask_N in problems:

            def analytic(l2, model=model, params=params, x=x_ND, y=y_N, mask=mask_N):
                return model.grad(params, x, y, l2, mask)

            def autodiff(l2, model=model, params=params, x=x_ND, y=y_N, mask=mask_N):
                return jax.grad(lambda p: model.loss(p, x, y, l2, mask)[0])(params)

            pairs.append((jax.vmap(analytic)(lambdas), jax.vmap(autodiff)(lambdas)))
        return pairs

    results, labels = [], []
    for config, pair in zip(configs, jax.device_get(both_gradients(lambdas)), strict=True):
        for i, lam in enumerate(LAMBDAS):
            results.append(jax.tree.map(lambda g, i=i: g[i], pair))
            labels.append(f"{case} {config} l2={lam} mask=True")
    _check_against_autodiff(results, labels)


@pytest.mark.parametrize("case", ["logistic", "softmax", "mlp"])
def test_grad_eager(case):
    """Without jit: analytic == jax.grad at lambda = 0 (unmasked) and lambda > 0 (masked);
    for logistic regression also check_grads (order 2, forward mode) eagerly.

    Eager mode compiles every operation separately (~25 ms each on a small CPU), so this
    is kept small: logistic regression in float64, softmax regression in float32, and
    the four MLP activations in float64 on one shared small architecture (so they share
    the cache of compiled operations). The jitted tests cover every configuration,
    random architectures and both dtypes against autodiff, finite differences and
    check_grads.
    """
    if case == "mlp":
        activations = ("sigmoid", "tanh", "relu", "linear")
        problems = [
            (f"mlp-{act}", jnp.float64, ("explicit", *L2_CASES[i]))
            for i, act in enumerate(activations)
        ]
    else:
        dtype = jnp.float64 if case == "logistic" else jnp.float32
        problems = [(case, dtype, CONFIGS[5 if case == "logistic" else 2])]
    for name, dtype, config in problems:
        arch = "mlp-eager" if case == "mlp" else None
        model, params, x_ND, y_N, mask_N = make_case(name, dtype, *config, arch=arch)
        results, labels = [], []
        for lam in LAMBDAS:
            l2 = jnp.asarray(lam, dtype)
            mask = mask_N if lam else None

            def f(p, l2=l2, mask=mask, model=model, x=x_ND, y=y_N):
                return model.loss(p, x, y, l2, mask)[0]

            results.append((model.grad(params, x_ND, y_N, l2, mask), jax.grad(f)(params)))
            labels.append(f"{name} {config} l2={lam} mask={mask is not None}")
        _check_against_autodiff(results, labels)
        if case == "logistic":
            _check_grads_analytic(model, params, x_ND, y_N, l2, dtype, False, ("fwd",), rev=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_grad_matches_finite_differences(case, dtype):
    """Analytic == central finite differences of the objective, on every coordinate.

    One configuration per test, rotating through the bias and L2 conventions, with a
    mask; lambda = 0 or > 0 alternates so that every model sees both. The analytic
    gradient is jitted (``test_grad_eager`` covers eager mode).
    """
    index = _rotate(case, dtype, 2)
    config = CONFIGS[index % len(CONFIGS)]
    lam = LAMBDAS[(MODEL_CASES.index(case) + DTYPES.index(dtype)) % 2]
    model, params, x_ND, y_N, mask_N = make_case(case, dtype, *config)
    l2 = jnp.asarray(lam, dtype)
    f = _objective_fn(model, x_ND, y_N, l2, mask_N)
    numeric = testing.finite_difference_grad(f, params, eps=testing.fd_eps(dtype))
    got = jax.jit(model.grad)(params, x_ND, y_N, l2, mask_N)
    testing.assert_tree_allclose(
        got, numeric, kind="finite_difference", err_msg=f"{case} {config} l2={lam}"
    )


def _check_grads_analytic(model, params, x_ND, y_N, l2, dtype, jit, modes_order2, rev=True):
    """check_grads on the objective whose derivative is defined by ``model.grad``.

    Order 2 in ``modes_order2``, then order 1 in reverse mode if ``rev`` and not done.
    """
    f = _objective_fn(model, x_ND, y_N, l2)
    fn = testing.objective_with_grad(f, lambda p: model.grad(p, x_ND, y_N, l2))
    if jit:
        fn = jax.jit(fn)
    tol = testing.tolerance(dtype, "check_grads")
    check_grads(fn, (params,), order=2, modes=modes_order2, **tol)
    if rev and "rev" not in modes_order2:
        check_grads(fn, (params,), order=1, modes=("rev",), **tol)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_grad_passes_check_grads(case):
    """jax.test_util.check_grads on f whose derivative is defined by the analytic gradient.

    Order 1 (forward and reverse mode) compares the hand-derived gradient with finite
    differences of the objective along random directions; order 2 (forward mode)
    differentiates through the hand-derived gradient (a Hessian-vector product) and
    checks that against finite differences of the gradient. With the derivative given
    as a JVP, reverse mode is its transpose and checks the same numbers, so order 2 in
    reverse mode is left to the slow exhaustive test. The dtype alternates between
    models; jitted (``test_grad_eager`` runs check_grads eagerly on the linear models).
    """
    index = MODEL_CASES.index(case)
    dtype = DTYPES[index % 2]
    config = CONFIGS[(3 * index + 1) % len(CONFIGS)]
    model, params, x_ND, y_N, _ = make_case(case, dtype, *config)
    l2 = jnp.asarray(LAMBDAS[1], dtype)
    _check_grads_analytic(model, params, x_ND, y_N, l2, dtype, True, ("fwd",))


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_grad_exhaustive(case, dtype, jit):
    """The full cross product (slow): every configuration, all three checks.

    For each bias convention x L2 convention x L2-on-bias: analytic == jax.grad at
    lambda = 0 and > 0, with and without a mask; == finite differences; and
    check_grads of order 2 in forward and reverse mode.
    """
    for config in CONFIGS:
        model, params, x_ND, y_N, mask_N = make_case(case, dtype, *config)
        grad_fn = jax.jit(model.grad) if jit else model.grad
        results, labels = [], []
        for lam in LAMBDAS:
            l2 = jnp.asarray(lam, dtype)
            for mask in (None, mask_N):

                def objective(p, model=model, x=x_ND, y=y_N, l2=l2, mask=mask):
                    return model.loss(p, x, y, l2, mask)[0]

                autodiff = jax.jit(jax.grad(objective)) if jit else jax.grad(objective)
                results.append((grad_fn(params, x_ND, y_N, l2, mask), autodiff(params)))
                labels.append(f"{case} {config} l2={lam} mask={mask is not None}")
            numeric = testing.finite_difference_grad(
                _objective_fn(model, x_ND, y_N, l2, mask_N), params, eps=testing.fd_eps(dtype)
            )
            testing.assert_tree_allclose(
                grad_fn(params, x_ND, y_N, l2, mask_N),
                numeric,
                kind="finite_difference",
                err_msg=f"{case} {config} l2={lam}",
            )
            _check_grads_analytic(model, params, x_ND, y_N, l2, dtype, jit, ("fwd", "rev"))
        _check_against_autodiff(results, labels)


def test_check_grads_catches_a_wrong_gradient():
    """The check_grads harness is not vacuous: a gradient off by 1% in one leaf fails."""
    model, params, x_ND, y_N, _ = make_case("softmax", jnp.float64)
    l2 = jnp.asarray(0.1)
    f = _objective_fn(model, x_ND, y_N, l2)

    def wrong_grad(p):
        g = model.grad(p, x_ND, y_N, l2)
        return {**g, "w": 1.01 * g["w"]}

    with pytest.raises(AssertionError):
        check_grads(
            testing.objective_with_grad(f, wrong_grad),
            (params,),
            order=1,
            modes=("rev",),
            **testing.tolerance(jnp.float64, "check_grads"),
        )


@pytest.mark.parametrize("case", ["logistic", "softmax", "mlp-relu"])
def test_l2_bias_convention_drops_only_the_bias(case):
    """l2_bias=False changes the gradient only in the bias entries, by exactly c*lambda*b."""
    for bias in ("trick", "explicit"):
        model_on, params, x_ND, y_N, _ = make_case(case, jnp.float64, bias, "sum", True)
        kind, _, act = case.partition("-")
        model_off = objective.make_model(
            kind,
            num_features=x_ND.shape[1],
            num_classes=model_on.num_classes,
            hidden=tuple(layer["w"].shape[1] for layer in params.get("layers", [])[:-1]),
            activation=act or "relu",
            bias=bias,
            l2_convention="sum",
            l2_bias=False,
        )
        l2 = jnp.asarray(0.5)
        diff = jax.tree.map(
            lambda a, b: a - b,
            model_on.grad(params, x_ND, y_N, l2),
            model_off.grad(params, x_ND, y_N, l2),
        )
        # Expected difference built by hand: 2 * lambda * (bias entries), 0 elsewhere.
        layers = params["layers"] if "layers" in params else [params]
        diff_layers = diff["layers"] if "layers" in diff else [diff]
        for i, (p, d) in enumerate(zip(layers, diff_layers, strict=True)):
            expected_w = np.zeros(p["w"].shape)
            if bias == "trick" and i == 0:
                expected_w[-1] = 2 * 0.5 * np.asarray(p["w"][-1])
            np.testing.assert_allclose(d["w"], expected_w, atol=1e-12)
            if bias == "explicit":
                np.testing.assert_allclose(d["b"], 2 * 0.5 * np.asarray(p["b"]), atol=1e-12)


@pytest.mark.parametrize("convention,coef", [("sum", 2.0), ("half", 1.0)])
def test_l2_gradient_conventions(convention, coef):
    """d(lambda R)/dw is 2 lambda w for R = sum w^2 and lambda w for R = 1/2 sum w^2."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=3))}
    lam = 0.3
    by_hand = {"w": coef * lam * params["w"], "b": coef * lam * params["b"]}
    autodiff = jax.grad(lambda p: lam * losses.l2_penalty(p, convention))(params)
    analytic = jax.tree.map(lambda g: lam * g, gradients.l2_penalty_grad(params, convention))
    testing.assert_tree_allclose(analytic, by_hand, kind="grad_vs_autodiff")
    testing.assert_tree_allclose(autodiff, by_hand, kind="grad_vs_autodiff")


def test_grad_vmaps_over_lambda():
    """lambda is an ordinary array argument: vmap over it equals the loop, one trace."""
    model, params, x_ND, y_N, _ = make_case("softmax", jnp.float64, "trick", "half", False)
    lams = jnp.asarray([0.0, 0.1, 1.0, 3.0])
    counted = testing.count_traces(model.grad)
    batched = jax.jit(jax.vmap(counted, in_axes=(None, None, None, 0)))(params, x_ND, y_N, lams)
    assert counted.count == 1
    for i, lam in enumerate(lams):
        testing.assert_tree_allclose(
            jax.tree.map(lambda g, i=i: g[i], batched),
            model.grad(params, x_ND, y_N, lam),
            kind="grad_vs_autodiff",
        )


def test_mlp_without_hidden_layers_is_softmax_regression():
    """An MLP with no hidden layer has exactly softmax regression's gradient."""
    model, params, x_ND, y_N, _ = make_case("softmax", jnp.float64, "explicit")
    mlp_params = {"layers": [params]}
    g_mlp = gradients.mlp_grad(mlp_params, x_ND, y_N, 0.2, activation="tanh")
    g_lin = gradients.softmax_grad(params, x_ND, y_N, 0.2)
    testing.assert_tree_allclose(g_mlp["layers"][0], g_lin, kind="grad_vs_autodiff")


def test_mlp_grad_with_one_output_is_logistic_regression():
    """mlp_grad with output width 1 uses sigmoid + BCE: equals logistic_grad and jax.grad."""
    model, params, x_ND, y_N, _ = make_case("logistic", jnp.float64, "explicit")
    g_mlp = gradients.mlp_grad({"layers": [params]}, x_ND, y_N, 0.2)
    g_lin = gradients.logistic_grad(params, x_ND, y_N, 0.2)
    testing.assert_tree_allclose(g_mlp["layers"][0], g_lin, kind="grad_vs_autodiff")
    # And a hidden layer in front, against autodiff.
    rng = np.random.default_rng(3)
    mlp = {
        "layers": [
            {"w": jnp.asarray(rng.normal(size=(x_ND.shape[1], 4))), "b": jnp.zeros(4) + 0.1},
            {"w": jnp.asarray(rng.normal(size=(4, 1))), "b": jnp.asarray([0.2])},
        ]
    }

    def obj(p):
        logits_N = models.mlp_apply(p, x_ND, "sigmoid")[:, 0]
        return losses.binary_cross_entropy(logits_N, y_N) + 0.2 * losses.l2_penalty(p)

    testing.assert_tree_allclose(
        gradients.mlp_grad(mlp, x_ND, y_N, 0.2, activation="sigmoid"),
        jax.grad(obj)(mlp),
        kind="grad_vs_autodiff",
    )


@pytest.mark.parametrize("case", ["logistic", "softmax", "mlp-relu"])
def test_gradients_finite_at_extreme_logits_float32(case):
    """Saturated outputs (|logits| > 1e3 in float32) give finite, correct gradients."""
    model, params, x_ND, y_N, _ = make_case(case, jnp.float32)
    big = jax.tree.map(lambda p: jnp.asarray(np.asarray(p) * 3e3), params)
    logits = jax.jit(model.apply)(big, x_ND)
    assert np.max(np.abs(np.asarray(logits))) > 1e3
    l2 = jnp.asarray(0.0, jnp.float32)
    got = jax.jit(model.grad)(big, x_ND, y_N, l2)
    expected = jax.jit(jax.grad(lambda p: model.loss(p, x_ND, y_N, l2)[0]))(big)
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # Values are large here, so compare relative to the largest entry.
    scale = _max_abs(expected)
    testing.assert_tree_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
