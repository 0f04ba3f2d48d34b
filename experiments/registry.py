"""Imports every experiment module so that its `@register` runs."""

from experiments import tdt4265  # noqa: F401
