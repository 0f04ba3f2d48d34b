"""Deep-learning homework 3: a 98% two-hidden-layer network, online versus mini-batch SGD, a
regularized 4-vs-9 logistic regression tuned by a checkpointed grid, and its worst mistakes.

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FLAG=V]

- `hw3_mlp`: the 784-3136-1568-10 ReLU network, plain SGD lr 0.1, batch 32, 6 epochs on all
  60,000 training images, tested on the 10,000 test images (at least 98% required);
- `hw3_online_vs_minibatch`: the same family (784-256-128-10) with batch sizes 1, 32 and 128:
  wall time, steps/s and test accuracy;
- `hw3_logreg_grid`: 9 (label 1) vs 4 (label 0), a lambda x lr grid of full-batch gradient
  descent in one vmapped sweep; the best point is checkpointed, read back and tested on the
  first 1000 test images of 4s and 9s;
- `hw3_misclassified`: the 20 most confidently misclassified of those 1000 test images, from
  that checkpoint, written into its own workdir.

Inputs of every hw3 experiment are scaled to [0, 1] (`scale=unit`): the 98% network trains
at least as well with them as with [-1, 1] (see WORKSPACE.md), and the homework's data
loading gives [0, 1] pixels. The networks have explicit bias vectors (784 inputs, no bias
feature); the logistic regression uses the bias trick (785 inputs, the last weight is w0,
not penalised).

Dimension legend: N training examples, V validation examples, M test examples, D features,
K classes, S grid points.

One module per experiment, each with its figures and prose: `experiments.hw3_mlp`,
`experiments.hw3_online_vs_minibatch`, `experiments.hw3_logreg_grid`,
`experiments.hw3_misclassified`; their configs and registrations are in
`experiments.hw3_config`. This module gathers the course's names in one namespace.
"""

from __future__ import annotations

from experiments.hw3_config import (
    CHECKPOINT_KIND,
    CHECKPOINT_NAME,
    GRID_COMMAND,
    BatchSizes,
    LogregGrid,
    Misclassified,
    Mlp,
)
from experiments.hw3_logreg_grid import hw3_logreg_grid
from experiments.hw3_misclassified import hw3_misclassified
from experiments.hw3_mlp import _mlp_sections, hw3_mlp, net_name
from experiments.hw3_online_vs_minibatch import hw3_online_vs_minibatch

__all__ = [
    "CHECKPOINT_KIND",
    "CHECKPOINT_NAME",
    "GRID_COMMAND",
    "BatchSizes",
    "LogregGrid",
    "Misclassified",
    "Mlp",
    "_mlp_sections",
    "hw3_logreg_grid",
    "hw3_misclassified",
    "hw3_mlp",
    "hw3_online_vs_minibatch",
    "net_name",
]
