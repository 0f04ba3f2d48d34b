"""Optimizers and learning-rate schedules, built from a static config and dynamic hparams.

The optax transformation is rebuilt inside the traced training function from `HParams`
arrays, so the learning rate and momentum are traced values (vmappable), never constants
baked into the compiled program. Its state's structure depends only on the config.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

from jaxlr.engine.config import HParams, TrainConfig


def anneal_schedule(learning_rate, num_steps) -> Callable:
    """The course's annealing schedule alpha(t) = alpha_0 / (1 + t / T), t the global step.

    Args:
      learning_rate: alpha_0 (scalar, may be traced).
      num_steps: T, the number of steps over which the rate halves.
    Returns:
      A schedule: step count -> learning rate.
    """

    def schedule(count):
        return learning_rate / (
            1.0 + jnp.asarray(count, jnp.result_type(learning_rate)) / num_steps
        )

    return schedule


def make_schedule(config: TrainConfig, learning_rate, total_steps: int) -> Callable:
    """The learning-rate schedule that `config.schedule` names.

    Args:
      config: static training config.
      learning_rate: initial rate (scalar, may be traced).
      total_steps: steps of the whole run (for the cosine decay).
    Returns:
      A schedule: step count -> learning rate.
    """
    if config.schedule == "constant":
        return lambda count: learning_rate
    if config.schedule == "anneal":
        return anneal_schedule(learning_rate, config.anneal_steps)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=max(1, total_steps))
    if config.schedule == "exponential":
        return optax.exponential_decay(
            learning_rate,
            transition_steps=max(1, int(config.anneal_steps)),
            decay_rate=config.decay_rate,
        )
    raise ValueError(f"unknown schedule {config.schedule!r}")


def make_optimizer(
    config: TrainConfig, hparams: HParams, total_steps: int
) -> optax.GradientTransformation:
    """The optax optimizer of `config.optimizer` with hyper-parameters from `hparams`.

    Args:
      config: static training config.
      hparams: one point's hyper-parameters (scalars; traced inside `jit`/`vmap`).
      total_steps: steps of the whole run.
    Returns:
      An `optax.GradientTransformation`.
    """
    schedule = make_schedule(config, hparams.learning_rate, total_steps)
    if config.optimizer == "sgd":
        return optax.sgd(schedule)
    if config.optimizer == "momentum":
        return optax.sgd(schedule, momentum=hparams.momentum)
    if config.optimizer == "adam":
        return optax.adam(schedule)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
