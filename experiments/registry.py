"""Imports every experiment's config module so that its `register` runs.

These modules hold configs and registrations only (no JAX, no matplotlib); an experiment's
own module is imported when it runs (`experiments.config.Experiment.fn`).
"""

from experiments import (
    fashion_config,  # noqa: F401
    hw3_config,  # noqa: F401
    regpath_config,  # noqa: F401
    sweep_config,  # noqa: F401
    tdt4265_config,  # noqa: F401
)
