"""Training speed measured the same way everywhere: compiled, warm, without checks.

Dimensions: N training examples, M batches per epoch.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from jaxlr.config import HParams, TrainConfig
from jaxlr.train import Data, make_engine, model_for, schedule_numbers


def steps_per_second(config: TrainConfig, hparams: HParams, data: Data) -> float:
    """Steps per second of one epoch of `config` without checks, timed after compiling.

    The check interval is set to 10 epochs, so the timed epoch (epoch 1, steps M..2M-1)
    runs no validation check: the number is the speed of the update itself.

    Args:
      config: static config of the run (its `eval_every` is replaced).
      hparams: scalar hyper-parameters.
      data: the run's arrays.
    Returns:
      M / seconds of the epoch.
    """
    n, d = np.shape(data.x_train)
    m = schedule_numbers(config, n).batches_per_epoch
    quiet = dataclasses.replace(config, eval_every=10 * m)
    model = model_for(quiet, d, np.asarray(data.x_train).dtype)
    engine = make_engine(quiet, model, n)
    state = jax.jit(engine.init)(hparams)
    run = jax.jit(engine.run, static_argnums=4).lower(state, hparams, data, 1, 1).compile()
    t = time.perf_counter()
    state, _ = run(state, hparams, data, 1)
    jax.block_until_ready(state)
    return m / (time.perf_counter() - t)
