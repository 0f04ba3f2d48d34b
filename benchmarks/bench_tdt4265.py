"""Times the full `tdt4265_task2` and `tdt4265_task3` protocols: jaxlr against plain NumPy.

For each protocol (course defaults, 50 epochs, validation every M // 5 steps):
  * NumPy baseline (`benchmarks/numpy_baseline.py`) in float64 (the hand-ins' default)
    and float32, replaying jaxlr's batch order so the runs are comparable step by step;
  * jaxlr `fit` (the host loop, one compiled call per epoch), first call: compilation
    included. `fit` builds new jitted closures on every call, so a second call compiles
    again and is no steady state;
  * jaxlr's engine compiled ahead of time for the whole run (`jit(engine.run).lower(...)
    .compile()`, timed separately: "compile"), then executed `--repeats` times (median:
    the steady state, "train").
Then it checks that jaxlr and NumPy give the same numbers: float64 jaxlr against float64
NumPy (tight tolerance), float32 against float32 (float32 tolerance), final validation loss
and accuracy and the whole validation-loss history. It prints Markdown tables and exits
non-zero if any agreement check fails.

    python -m benchmarks.bench_tdt4265 --data_dir=../shared/data [--repeats=3]

Dimension legend: N examples, D features, T steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax

# Float64 must be enabled before any array exists; float32 runs pass their dtype explicitly.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import numpy_baseline as nb  # noqa: E402
from experiments import registry  # noqa: E402, F401  (registers the experiments)
from experiments.config import make_config  # noqa: E402
from jaxlr.data.splits import load_splits  # noqa: E402
from jaxlr.engine.batches import epoch_batches  # noqa: E402
from jaxlr.engine.config import make_hparams  # noqa: E402
from jaxlr.engine.step import Data, keys_for  # noqa: E402
from jaxlr.engine.train import fit, make_engine, model_for  # noqa: E402

TASKS = {"task2": "tdt4265_task2", "task3": "tdt4265_task3"}
# Agreement tolerances: (relative on losses, absolute on accuracies; 1e-3 is two of the
# 2,042 binary validation images, a prediction flipped by float32 rounding).
TOLERANCE = {"float64": (1e-9, 1e-12), "float32": (1e-4, 1e-3)}


def jaxlr_data(cfg) -> Data:
    """The preprocessed arrays of `cfg` (an experiment config; its `data.dtype`)."""
    return load_splits(cfg.data).data


def batch_orders(cfg, num_train: int) -> list[np.ndarray] | None:
    """The example order of every epoch that the jaxlr engine uses (None: 0..N-1)."""
    tcfg = cfg.train
    if not tcfg.shuffle:
        return None
    _, data_key = keys_for(jnp.asarray(cfg.hparams.seed, jnp.int32))
    orders = []
    for epoch in range(tcfg.num_epochs):
        idx_MB, _ = epoch_batches(
            jax.random.fold_in(data_key, epoch), num_train, tcfg.batch_size, shuffle=True
        )
        orders.append(np.asarray(idx_MB).reshape(-1))
    return orders


def _hparams(cfg, dtype=None):
    hp = cfg.hparams
    return make_hparams(hp.lr, hp.l2, hp.momentum, hp.seed, dtype=dtype)


def time_fit(cfg, data: Data) -> tuple[dict, float]:
    """One `fit` call (compilation included): (metrics and history, wall seconds)."""
    tcfg = cfg.train
    hp = _hparams(cfg, np.asarray(data.x_train).dtype)
    t0 = time.perf_counter()
    r = fit(tcfg, hp, data, log_fn=lambda msg: None)
    seconds = time.perf_counter() - t0
    return {**r.metrics, "val_loss_history": np.asarray(r.history["val_loss"])}, seconds


def time_compiled(cfg, data: Data, repeats: int) -> tuple[float, float]:
    """Ahead-of-time compile of the whole run, then `repeats` executions: (compile, median)."""
    tcfg = cfg.train
    data = Data(*(jnp.asarray(a) for a in data))
    dtype = data.x_train.dtype
    model = model_for(tcfg, data.x_train.shape[1], dtype)
    engine = make_engine(tcfg, model, data.x_train.shape[0])
    hp = _hparams(cfg, dtype)
    t0 = time.perf_counter()
    init = jax.jit(engine.init).lower(hp).compile()
    state = init(hp)
    run = jax.jit(engine.run, static_argnums=4).lower(state, hp, data, 0, tcfg.num_epochs)
    run = run.compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, logs = run(init(hp), hp, data, 0)
        jax.block_until_ready((state, logs))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def agree(a: dict, b: dict, dtype: str) -> tuple[bool, str]:
    """Whether a jaxlr run and a NumPy run give the same numbers within `dtype`'s tolerance."""
    rtol, atol = TOLERANCE[dtype]
    dl = abs(a["val_loss"] - b["final_val_loss"]) / abs(b["final_val_loss"])
    da = abs(a["val_accuracy"] - b["final_val_accuracy"])
    hist = np.max(np.abs(a["val_loss_history"] - b["val_loss"]) / np.abs(b["val_loss"]))
    ok = dl <= rtol and da <= atol and hist <= 10 * rtol
    return ok, f"val loss rel. diff {dl:.1e}, val acc diff {da:.1e}, history max rel. {hist:.1e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="task2,task3")
    args = parser.parse_args(argv)
    mnist = None
    rows, checks, all_ok = [], [], True
    for task in args.tasks.split(","):
        name = TASKS[task]
        cfgs = {
            dt: make_config(name, {"data_dir": args.data_dir or "", "dtype": dt})
            for dt in ("float32", "float64")
        }
        cfg = cfgs["float64"]
        data = {dt: jaxlr_data(c) for dt, c in cfgs.items()}
        n_train, n_val = len(data["float32"].y_train), len(data["float32"].y_val)
        orders = batch_orders(cfg, n_train)
        if mnist is None:
            mnist = nb.load_mnist(cfg.data.data_dir or os.environ.get("JAXLR_DATA_DIR", "."))
        res = {}
        for dt in ("float64", "float32"):
            r, s = nb.run_protocol(task, mnist, np.dtype(dt), orders=orders)
            res[f"numpy/{dt}"] = r
            rows.append(
                (
                    name,
                    f"NumPy baseline, {dt}",
                    None,
                    s,
                    r["steps"],
                    r["final_val_accuracy"],
                    r["final_val_loss"],
                )
            )
        for dt in ("float32", "float64"):
            m, s = time_fit(cfgs[dt], data[dt])
            res[f"jaxlr/{dt}"] = m
            rows.append(
                (
                    name,
                    f"jaxlr `fit`, first call, {dt}",
                    None,
                    s,
                    m["steps"],
                    m["val_accuracy"],
                    m["val_loss"],
                )
            )
        for dt in ("float32", "float64"):
            c, s = time_compiled(cfgs[dt], data[dt], args.repeats)
            m = res[f"jaxlr/{dt}"]
            rows.append(
                (
                    name,
                    f"jaxlr compiled run, {dt}",
                    c,
                    s,
                    m["steps"],
                    m["val_accuracy"],
                    m["val_loss"],
                )
            )
        for dt in ("float64", "float32"):
            ok, text = agree(res[f"jaxlr/{dt}"], res[f"numpy/{dt}"], dt)
            all_ok &= ok
            checks.append(f"| {name} | {dt} | {'yes' if ok else 'NO'} | {text} | {n_val} |")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n{platform.machine()}, {os.cpu_count()} CPUs (load average {load} at the end; "
        f"other processes slow every number), jax {jax.__version__} on "
        f"{jax.default_backend()}, numpy {np.__version__}; steady state = median of "
        f"{args.repeats}\n"
    )
    print("| protocol | implementation | compile (s) | train (s) | steps/s | val acc | val loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, impl, c, s, steps, acc, loss in rows:
        cs = "-" if c is None else f"{c:.2f}"
        print(f"| {name} | {impl} | {cs} | {s:.2f} | {steps / s:,.0f} | {acc:.4f} | {loss:.5f} |")
    print("\n| protocol | dtype | same numbers | jaxlr vs NumPy | val images |")
    print("| --- | --- | --- | --- | ---: |")
    print("\n".join(checks))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
