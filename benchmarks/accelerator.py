"""One table on whatever backend JAX sees: the hw3 MLP epoch, task-2 grids of 256 and 1024 points,
the 32-lambda regularization path; each workload's numbers checked against the CPU's.

Workloads (the protocols of the experiments and of the other benchmarks):

  * `hw3 MLP epoch`: the `hw3_mlp` network (784-3136-1568-10 ReLU, explicit biases, pixels /
    255, SGD lr 0.1, batch 32, shuffling), one epoch of the training engine's compiled
    `lax.scan` (`make_engine(...).run`) over `--mlp_train` images (60,000 in full);
  * `task-2 grid S`: `run_sweep` of the `tdt4265_task2` protocol (logistic regression 2 vs 3,
    batch 128, no shuffling, one seed, no early stopping) over S = 256 (16 lr x 16 lambda) and
    1024 (32 x 32) points, lr log-spaced over [1e-3, 1], lambda 0 and log-spaced over
    [1e-4, 1e-2], `--grid_epochs` epochs (50 in full, the task's);
  * `regularization path`: `solve_path` (float64 Newton-CG, tol 1e-10) of 9 vs 4 (the
    `hw3_logreg_grid` problem, N 9,847) over 32 lambdas from 1 to 1e-4.

Each workload is timed on the default backend's devices: the first call (compilation
included) and a second call (a new grid of the same size, the next epoch, the same path).
Then the same arithmetic is run on the CPU (`jax.devices("cpu")`) on a subset (`--check_*`:
fewer MLP images, every k-th grid point, every 4th lambda) and compared with the default
backend's numbers of that subset: per-step training losses of the MLP, every checked point's
final training and validation loss, every checked lambda's optimum objective. When the
default backend is the CPU, the reference is the CPU itself and the check is trivial (the
table says so).

    python -m benchmarks.accelerator --data_dir=../shared/data [--quick]
        [--precision=highest] [--out=FILE.json]

`--quick` (under ~3 minutes on the 2-core CPU when it is not shared): 3,200 MLP images, 3 grid
epochs, 8 of the path's lambdas (every 4th, the range kept). Tolerances:
float32 losses of the same training on two backends differ by rounding that SGD carries
along, `--rtol` (default 1e-3) relative; float64 optima agree to 1e-9 (both solved to a
gradient norm of 1e-10). GPUs may run float32 matrix products in TF32 unless
`--precision=highest`; the table names the precision.

Dimension legend: S grid points, L lambdas, N training examples, T steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax

# The path is float64; everything else asks for float32 explicitly.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_hw3_mlp import SIZES, hw3_config  # noqa: E402
from benchmarks.bench_regpath import LAMBDAS_L, load_9_vs_4  # noqa: E402
from benchmarks.bench_sweep_scale import load_task2  # noqa: E402
from jaxlr.core import solver  # noqa: E402
from jaxlr.core.objective import make_model  # noqa: E402
from jaxlr.data import images as jimages  # noqa: E402
from jaxlr.data import registry as jregistry  # noqa: E402
from jaxlr.engine import batches as jbatches  # noqa: E402
from jaxlr.engine import grid as jgrid  # noqa: E402
from jaxlr.engine import sweep as jsweep  # noqa: E402
from jaxlr.engine.config import TrainConfig, make_hparams  # noqa: E402
from jaxlr.engine.step import Data  # noqa: E402
from jaxlr.engine.train import make_engine, model_for  # noqa: E402

PATH_RTOL = 1e-9


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) if a.size else 0.0


# ---------------------------------------------------------------------------------------------
# Workloads: each returns (first-call seconds, second-call seconds, numbers to compare).


def mlp_data(data_dir, num_train: int) -> Data:
    ds = jregistry.load_dataset("mnist", data_dir, download=False)
    x_tr = jimages.preprocess(ds.x_train[:num_train], scale="unit", bias=False)
    x_te = jimages.preprocess(ds.x_test[:1000], scale="unit", bias=False)
    y_tr, y_te = ds.y_train[:num_train], ds.y_test[:1000]
    return Data(x_tr, np.asarray(y_tr, np.int32), x_te, np.asarray(y_te, np.int32))


def mlp_epoch(data: Data, device) -> tuple[float, float, np.ndarray]:
    """hw3_mlp on `device`: compile + epoch 0, then epoch 1 (both from the initial state, as
    `bench_hw3_mlp` times it); the numbers: epoch 1's per-step training losses [T]."""
    n = int(data.x_train.shape[0])
    config = hw3_config("analytic", jbatches.num_batches(n, 32))
    with jax.default_device(device):
        model = model_for(config, SIZES[0], jnp.float32)
        engine = make_engine(config, model, n)
        hp = make_hparams(0.1, dtype=jnp.float32)
        data_dev = jax.device_put(data, device)
        state = jax.block_until_ready(jax.jit(engine.init)(hp))
        t0 = time.perf_counter()
        run = jax.jit(engine.run, static_argnums=4).lower(state, hp, data_dev, 0, 1).compile()
        jax.block_until_ready(run(state, hp, data_dev, 0))
        first = time.perf_counter() - t0
        second, (_, logs) = _timed(lambda: run(state, hp, data_dev, 1))
    return first, second, np.asarray(logs.train_loss)


def task2_grid(points: int, epochs: int) -> tuple[TrainConfig, list]:
    """The config and two grids (the second for the steady-state call) of S points."""
    side = int(round(points**0.5))
    cfg = TrainConfig(
        model="logistic", batch_size=128, num_epochs=epochs, shuffle=False, early_stopping=False
    )
    grids = []
    for shift in (1.0, 1.01):
        lrs = tuple(shift * np.geomspace(1e-3, 1.0, side))
        l2s = (0.0, *np.geomspace(1e-4, 1e-2, side - 1))
        grids.append(jgrid.make_grid(learning_rate=lrs, l2=l2s, dtype=np.float32))
    return cfg, grids


def sweep_numbers(result) -> np.ndarray:
    return np.stack([result.metrics["train_loss"], result.metrics["val_loss"]], axis=1)


def grid_run(cfg, grid, data, devices) -> tuple[float, np.ndarray]:
    seconds, res = _timed(
        lambda: jsweep.run_sweep(cfg, grid, data, devices=devices, log_fn=_quiet, progress=False)
    )
    return seconds, sweep_numbers(res)


def _quiet(_msg: str) -> None:
    pass


def sub_grid(grid, every: int):
    """Every `every`-th point of `grid` (a point's numbers do not depend on its block)."""
    idx = np.arange(0, grid.size, every)
    return idx, jgrid.grid_from_points([grid.point(int(i)) for i in idx], dtype=np.float32)


def path_run(model, x, y, lambdas, device) -> tuple[float, np.ndarray]:
    with jax.default_device(device):
        xd, yd = jax.device_put(x, device), jax.device_put(y, device)
        seconds, res = _timed(
            lambda: solver.solve_path(model, xd, yd, lambdas, tol=1e-10, progress=False)
        )
    return seconds, np.asarray(res.objective, np.float64)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR"))
    parser.add_argument("--quick", action="store_true", help="fewer MLP images, grid epochs")
    parser.add_argument("--mlp_train", type=int, default=None, help="MLP images (60000 full)")
    parser.add_argument("--grid_epochs", type=int, default=None, help="grid epochs (50 full)")
    parser.add_argument("--check_mlp_train", type=int, default=3200, help="MLP images checked")
    parser.add_argument("--check_every", type=int, default=16, help="every k-th grid point")
    parser.add_argument("--rtol", type=float, default=1e-3, help="float32 check, relative")
    parser.add_argument("--precision", default="", help="jax_default_matmul_precision")
    parser.add_argument(
        "--reference",
        default="auto",
        choices=("auto", "always"),
        help="always: run the CPU reference even when the default backend is the CPU",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    mlp_n = args.mlp_train or (3200 if args.quick else 60000)
    epochs = args.grid_epochs or (3 if args.quick else 50)
    backend = jax.default_backend()
    devices = tuple(jax.devices())
    cpu = jax.devices("cpu")[0]
    on_cpu = backend == "cpu" and args.reference == "auto"
    ref_name = "CPU itself (default backend is the CPU: trivial)" if on_cpu else "CPU"
    print(
        f"backend {backend}: {len(devices)} x {devices[0].device_kind}; reference: {ref_name}; "
        f"{'quick' if args.quick else 'full'} mode; matmul precision "
        f"{args.precision or 'default'}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []

    def add(workload, size, first, second, ref_subset, diff, tol):
        ok = diff <= tol
        rows.append(
            dict(
                workload=workload,
                size=size,
                first_seconds=first,
                second_seconds=second,
                checked=ref_subset,
                max_rel_diff=diff,
                tol=tol,
                ok=bool(ok),
            )
        )
        print(
            f"  {workload} ({size}): first {first:.2f} s, second {second:.2f} s; vs {ref_name} "
            f"on {ref_subset}: max rel diff {diff:.2e} (tol {tol:g}) {'ok' if ok else 'FAILED'}",
            flush=True,
        )

    # hw3 MLP epoch.
    data = mlp_data(args.data_dir, max(mlp_n, args.check_mlp_train))
    full = Data(data.x_train[:mlp_n], data.y_train[:mlp_n], data.x_val, data.y_val)
    first, second, losses = mlp_epoch(full, devices[0])
    if on_cpu:
        here = ref = losses
        checked = f"{mlp_n:,} images: epoch 1's {len(losses)} step losses"
    else:
        n = args.check_mlp_train
        small = Data(data.x_train[:n], data.y_train[:n], data.x_val, data.y_val)
        here = losses if n == mlp_n else mlp_epoch(small, devices[0])[2]
        ref = mlp_epoch(small, cpu)[2]
        checked = f"{n:,} images: epoch 1's {len(here)} step losses"
    add(
        "hw3 MLP epoch",
        f"{mlp_n:,} images, {jbatches.num_batches(mlp_n, 32)} steps",
        first,
        second,
        checked,
        _rel_diff(here, ref),
        args.rtol,
    )

    # task-2 grids.
    task2 = load_task2(args.data_dir)
    for points in (256, 1024):
        cfg, (grid_a, grid_b) = task2_grid(points, epochs)
        first, numbers = grid_run(cfg, grid_a, task2, devices)
        second, _ = grid_run(cfg, grid_b, task2, devices)
        idx, sub = sub_grid(grid_a, args.check_every)
        ref = numbers[idx] if on_cpu else grid_run(cfg, sub, task2, (cpu,))[1]
        add(
            f"task-2 grid {points}",
            f"{points} points x {epochs} epochs",
            first,
            second,
            f"{len(idx)} points (every {args.check_every}th): train and val loss",
            _rel_diff(numbers[idx], ref),
            args.rtol,
        )

    # The regularization path (float64).
    x, y = load_9_vs_4(args.data_dir)
    model = make_model(
        "logistic", num_features=x.shape[1], l2_convention="sum", l2_bias=False, dtype=jnp.float64
    )
    lambdas = LAMBDAS_L[::4] if args.quick else LAMBDAS_L
    first, objective = path_run(model, x, y, lambdas, devices[0])
    second, _ = path_run(model, x, y, lambdas, devices[0])
    idx = np.arange(len(lambdas)) if args.quick else np.arange(0, len(lambdas), 4)
    ref = objective[idx] if on_cpu else path_run(model, x, y, lambdas[idx], cpu)[1]
    add(
        "regularization path",
        f"{len(lambdas)} lambdas, float64",
        first,
        second,
        f"{len(idx)} lambdas{'' if args.quick else ' (every 4th)'}: optimum objective",
        _rel_diff(objective[idx], ref),
        PATH_RTOL,
    )

    print()
    print(
        f"Backend {backend} ({len(devices)} x {devices[0].device_kind}), reference {ref_name}, "
        f"{'--quick' if args.quick else 'full'}:"
    )
    print(
        "| workload | size | first call s | second call s | checked against the CPU on | "
        "max rel diff | tol | ok |"
    )
    print("|---|---|---:|---:|---|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['size']} | {r['first_seconds']:.2f} | "
            f"{r['second_seconds']:.2f} | {r['checked']} | {r['max_rel_diff']:.1e} | "
            f"{r['tol']:g} | {'yes' if r['ok'] else 'NO'} |"
        )
    if args.out:
        from jaxlr.host.io import atomic_write_json

        atomic_write_json(
            args.out,
            {
                "backend": backend,
                "devices": [str(d) for d in devices],
                "reference": ref_name,
                "rows": rows,
                "args": vars(args),
                "machine": {"platform": platform.platform(), "jax": jax.__version__},
            },
        )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
