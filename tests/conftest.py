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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops every compiled program after each test module.

    Module-level jitted functions (the solver's, the engine's) keep one executable per static
    argument and shape, and each XLA:CPU executable holds about 10 memory mappings. One
    process running the whole suite compiled enough of them to pass Linux's default
    vm.max_map_count (65,530), after which XLA crashed in a compile or in a cache
    read/write (a segfault or an abort, at a different test each time). Measured: 300
    shapes of one jitted function hold 2,950 mappings; after `jax.clear_caches()` 517.
    """
    yield
    jax.clear_caches()
