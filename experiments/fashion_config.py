"""Config and registration of `fashion_softmax` (run by `experiments.fashion`).

Light on purpose (no JAX, no matplotlib): `--list` and `--help` import this module only.
"""

from __future__ import annotations

import dataclasses

from experiments.config import register
from experiments.tdt4265_config import HEADLINE, Softmax
from jaxlr.data.config import DataConfig


@dataclasses.dataclass(frozen=True)
class FashionSoftmax(Softmax):
    """Softmax regression of the ten Fashion-MNIST classes, task 3 protocol.

    Attributes:
      checkpoint: folder (relative to the current folder) for resumable checkpoints; empty
        for none. The same command resumes an interrupted run.
    """

    data: DataConfig = DataConfig(dataset="fashion_mnist")


register(
    "fashion_softmax",
    FashionSoftmax,
    "experiments.fashion:fashion_softmax",
    headline=(*HEADLINE, "worst_class", "worst_class_accuracy"),
    smoke=dict(num_epochs=2, max_examples=512),
)
