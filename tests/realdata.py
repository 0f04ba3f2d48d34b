"""Shared by the end-to-end tests: the real MNIST folder and a marker for tests needing it."""

import os

import pytest

from jaxlr.data import idx as jidx
from jaxlr.data import registry as jregistry

DATA_DIR = os.environ.get("JAXLR_DATA_DIR") or None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _mnist_missing() -> str | None:
    try:
        jregistry.find_dataset_files("mnist", DATA_DIR, download=False)
    except jidx.DataError:
        return (
            "real MNIST files not found: set JAXLR_DATA_DIR to the folder holding mnist/ "
            "(e.g. JAXLR_DATA_DIR=../shared/data)"
        )
    return None


MISSING = _mnist_missing()


def needs_data(fn):
    """Marks a test as needing the real MNIST files; skipped with the reason if missing."""
    return pytest.mark.realdata(pytest.mark.skipif(MISSING is not None, reason=MISSING or "")(fn))


def require_data() -> None:
    """Skips the calling test or fixture, with the reason, when the real MNIST files are missing."""
    if MISSING is not None:
        pytest.skip(MISSING)
