"""Imports every experiment module so that its `@register` runs."""

from experiments import (
    fashion,  # noqa: F401
    hw3,  # noqa: F401
    regpath,  # noqa: F401
    sweep,  # noqa: F401
    tdt4265,  # noqa: F401
)
