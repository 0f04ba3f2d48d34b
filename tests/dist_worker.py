"""A small sweep through the library API, in one process of a (possibly) multi-process run.

Used by `tests/test_distributed.py`, directly or through `experiments/launch.py --module`:

    python -m tests.dist_worker --out=DIR [--coordinator_address=HOST:PORT
        --num_processes=N --process_id=I] [--die_after_chunks=K] [--heartbeat=S]

Every process trains the same grid (softmax, several seeds, early stopping, compaction) on
the same synthetic data, sharded over every device of every process; each process writes
what it holds after the sweep to DIR/result_<process>.json (process 0's copy is the one the
project would write). With `--die_after_chunks`, process `--dying_process` (default 1) exits
abruptly (os._exit) after that many chunks: the others must fail, not hang.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--coordinator_address", default=None)
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument("--die_after_chunks", type=int, default=0)
    parser.add_argument("--dying_process", type=int, default=1)
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxlr.engine import distributed

    distributed.initialize(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        heartbeat_timeout_seconds=args.heartbeat,
        initialization_timeout=60,
    )
    import numpy as np

    from jaxlr.engine import grid as jgrid
    from jaxlr.engine import sweep as jsweep
    from jaxlr.engine.config import TrainConfig
    from jaxlr.engine.step import Data
    from jaxlr.report import tables

    rng = np.random.default_rng(0)
    n, v, d = 64, 200, 40
    x = np.concatenate([rng.normal(size=(n + v, d)), np.ones((n + v, 1))], axis=1)
    y = np.argmax(x @ rng.normal(size=(d + 1, 3)) + 3.0 * rng.normal(size=(n + v, 3)), axis=1)
    data = Data(x[:n], y[:n].astype(np.int32), x[n:], y[n:].astype(np.int32))
    cfg = TrainConfig(
        model="softmax",
        num_classes=3,
        batch_size=8,
        num_epochs=args.epochs,
        patience=5,
        eval_every=4,
        early_stopping=True,
        epochs_per_call=2,
        shuffle=True,
    )
    grid = jgrid.make_grid(learning_rate=(0.005, 0.1, 0.5, 2.0), l2=(0.0, 0.03), seed=(0, 1))
    chunks = [0]
    me = jax.process_index()

    def log_fn(msg: str) -> None:
        print(f"{msg}", flush=True)
        if msg.startswith("epoch "):
            chunks[0] += 1
            dies = args.die_after_chunks and me == args.dying_process
            if dies and chunks[0] >= args.die_after_chunks:
                print(f"process {me}: dying on purpose", flush=True)
                os._exit(3)

    t0 = time.perf_counter()
    res = jsweep.run_sweep(cfg, grid, data, log_fn=log_fn)
    out = {
        "process": me,
        "num_processes": jax.process_count(),
        "devices": jax.device_count(),
        "main": distributed.is_main_process(),
        "table": tables.sweep_csv(res),
        "params": [np.asarray(a).tolist() for a in jax.tree.leaves(res.params)],
        "steps": res.metrics["steps"].tolist(),
        "stop_step": res.early_stopping["step"].tolist(),
        "train_loss": [h["train_loss"].tolist() for h in res.histories],
        "point_steps": res.point_steps,
        "computed_point_steps": res.computed_point_steps,
        "seconds": time.perf_counter() - t0,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"result_{me}.json"), "w") as f:
        json.dump(out, f)
    print(f"process {me}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
