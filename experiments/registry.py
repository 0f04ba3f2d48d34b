"""Imports every experiment module so that its `@register` runs."""

from experiments import tdt4265  # noqa: F401
from experiments import hw3  # noqa: F401
from experiments import sweep  # noqa: F401
