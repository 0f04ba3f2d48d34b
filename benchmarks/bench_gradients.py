"""Benchmark: the hand-derived gradient step against the jax.grad step, both jitted.

One SGD step ``params - lr * grad`` of the objective (mean cross-entropy + lambda R(w)),
with the gradient from ``jaxlr.core.gradients`` (analytic) or from ``jax.grad`` of the
model's loss (autodiff). Each step is compiled first (warm-up calls), then timed call
by call with ``block_until_ready``; the table gives the median and the interquartile
range in milliseconds, and the ratio of the medians (jax.grad / analytic: above 1
means the analytic step is faster).

Usage (from the repository root):
  python benchmarks/bench_gradients.py                  # default cases, float32
  python benchmarks/bench_gradients.py --repeats 200 --cases logistic softmax

Dimension legend: N batch size, D features (785 with the bias trick), K classes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxlr.core import objective, testing  # noqa: E402

# name -> (make_model kwargs, batch size)
CASES = {
    "logistic": (dict(kind="logistic", num_features=785), 128),
    "softmax": (dict(kind="softmax", num_features=785, num_classes=10), 128),
    "mlp-small": (
        dict(kind="mlp", num_features=784, hidden=(64,), bias="explicit", activation="sigmoid"),
        32,
    ),
    "mlp-hw3": (
        dict(kind="mlp", num_features=784, hidden=(3136, 1568), bias="explicit", activation="relu"),
        32,
    ),
}


def _time_calls(fn, args, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn(*args)``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def bench_case(name: str, repeats: int, warmup: int, dtype) -> dict:
    """Times the analytic and the autodiff SGD step of one case."""
    kwargs, batch = CASES[name]
    init = "normal" if kwargs["kind"] != "mlp" else None
    model = objective.make_model(**kwargs, init=init, init_std=0.01, dtype=dtype)
    key_init, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    params = model.init(key_init)
    x_ND = jax.random.uniform(key_x, (batch, kwargs["num_features"]), dtype, -1.0, 1.0)
    if kwargs.get("bias", "trick") == "trick":
        x_ND = x_ND.at[:, -1].set(1.0)
    y_N = jax.random.randint(key_y, (batch,), 0, model.num_classes)
    l2 = jnp.asarray(1e-3, dtype)
    lr = jnp.asarray(0.1, dtype)

    def sgd(params, grads):
        return jax.tree.map(lambda p, g: p - lr.astype(p.dtype) * g, params, grads)

    @jax.jit
    def analytic_step(params, x_ND, y_N):
        return sgd(params, model.grad(params, x_ND, y_N, l2))

    @jax.jit
    def autodiff_step(params, x_ND, y_N):
        grads = jax.grad(lambda p: model.loss(p, x_ND, y_N, l2)[0])(params)
        return sgd(params, grads)

    # Sanity check before timing: the two steps agree.
    testing.assert_tree_allclose(
        analytic_step(params, x_ND, y_N),
        autodiff_step(params, x_ND, y_N),
        kind="grad_vs_autodiff",
        err_msg=name,
    )
    # Interleave the two so that drifting machine load affects both alike.
    t_an, t_ad = [], []
    for _ in range(max(1, repeats // 10)):
        t_an += _time_calls(analytic_step, (params, x_ND, y_N), 10, warmup)
        t_ad += _time_calls(autodiff_step, (params, x_ND, y_N), 10, warmup)
        warmup = 1
    num_params = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    return dict(name=name, batch=batch, num_params=num_params, analytic=t_an, autodiff=t_ad)


def _fmt(times: list[float]) -> str:
    q1, med, q3 = np.percentile(np.asarray(times) * 1e3, [25, 50, 75])
    return f"{med:.3f} ({q1:.3f}-{q3:.3f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per step")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)

    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {args.dtype}, "
        f"{args.repeats} timed calls per step, median (IQR) in ms"
    )
    print()
    header = "| model | batch | parameters | analytic step (ms) | jax.grad step (ms) | ratio |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.cases:
        r = bench_case(name, args.repeats, args.warmup, dtype)
        ratio = statistics.median(r["autodiff"]) / statistics.median(r["analytic"])
        print(
            f"| {name} | {r['batch']} | {r['num_params']:,} | {_fmt(r['analytic'])} | "
            f"{_fmt(r['autodiff'])} | {ratio:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
