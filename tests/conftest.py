"""Test-process set-up: float64 everywhere, a headless plot backend, a clean logger."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_jaxlr_logger():
    """Undoes what an in-process launcher call does to the "jaxlr" logger.

    `experiments.main` gives the logger its own stderr handler and stops propagation; left
    in place, later tests' `caplog` sees nothing and the handler writes to a closed stream.
    """
    logger = logging.getLogger("jaxlr")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
