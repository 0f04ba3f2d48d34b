"""Checks of what `fit` and `run_sweep` are given, before anything is compiled (host side).

`check_data` (shapes, without copying), `check_inputs` (labels, finite features, batch size,
train_eval_size) and the check of one run's scalar hyper-parameters; each error is one line
naming the array or knob.

Dimensions: N training examples, V validation examples, D features, K classes.
"""

from __future__ import annotations

import numpy as np

from jaxlr.core.inputs import InputError, check_finite, check_labels
from jaxlr.core.objective import Model
from jaxlr.engine.config import HParams, TrainConfig, check_hparam_values
from jaxlr.engine.step import Data


def _dtype_of(x) -> np.dtype:
    # np.dtype objects are falsy (no fields), so no `or` here.
    dtype = getattr(x, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(x).dtype


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(x))


def check_data(data: Data, what: str = "fit") -> tuple[int, int, int]:
    """Checks the shapes of `data` without copying it; returns (N, V, D).

    Raises:
      ValueError: one line in words naming the arrays and their sizes: x not [N, D] or
        not floating point, labels not [N], lengths of x and y that differ, feature
        counts of training and validation that differ, or an empty split.
    """
    if not isinstance(data, tuple) or len(data) != 4:
        raise ValueError(
            f"{what}: data must be a Data(x_train, y_train, x_val, y_val), got {type(data)}"
        )
    x_tr, y_tr, x_va, y_va = (_shape(a) for a in data)
    for name, shp in (("x_train", x_tr), ("x_val", x_va)):
        if len(shp) != 2:
            raise ValueError(f"{what}: data.{name} must be [examples, features], got shape {shp}")
    for name, shp in (("y_train", y_tr), ("y_val", y_va)):
        if len(shp) != 1:
            raise ValueError(
                f"{what}: data.{name} must be integer labels [examples], got shape {shp}"
            )
    for split, xs, ys in (("train", x_tr, y_tr), ("val", x_va, y_va)):
        if xs[0] != ys[0]:
            raise ValueError(
                f"{what}: data.x_{split} has {xs[0]} examples but data.y_{split} has "
                f"{ys[0]} labels; they must be the same length"
            )
        if xs[0] == 0:
            raise ValueError(f"{what}: data.x_{split} has no examples")
    if x_tr[1] != x_va[1]:
        raise ValueError(
            f"{what}: data.x_train has {x_tr[1]} features but data.x_val has {x_va[1]}; "
            "they must match"
        )
    dtype = _dtype_of(data.x_train)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{what}: data.x_train must be floating point (see jaxlr.data.images.preprocess), "
            f"got {dtype}"
        )
    return x_tr[0], x_va[0], x_tr[1]


def check_inputs(
    config: TrainConfig, data: Data, what: str = "fit", model: Model | None = None
) -> None:
    """Checks what `data` holds against the model and the batch (host values, one pass each).

    Call after `check_data` (shapes). Labels must be integers in [0, K) (K = 2 for the
    logistic model, else `model.num_classes` or `config.num_classes`), the features finite,
    and the batch and the training accuracy's `train_eval_size` no larger than the training
    set (never a silent cap).

    Raises:
      jaxlr.core.inputs.InputError: one line naming the array, the offending value and what
        the model allows; or the batch size / train_eval_size and the number of training
        examples.
    """
    kind = model.kind if model is not None else config.model
    if kind == "logistic":
        k = 2
    else:
        k = int(model.num_classes if model is not None else config.num_classes)
    for name in ("y_train", "y_val"):
        check_labels(getattr(data, name), k, name=f"data.{name}", where=what, model=kind)
    for name in ("x_train", "x_val"):
        check_finite(getattr(data, name), name=f"data.{name}", where=what)
    n = _shape(data.x_train)[0]
    if int(config.batch_size) > n:
        raise InputError(
            f"{what}: batch_size {config.batch_size} is larger than the {n} training examples "
            f"of data.x_train; use a batch of at most {n}"
        )
    if int(config.train_eval_size) > n:
        raise InputError(
            f"{what}: train_eval_size {config.train_eval_size} is larger than the {n} training "
            f"examples of data.x_train; allowed: 0 (all of them) to {n}"
        )


def _check_scalar_hparams(hparams: HParams, what: str = "fit") -> None:
    if not isinstance(hparams, HParams):
        raise ValueError(f"{what}: hparams must be an HParams (jaxlr.engine.config.make_hparams)")
    for name, v in zip(HParams._fields, hparams, strict=True):
        if np.ndim(v) != 0:
            raise ValueError(
                f"{what}: hparams.{name} must be a scalar (one run), got shape {np.shape(v)}; "
                "train a grid with jaxlr.engine.sweep.run_sweep"
            )
    check_hparam_values(*hparams[:3], where=f"{what}: hparams")
