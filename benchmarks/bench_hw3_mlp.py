"""Times one epoch of the hw3_mlp protocol: jaxlr (analytic and jax.grad) vs PyTorch vs floor.

The protocol of the `hw3_mlp` experiment: 784-3136-1568-10 ReLU network with explicit biases,
pixels / 255, mean softmax cross-entropy, plain SGD with learning rate 0.1, batches of 32
from a fresh permutation every epoch (1,875 steps over 60,000 images, the last partial batch
dropped). Measured, each the best of `--repeats` interleaved rounds (the least disturbed by
other processes on a shared machine):

  * jaxlr, `--grad=analytic` and `--grad=autodiff`: one epoch of the training engine
    (`jaxlr.engine.train.make_engine(...).run`, the compiled `lax.scan` over the epoch that
    `hw3_mlp` runs), compiled beforehand; checks are scheduled outside the timed epoch, so
    this is the update alone;
  * PyTorch on the CPU (`benchmarks/torch_mlp.py`, run by the Python of its own environment,
    `--torch_python` or $TORCH_PYTHON, default /tmp/torchenv/bin/python): the same network,
    data and protocol in eager mode, timed after 20 warm-up steps;
  * the floor: the floating-point work of the epoch's matrix products (forward, the weight
    gradients and the backward products of layers 2 and 3; element-wise work ignored)
    divided by the peak float32 matmul rate measured through JAX (best of large square
    products), measured in every round beside the runs;
  * the step's matrix products alone: each product of one step at its real shape (32 rows,
    or a contraction over 32), jitted and timed by itself; their sum times the steps of an
    epoch is what an epoch would cost if nothing but the products took time.

    python -m benchmarks.bench_hw3_mlp --data_dir=../shared/data [--repeats=2]
        [--torch_python=/tmp/torchenv/bin/python] [--num_train=60000] [--out=FILE.json]

Set up the PyTorch side once (not a jaxlr dependency):
    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy

Dimension legend: N training examples, D features (784), H hidden units, K classes (10),
B batch size, M steps per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_sweep import peak_matmul_flops
from jaxlr.data import images as jimages
from jaxlr.data import registry as jregistry
from jaxlr.engine import batches as jbatches
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.step import Data
from jaxlr.engine.train import make_engine, model_for

HERE = Path(__file__).resolve().parent
SIZES = (784, 3136, 1568, 10)


def mlp_epoch_flops(sizes, batch_size: int, steps: int) -> float:
    """Matrix-product FLOPs of `steps` SGD steps of an MLP of widths `sizes`.

    Per step and layer (I -> O): the forward product 2 B I O and the weight gradient 2 B I O;
    the backward product delta @ W^T (2 B I O) for every layer but the first (its input
    gradient is not needed).
    """
    total = 0.0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        per = 2.0 * batch_size * fan_in * fan_out
        total += 2 * per + (per if i > 0 else 0.0)
    return total * steps


def step_gemm_seconds(sizes, batch_size: int, repeats: int = 50) -> dict:
    """Seconds of each matrix product of one SGD step, each alone, jitted, best of 5 x repeats.

    The products of the floor at their real shapes (B = 32 rows or a contraction over 32):
    the forward products, the backward products of layers 2.., and the weight gradients.
    Their sum is what the step would cost if everything else were free.
    """
    rng = np.random.default_rng(0)

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    out = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        a_BI, w_IO, d_BO = arr(batch_size, fan_in), arr(fan_in, fan_out), arr(batch_size, fan_out)
        cases = {f"forward {i + 1}": (lambda a, w: a @ w, a_BI, w_IO)}
        if i > 0:
            cases[f"backward {i + 1}"] = (lambda d, w: jnp.einsum("no,io->ni", d, w), d_BO, w_IO)
        cases[f"weight grad {i + 1}"] = (lambda a, d: jnp.einsum("ni,no->io", a, d), a_BI, d_BO)
        for name, (fn, x, y) in cases.items():
            f = jax.jit(fn)
            f(x, y).block_until_ready()
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(repeats):
                    r = f(x, y)
                r.block_until_ready()
                best = min(best, (time.perf_counter() - t0) / repeats)
            out[name] = best
    return out


def hw3_config(grad: str, num_steps: int) -> TrainConfig:
    """The hw3_mlp TrainConfig, with checks every 10 epochs (none in the timed epoch 1)."""
    return TrainConfig(
        model="mlp",
        num_classes=10,
        hidden=SIZES[1:-1],
        activation="relu",
        bias="explicit",
        grad=grad,
        optimizer="sgd",
        batch_size=32,
        num_epochs=2,
        shuffle=True,
        eval_every=10 * num_steps,
        train_eval_size=1000,
    )


class JaxlrEpoch:
    """One compiled epoch of the jaxlr engine for one gradient kind."""

    def __init__(self, grad: str, data: Data):
        n = int(data.x_train.shape[0])
        m = jbatches.num_batches(n, 32)
        self.config = hw3_config(grad, m)
        self.model = model_for(self.config, SIZES[0], jnp.float32)
        self.engine = make_engine(self.config, self.model, n)
        self.hp = make_hparams(0.1, dtype=jnp.float32)
        self.data = data
        self.state = jax.jit(self.engine.init)(self.hp)
        t0 = time.perf_counter()
        self.run = (
            jax.jit(self.engine.run, static_argnums=4)
            .lower(self.state, self.hp, data, 1, 1)
            .compile()
        )
        self.compile_seconds = time.perf_counter() - t0
        self.steps = m

    def time_epoch(self) -> float:
        """Seconds of one epoch (epoch index 1: no check among its steps)."""
        t0 = time.perf_counter()
        state, logs = self.run(self.state, self.hp, self.data, 1)
        jax.block_until_ready((state, logs))
        dt = time.perf_counter() - t0
        assert int(np.sum(np.asarray(logs.is_check))) == 0, "a check fell in the timed epoch"
        self.trained = state
        return dt

    def test_accuracy(self, x_test, y_test) -> float:
        logits = jax.jit(self.model.apply)(self.trained.params, x_test)
        return float(self.model.accuracy(logits, y_test))


def run_torch(python: str, data_dir: str | None, num_train: int, timeout: float) -> dict:
    """One PyTorch epoch in a subprocess of the benchmark environment's Python."""
    cmd = [python, str(HERE / "torch_mlp.py"), f"--num_train={num_train}"]
    if data_dir:
        cmd.append(f"--data_dir={data_dir}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR"))
    parser.add_argument("--num_train", type=int, default=60000)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--torch_python",
        default=os.environ.get("TORCH_PYTHON", "/tmp/torchenv/bin/python"),
        help="Python of the environment with PyTorch ('' to skip the PyTorch side)",
    )
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()

    ds = jregistry.load_dataset("mnist", args.data_dir)
    x_tr = jimages.preprocess(ds.x_train[: args.num_train], scale="unit", bias=False)
    x_te = jimages.preprocess(ds.x_test, scale="unit", bias=False)
    y_tr = np.asarray(ds.y_train[: args.num_train], np.int32)
    y_te = np.asarray(ds.y_test, np.int32)
    data = Data(
        jnp.asarray(x_tr), jnp.asarray(y_tr), jnp.asarray(x_te[:1000]), jnp.asarray(y_te[:1000])
    )

    runners = {g: JaxlrEpoch(g, data) for g in ("analytic", "autodiff")}
    m = runners["analytic"].steps
    flops = mlp_epoch_flops(SIZES, 32, m)
    times: dict[str, list[float]] = {g: [] for g in runners} | {"torch": []}
    peaks: list[float] = []
    torch_info: dict = {}
    use_torch = bool(args.torch_python) and Path(args.torch_python).exists()
    if args.torch_python and not use_torch:
        print(f"PyTorch side skipped: {args.torch_python} not found", file=sys.stderr)
    for r in range(args.repeats):
        peaks.append(peak_matmul_flops(sizes=(2048, 3072, 4096), repeats=3))
        for g, runner in runners.items():
            times[g].append(runner.time_epoch())
            print(f"round {r + 1}: jaxlr {g} {times[g][-1]:.2f} s", file=sys.stderr)
        if use_torch:
            torch_info = run_torch(args.torch_python, args.data_dir, args.num_train, 3600)
            times["torch"].append(torch_info["epoch_seconds"])
            print(f"round {r + 1}: torch {times['torch'][-1]:.2f} s", file=sys.stderr)
    peak = max(peaks)
    floor = flops / peak
    gemms = step_gemm_seconds(SIZES, 32)
    best = {k: min(v) for k, v in times.items() if v}
    result = {
        "protocol": "hw3_mlp, one epoch: 784-3136-1568-10 relu, SGD lr 0.1, batch 32, shuffle",
        "steps_per_epoch": m,
        "epoch_gflop": flops / 1e9,
        "peak_matmul_gflops": peak / 1e9,
        "peak_matmul_gflops_rounds": [p / 1e9 for p in peaks],
        "floor_seconds": floor,
        "step_gemm_ms": {k: 1e3 * v for k, v in gemms.items()},
        "step_gemms_alone_epoch_seconds": sum(gemms.values()) * m,
        "epoch_seconds": best,
        "epoch_seconds_rounds": times,
        "compile_seconds": {g: r.compile_seconds for g, r in runners.items()},
        "test_accuracy_after_epoch": {
            g: r.test_accuracy(jnp.asarray(x_te), jnp.asarray(y_te)) for g, r in runners.items()
        },
        "torch": torch_info,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "load_avg": os.getloadavg(),
        },
    }
    if "torch" in best:
        result["test_accuracy_after_epoch"]["torch"] = torch_info.get("test_accuracy_after")
        result["speedup_vs_torch"] = {g: best["torch"] / best[g] for g in runners}
    result["times_floor"] = {k: v / floor for k, v in best.items()}
    result["analytic_over_autodiff"] = best["analytic"] / best["autodiff"]

    rows = [
        "| side | s / epoch | ms / step | x floor | speed-up vs PyTorch |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in best.items():
        sp = result.get("speedup_vs_torch", {}).get(k)
        side = f"PyTorch {torch_info.get('torch_version', '')}" if k == "torch" else f"jaxlr {k}"
        rows.append(
            f"| {side}"
            f" | {v:.2f} | {1e3 * v / m:.2f} | {v / floor:.2f} | {f'{sp:.2f}x' if sp else '-'} |"
        )
    rows.append(
        f"| floor ({flops / 1e9:.0f} GFLOP at {peak / 1e9:.0f} GFLOP/s) | {floor:.2f} | "
        f"{1e3 * floor / m:.2f} | 1.00 | - |"
    )
    g = sum(gemms.values()) * m
    rows.append(
        f"| the step's matrix products alone ({len(gemms)} jitted products at their shapes) | "
        f"{g:.2f} | {1e3 * g / m:.2f} | {g / floor:.2f} | - |"
    )
    print("\n".join(rows))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
