"""Mini-batches of one epoch: how many there are, and their indices (traced, jit/vmap-safe).

Dimension legend: N examples, M batches per epoch, B batch size.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp


def num_batches(num_examples: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches in one epoch.

    Args:
      num_examples: N > 0.
      batch_size: B > 0.
      drop_last: drop the last partial batch (as the course code does); else count it.

    Returns:
      M = N // B, or ceil(N / B) when drop_last is False; always >= 1.

    Raises:
      ValueError: non-positive sizes, or no full batch with drop_last.
    """
    n = operator.index(num_examples)
    b = operator.index(batch_size)
    if n <= 0 or b <= 0:
        raise ValueError(f"num_examples and batch_size must be > 0, got {n} and {b}")
    m = n // b if drop_last else -(-n // b)
    if m == 0:
        raise ValueError(
            f"batch_size={b} > num_examples={n} with drop_last=True: an epoch "
            "would have no batch (use a smaller batch or drop_last=False)"
        )
    return m


def epoch_batches(
    key, num_examples: int, batch_size: int, *, shuffle: bool, drop_last: bool = True
):
    """Example indices of one epoch's mini-batches, for gathering inside `jit`.

    Without shuffling the order is 0..N-1 (the course code's order). Works under `jit`
    (sizes static) and `vmap` over keys.

    Args:
      key: jax PRNG key (ignored, may be None, when shuffle is False).
      num_examples: N, a static Python int.
      batch_size: B, a static Python int.
      shuffle: a fresh permutation from `key`.
      drop_last: drop the last partial batch; if False it is padded with index 0.

    Returns:
      (idx_MB int32 [M, B], mask_MB bool [M, B]); mask_MB is False exactly on padding.
    """
    m = num_batches(num_examples, batch_size, drop_last)
    total = m * batch_size
    if shuffle:
        if key is None:
            raise ValueError("epoch_batches: shuffle=True needs a PRNG key")
        order = jax.random.permutation(key, num_examples).astype(jnp.int32)
    else:
        order = jnp.arange(num_examples, dtype=jnp.int32)
    if total <= num_examples:
        idx = order[:total]
        mask = jnp.ones(total, dtype=bool)
    else:
        idx = jnp.concatenate([order, jnp.zeros(total - num_examples, dtype=jnp.int32)])
        mask = jnp.arange(total) < num_examples
    return idx.reshape(m, batch_size), mask.reshape(m, batch_size)
