"""Plain NumPy baseline of the TDT4265 Assignment 1 protocols, in the style of the hand-ins.

No JAX, no jaxlr: its own IDX reader, a forward pass, the hand-derived gradient, an SGD loop
over mini-batches and a validation check every max(1, M // 5) steps, right after that step's
update, counting steps from 0 (so the first check follows the first update). This is what
`benchmarks/bench_tdt4265.py` times jaxlr against and checks jaxlr's numbers with.

Dimension legend: N examples, D features (785 with the bias feature), K classes, B batch
size, M batches per epoch.

    python -m benchmarks.numpy_baseline --data_dir=../shared/data --task=task2
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes (MNIST images or labels)."""
    raw = gzip.decompress(Path(path).read_bytes())
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four MNIST arrays from `data_dir` or `data_dir/mnist`."""
    folder = Path(data_dir)
    if not (folder / FILES["x_train"]).exists():
        folder = folder / "mnist"
    return {k: read_idx(folder / name) for k, name in FILES.items()}


def pre_process_images(x_NHW: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Flattens, scales to [-1, 1] and appends the bias feature: [N, 28, 28] -> [N, 785]."""
    x = x_NHW.reshape(len(x_NHW), -1).astype(dtype)
    x = (x - 127.5) / 127.5
    return np.concatenate([x, np.ones((len(x), 1), dtype)], axis=1)


def tdt4265_data(mnist: dict, digits=(2, 3), num_train: int = 20000, dtype=np.float64):
    """Course split: the first `num_train` training images; validation = the test images.

    Args:
      mnist: from `load_mnist`.
      digits: (positive, negative) for the binary task (labels 1 and 0), or None for all ten.
      num_train: training images taken from the front.
      dtype: float dtype of the features.

    Returns:
      (x_train_ND, y_train_N, x_val_ND, y_val_N); labels are int64 class indices.
    """
    xtr, ytr = mnist["x_train"][:num_train], mnist["y_train"][:num_train].astype(np.int64)
    xva, yva = mnist["x_test"], mnist["y_test"].astype(np.int64)
    if digits is not None:
        pos, neg = digits
        keep = (ytr == pos) | (ytr == neg)
        xtr, ytr = xtr[keep], (ytr[keep] == pos).astype(np.int64)
        keep = (yva == pos) | (yva == neg)
        xva, yva = xva[keep], (yva[keep] == pos).astype(np.int64)
    return pre_process_images(xtr, dtype), ytr, pre_process_images(xva, dtype), yva


# ---------------------------------------------------------------------------------------------
# Logistic regression (binary, w_D) and softmax regression (w_DK).


def logistic_forward(x_ND: np.ndarray, w_D: np.ndarray) -> np.ndarray:
    """Logits z = x w (the sigmoid is applied inside the loss, for stability)."""
    return x_ND @ w_D


def logistic_loss(z_N: np.ndarray, y_N: np.ndarray) -> float:
    """Mean binary cross-entropy from logits: log(1 + e^z) - y z, without overflow."""
    return float(np.mean(np.logaddexp(0.0, z_N) - y_N * z_N))


def logistic_gradient(x_ND, y_N, w_D, l2: float = 0.0) -> np.ndarray:
    """dC/dw = -1/B sum_n (y_n - yhat_n) x_n, plus 2 lambda w for R(w) = sum w^2."""
    yhat_N = 1.0 / (1.0 + np.exp(-logistic_forward(x_ND, w_D)))
    # Labels cast to the feature dtype: int64 - float32 would promote the step to float64.
    return -(x_ND.T @ (y_N.astype(x_ND.dtype) - yhat_N)) / len(y_N) + 2.0 * l2 * w_D


def logistic_accuracy(z_N, y_N) -> float:
    return float(np.mean((z_N > 0) == (y_N == 1)))


def softmax_forward(x_ND: np.ndarray, w_DK: np.ndarray) -> np.ndarray:
    return x_ND @ w_DK


def _log_softmax(z_NK: np.ndarray) -> np.ndarray:
    z_NK = z_NK - z_NK.max(axis=1, keepdims=True)
    return z_NK - np.log(np.exp(z_NK).sum(axis=1, keepdims=True))


def softmax_loss(z_NK: np.ndarray, y_N: np.ndarray) -> float:
    """Mean multi-class cross-entropy -sum_k y_k ln yhat_k, via a stable log-softmax."""
    return float(-np.mean(_log_softmax(z_NK)[np.arange(len(y_N)), y_N]))


def softmax_gradient(x_ND, y_N, w_DK, l2: float = 0.0) -> np.ndarray:
    """dC/dw_kj = -1/B sum_n x_nj (y_nk - yhat_nk), plus 2 lambda w."""
    yhat_NK = np.exp(_log_softmax(softmax_forward(x_ND, w_DK)))
    targets_NK = np.eye(w_DK.shape[1], dtype=w_DK.dtype)[y_N]
    return -(x_ND.T @ (targets_NK - yhat_NK)) / len(y_N) + 2.0 * l2 * w_DK


def softmax_accuracy(z_NK, y_N) -> float:
    return float(np.mean(np.argmax(z_NK, axis=1) == y_N))


MODELS = {
    "logistic": (logistic_forward, logistic_loss, logistic_gradient, logistic_accuracy),
    "softmax": (softmax_forward, softmax_loss, softmax_gradient, softmax_accuracy),
}


def train(
    model: str,
    x_train,
    y_train,
    x_val,
    y_val,
    *,
    learning_rate: float,
    num_epochs: int,
    batch_size: int = 128,
    l2: float = 0.0,
    shuffle: bool = False,
    seed: int = 0,
    orders: list | None = None,
    num_classes: int = 10,
) -> dict:
    """SGD on zero-initialised weights; validation every max(1, M // 5) steps.

    Args:
      model: "logistic" or "softmax".
      x_train, y_train, x_val, y_val: features [N, D] and integer labels [N].
      learning_rate: constant SGD step size.
      num_epochs: passes over the training set; the last partial batch is dropped.
      batch_size: B.
      l2: lambda of R(w) = sum w^2.
      shuffle: a new permutation of the training set every epoch (numpy RNG from `seed`).
      seed: RNG seed of the permutations.
      orders: the example order of every epoch ([num_epochs] index arrays); overrides
        `shuffle` (to replay another implementation's order).
      num_classes: K of the softmax model.

    Returns:
      dict: w (final weights), train_loss (per step), check_step, val_loss, val_accuracy,
      train_accuracy (per check), and the final train/val loss and accuracy.
    """
    forward, loss_fn, grad_fn, acc_fn = MODELS[model]
    dtype = x_train.dtype
    n, d = x_train.shape
    w = np.zeros(d, dtype) if model == "logistic" else np.zeros((d, num_classes), dtype)
    m = n // batch_size
    eval_every = max(1, m // 5)
    rng = np.random.default_rng(seed)
    hist = {
        k: [] for k in ("train_loss", "check_step", "val_loss", "val_accuracy", "train_accuracy")
    }
    step = 0
    for epoch in range(num_epochs):
        if orders is not None:
            order = np.asarray(orders[epoch])
        elif shuffle:
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        for i in range(m):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x_batch, y_batch = x_train[idx], y_train[idx]
            hist["train_loss"].append(loss_fn(forward(x_batch, w), y_batch))
            w = w - learning_rate * grad_fn(x_batch, y_batch, w, l2)
            if step % eval_every == 0:
                z_val = forward(x_val, w)
                hist["check_step"].append(step)
                hist["val_loss"].append(loss_fn(z_val, y_val))
                hist["val_accuracy"].append(acc_fn(z_val, y_val))
                hist["train_accuracy"].append(acc_fn(forward(x_train, w), y_train))
            step += 1
    out = {k: np.asarray(v) for k, v in hist.items()}
    z_train, z_val = forward(x_train, w), forward(x_val, w)
    out.update(
        w=w,
        steps=step,
        final_train_loss=loss_fn(z_train, y_train),
        final_val_loss=loss_fn(z_val, y_val),
        final_train_accuracy=acc_fn(z_train, y_train),
        final_val_accuracy=acc_fn(z_val, y_val),
    )
    return out


# The two protocols of the benchmark (course defaults).
PROTOCOLS = {
    "task2": dict(
        model="logistic", digits=(2, 3), learning_rate=0.05, num_epochs=50, shuffle=False
    ),
    "task3": dict(model="softmax", digits=None, learning_rate=0.01, num_epochs=50, shuffle=True),
}


def run_protocol(name: str, mnist: dict, dtype=np.float64, orders=None) -> tuple[dict, float]:
    """Trains protocol `name`; returns (result of `train`, wall seconds of training)."""
    p = dict(PROTOCOLS[name])
    data = tdt4265_data(mnist, p.pop("digits"), dtype=dtype)
    t0 = time.perf_counter()
    result = train(p.pop("model"), *data, orders=orders, **p)
    return result, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.environ.get("JAXLR_DATA_DIR", "."))
    parser.add_argument("--task", choices=sorted(PROTOCOLS), default="task2")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    args = parser.parse_args()
    result, seconds = run_protocol(args.task, load_mnist(args.data_dir), np.dtype(args.dtype))
    print(
        f"{args.task}: {result['steps']} steps in {seconds:.2f} s; final val accuracy "
        f"{result['final_val_accuracy']:.4f}, val loss {result['final_val_loss']:.4f}"
    )


if __name__ == "__main__":
    main()
