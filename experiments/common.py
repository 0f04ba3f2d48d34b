"""What every experiment shares: the flat config, the registry, data and output writing.

An experiment is a function `run(cfg: dict, workdir: Path) -> dict` (its metrics) registered
with `@register(name, defaults)`. `cfg` is the merged flat config: the common defaults of
`COMMON_DEFAULTS` and every `TrainConfig` field, then the experiment's `defaults`, then the
command-line overrides. `train_config(cfg)` and `load_data(cfg)` turn it into library inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxlr import data as jdata
from jaxlr.config import TrainConfig
from jaxlr.io import atomic_write_json, atomic_write_text
from jaxlr.train import Data, history_records

log = logging.getLogger("jaxlr.experiments")

# Fields of the flat experiment config besides TrainConfig's (name -> default).
COMMON_DEFAULTS: dict[str, Any] = {
    "dataset": "mnist",
    "data_dir": None,
    # Binary task (positive digit -> label 1, negative digit -> label 0); () = all ten classes.
    "digits": (),
    # Split: "tdt4265" (first num_train training images; validation = the test set),
    # "holdout" (train = first num_train, validation = the last num_val training images;
    # the test set stays unseen) or "full" (all 60,000 for training; validation = the test set).
    "split": "tdt4265",
    "num_train": 20000,
    "num_val": 10000,
    "num_test": 0,
    "scale": "symmetric",
    "bias_feature": True,
    "dtype": "float32",
    "lr": (0.05,),
    "l2": (0.0,),
    "momentum": (0.0,),
    "seed": 0,
    "seeds": 1,
    "checkpoint": "",
    "block_size": 0,
    "max_examples": 0,
    # Batch sizes compared by hw3_online_vs_minibatch (one run each); () = its default.
    "batch_sizes": (),
}


def default_config() -> dict[str, Any]:
    """The flat config before any experiment's defaults."""
    cfg = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    cfg.update(COMMON_DEFAULTS)
    return cfg


def config_types() -> dict[str, type]:
    """Python type of every flat-config field (for flag parsing)."""
    types = {}
    for name, value in default_config().items():
        types[name] = type(value) if value is not None else str
    return types


class Experiment(NamedTuple):
    name: str
    fn: Callable[[dict, Path], dict]
    defaults: dict
    doc: str


EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, **defaults) -> Callable:
    """Decorator: registers `fn` as experiment `name` with config `defaults`."""

    def wrap(fn):
        unknown = set(defaults) - set(default_config())
        if unknown:
            raise ValueError(f"experiment {name}: unknown config fields {sorted(unknown)}")
        EXPERIMENTS[name] = Experiment(name, fn, defaults, (fn.__doc__ or "").strip())
        return fn

    return wrap


def make_config(name: str, overrides: dict | None = None) -> dict:
    """Merged flat config of experiment `name` with `overrides` (unknown keys are errors)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {sorted(EXPERIMENTS)}")
    cfg = default_config()
    cfg.update(EXPERIMENTS[name].defaults)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; valid fields: {sorted(cfg)}")
    cfg.update(overrides)
    return cfg


def run_experiment(name: str, workdir: str | Path, overrides: dict | None = None) -> dict:
    """Runs experiment `name` into `workdir` and returns its metrics (also `metrics.json`)."""
    cfg = make_config(name, overrides)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(workdir / "config.json", {"experiment": name, **_jsonable(cfg)})
    t0 = time.perf_counter()
    metrics = EXPERIMENTS[name].fn(cfg, workdir)
    metrics.setdefault("wall_seconds_total", time.perf_counter() - t0)
    atomic_write_json(workdir / "metrics.json", _jsonable(metrics))
    log.info("wrote %s", workdir / "metrics.json")
    return metrics


def train_config(cfg: dict, **changes) -> TrainConfig:
    """The `TrainConfig` part of a flat config, with `changes` applied."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in cfg.items() if k in names}
    kwargs.update(changes)
    return TrainConfig(**kwargs)


def float_dtype(cfg: dict):
    """The numpy float dtype that `cfg["dtype"]` names (float64 needs --jax_enable_x64)."""
    import jax

    if cfg["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {cfg['dtype']!r}")
    if cfg["dtype"] == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype=float64 needs JAX's 64-bit mode: add --jax_enable_x64")
    return np.dtype(cfg["dtype"])


class Splits(NamedTuple):
    """Preprocessed data of an experiment: training, validation and (optional) test."""

    data: Data
    x_test: Any
    y_test: Any
    images_val: Any  # uint8 [V, 28, 28] validation images (for figures)
    images_test: Any


def load_data(cfg: dict) -> Splits:
    """Loads, splits and preprocesses the data that `cfg` describes.

    Returns:
      `Splits`; `x_test`/`y_test` are the test images when the validation set is not the
      test set (split "holdout"), else None.
    """
    ds = jdata.load_dataset(cfg["dataset"], cfg["data_dir"] or None)
    n_train = cfg["num_train"] or ds.x_train.shape[0]
    if cfg["split"] == "tdt4265":
        xtr, ytr = ds.x_train[:n_train], ds.y_train[:n_train]
        xva, yva = ds.x_test, ds.y_test
        xte = yte = None
    elif cfg["split"] == "full":
        xtr, ytr, xva, yva = ds.x_train, ds.y_train, ds.x_test, ds.y_test
        xte = yte = None
    elif cfg["split"] == "holdout":
        n_val = cfg["num_val"]
        if n_train + n_val > ds.x_train.shape[0]:
            raise ValueError(
                f"num_train + num_val = {n_train + n_val} exceeds the "
                f"{ds.x_train.shape[0]} training images"
            )
        xtr, ytr = ds.x_train[:n_train], ds.y_train[:n_train]
        xva, yva = ds.x_train[-n_val:], ds.y_train[-n_val:]
        xte, yte = ds.x_test, ds.y_test
    else:
        raise ValueError(f"split must be tdt4265, holdout or full, got {cfg['split']!r}")
    if cfg["digits"]:
        pos, neg = (int(d) for d in cfg["digits"])
        xtr, ytr = jdata.binary_subset(xtr, ytr, positive=pos, negative=neg)
        xva, yva = jdata.binary_subset(xva, yva, positive=pos, negative=neg)
        if xte is not None:
            xte, yte = jdata.binary_subset(xte, yte, positive=pos, negative=neg)
    if cfg["max_examples"]:
        k = cfg["max_examples"]
        xtr, ytr, xva, yva = xtr[:k], ytr[:k], xva[:k], yva[:k]
    if xte is not None and cfg["num_test"]:
        xte, yte = xte[: cfg["num_test"]], yte[: cfg["num_test"]]
    dtype = float_dtype(cfg)

    def prep(x):
        return jdata.preprocess(x, scale=cfg["scale"], bias=cfg["bias_feature"], dtype=dtype)

    data = Data(prep(xtr), np.asarray(ytr, np.int32), prep(xva), np.asarray(yva, np.int32))
    if xte is not None:
        return Splits(data, prep(xte), np.asarray(yte, np.int32), xva, xte)
    return Splits(data, None, None, xva, None)


def write_history(path: Path, history: dict) -> None:
    """Writes a history as JSON lines (atomically)."""
    lines = [json.dumps(r) for r in history_records(history)]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def write_report(path: Path, title: str, sections: list[str]) -> None:
    """Writes `report.md`: a title and Markdown sections."""
    atomic_write_text(path, f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
