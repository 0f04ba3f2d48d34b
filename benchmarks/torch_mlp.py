"""The hw3_mlp protocol in PyTorch on the CPU: the side of `bench_hw3_mlp.py` to compare with.

Runs in its own environment (PyTorch is not a dependency of jaxlr), so it imports neither
jax nor jaxlr: it reads the MNIST IDX files itself, with numpy.

    /tmp/torchenv/bin/python benchmarks/torch_mlp.py --data_dir=../shared/data
        [--num_train=60000] [--repeats=1] [--threads=0]

Protocol (the same as `jaxlr`'s `hw3_mlp`): pixels / 255 (784 inputs), a 784-3136-1568-10
network of `nn.Linear` layers with ReLU, mean softmax cross-entropy, plain SGD with learning
rate 0.1, batches of 32 drawn from a fresh permutation every epoch, the last partial batch
dropped. One epoch is timed after a few warm-up steps (the first steps allocate buffers);
the epoch is the best of `--repeats`. Prints one JSON object on stdout: seconds per epoch,
steps, milliseconds per step, the test accuracy after the timed epoch, torch version and
thread count.

Dimension legend: N examples, D features (784), K classes (10), B batch size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def find_mnist(data_dir: str | None) -> Path:
    """The folder holding the four MNIST files: data_dir, data_dir/mnist or $JAXLR_DATA_DIR."""
    roots = [r for r in (data_dir, os.environ.get("JAXLR_DATA_DIR")) if r]
    for root in roots:
        for folder in (Path(root) / "mnist", Path(root)):
            if all((folder / f).exists() for f in FILES.values()):
                return folder
    raise FileNotFoundError(f"MNIST files {sorted(FILES.values())} not found under {roots}")


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array from a gzip file."""
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir: str | None, num_train: int):
    """(x_train_ND, y_train_N, x_test_ND, y_test_N) as torch tensors, pixels / 255."""
    folder = find_mnist(data_dir)
    arr = {k: read_idx(folder / f) for k, f in FILES.items()}

    def feats(x):
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)

    def labels(y):
        return torch.from_numpy(y.astype(np.int64))

    return (
        feats(arr["x_train"][:num_train]),
        labels(arr["y_train"][:num_train]),
        feats(arr["x_test"]),
        labels(arr["y_test"]),
    )


def make_net(sizes=(784, 3136, 1568, 10)) -> nn.Sequential:
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_epoch(net, opt, loss_fn, x_ND, y_N, batch_size: int, max_steps: int | None = None):
    """One epoch of SGD over a fresh permutation; returns the number of steps taken."""
    n = x_ND.shape[0]
    order = torch.randperm(n)
    steps = n // batch_size if max_steps is None else min(max_steps, n // batch_size)
    for i in range(steps):
        idx = order[i * batch_size : (i + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x_ND[idx]), y_N[idx])
        loss.backward()
        opt.step()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--num_train", type=int, default=60000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", default="3136,1568")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = load(args.data_dir, args.num_train)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    net = make_net((784, *hidden, 10))
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    train_epoch(net, opt, loss_fn, x_tr, y_tr, args.batch_size, args.warmup_steps)
    best, steps = float("inf"), 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        steps = train_epoch(net, opt, loss_fn, x_tr, y_tr, args.batch_size)
        best = min(best, time.perf_counter() - t0)
    with torch.no_grad():
        acc = float((net(x_te).argmax(dim=1) == y_te).float().mean())
    print(
        json.dumps(
            {
                "epoch_seconds": best,
                "steps": steps,
                "ms_per_step": 1e3 * best / max(steps, 1),
                "test_accuracy_after": acc,
                "epochs_timed": args.repeats,
                "torch_version": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
