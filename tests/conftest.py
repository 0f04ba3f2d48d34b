"""Test-process set-up: float64 on for the whole process, a headless plot backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
