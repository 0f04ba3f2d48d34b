"""What every experiment shares: running one under its workdir, training one run, report prose.

An experiment is `fn(cfg, run) -> metrics` registered with `experiments.config.register`: `cfg`
is its typed config, `run.out` the folder its outputs go to (staged, published as one set
when it returns) and `run.workdir` the workdir the user named. Checkpoints for resuming
(`--checkpoint`, relative to the current folder) are written in place, outside the staged set.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from experiments.config import EXPERIMENTS, make_config
from jaxlr.data.config import DataConfig
from jaxlr.data.registry import DatasetSpec, get_spec
from jaxlr.data.splits import optimum_features
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.results import TrainResult
from jaxlr.engine.step import Data, schedule_numbers
from jaxlr.engine.train import fit, model_for
from jaxlr.host.io import atomic_write_json
from jaxlr.report import tables

log = logging.getLogger("jaxlr.experiments")


class RunFailed(RuntimeError):
    """A run that failed in an expected way (every grid point diverged): one line, exit 1."""


class RunDir(NamedTuple):
    """Where a run writes: `out` (its outputs) and `workdir` (the folder the user named).

    `tensorboard`: write TensorBoard event files under `out / TENSORBOARD_DIR`
    (`--notensorboard` turns it off).
    """

    out: Path
    workdir: Path
    tensorboard: bool = True


# The folder of a run's TensorBoard event files (inside the published set).
TENSORBOARD_DIR = "tensorboard"


_TB_ANNOUNCED: set = set()


def tensorboard_observer(run: RunDir, key: str | None = None, *, sweep: bool = False, **kwargs):
    """The `TensorBoardObserver` of run `key` (a sub-folder of the run's TensorBoard folder;
    a sweep writes its point folders at the folder itself)."""
    from jaxlr.report.observers import TensorBoardObserver

    root = run.out / TENSORBOARD_DIR
    if run.tensorboard and root not in _TB_ANNOUNCED and jax.process_index() == 0:
        _TB_ANNOUNCED.add(root)
        log.info(
            "TensorBoard: tensorboard --logdir %s (live; once published: %s)",
            root,
            run.workdir / TENSORBOARD_DIR,
        )
    logdir = root if sweep else root / tables.slug(key or "run")
    return TensorBoardObserver(logdir, enabled=run.tensorboard, **kwargs)


# What every run publishes (run_experiment writes the first two, each experiment its report).
RUN_OUTPUTS = ("config.json", "metrics.json", "report.md")


def run_experiment(
    name: str, workdir: str | Path, overrides: dict | None = None, tensorboard: bool = True
) -> dict:
    """Runs experiment `name` into `workdir`; returns its metrics (also `metrics.json`).

    The config is built and checked first (`ConfigError` before anything is written). The
    run holds the workdir's lock, writes into a staging folder and publishes config.json,
    metrics.json, report, histories and figures together when it succeeds; a failed or
    interrupted run leaves the workdir's earlier outputs as they were. Before the experiment
    starts, a workdir it cannot take over is refused
    (`jaxlr.host.workdir_checks.check_takeover`): the published outputs of another
    experiment, or files no run wrote where config.json, metrics.json or report.md go.
    """
    from jaxlr.host import workdir as jworkdir

    cfg = make_config(name, overrides)
    workdir = Path(workdir)
    if jax.process_count() > 1 and jax.process_index() != 0:
        # A multi-process run: every process computes, process 0 alone writes (and locks).
        with tempfile.TemporaryDirectory(prefix="jaxlr-process") as tmp:
            return EXPERIMENTS[name].fn(cfg, RunDir(Path(tmp), workdir, False))
    with jworkdir.Staging(workdir, kind=name, outputs=RUN_OUTPUTS) as stage:
        out = stage.dir
        config = {"experiment": name, **cfg.to_dict()}  # one object per section
        atomic_write_json(out / "config.json", tables.jsonable(config))
        t0 = time.perf_counter()
        try:
            metrics = EXPERIMENTS[name].fn(cfg, RunDir(out, workdir, tensorboard))
        finally:
            stop_optimum_ahead()  # a run that failed before its optimum: no compile left behind
        metrics.setdefault("wall_seconds_total", time.perf_counter() - t0)
        atomic_write_json(out / "metrics.json", tables.jsonable(metrics))
    log.info("wrote %s", workdir / "metrics.json")
    return metrics


def checkpoint_dir(folder: str, run: RunDir) -> Path | None:
    """The `--checkpoint` folder (relative to the current folder, as every path flag; '' =
    none), refused in one line inside what runs publish and remove (`latest`, `.runs`, a
    staging folder)."""
    from jaxlr.host import workdir_checks

    if not folder:
        return None
    return workdir_checks.check_own_folder(run.workdir, Path(folder).expanduser())


def checkpoint_file(folder: str, run: RunDir, key: str | None) -> Path | None:
    """The resumable checkpoint of run `key` in `folder` (see `checkpoint_dir`); '' = none."""
    where = checkpoint_dir(folder, run)
    return None if where is None else where / f"{tables.slug(key or 'run')}.npz"


def train_one(cfg, data: Data, run: RunDir, key: str | None = None, **changes) -> TrainResult:
    """Trains one run of `cfg` (its `train` and `hparams` sections) with `jaxlr.engine.train.fit`.

    Args:
      cfg: an experiment config with `train`, `hparams` (`RunHParams`) and `checkpoint`.
      data: preprocessed arrays.
      run: where the experiment writes.
      key: run name in logs and checkpoint names (None for an experiment's only run).
      **changes: `TrainConfig` fields that differ for this run (schedule=..., shuffle=...);
        `lr=` and `l2=` override the hyper-parameters.
    """
    hp = cfg.hparams
    lr, l2 = changes.pop("lr", hp.lr), changes.pop("l2", hp.l2)
    tcfg = dataclasses.replace(cfg.train, **changes)
    hparams = make_hparams(
        lr, l2, momentum=hp.momentum, seed=hp.seed, dtype=np.asarray(data.x_train).dtype
    )
    prefix = f"[{key}] " if key else ""
    return fit(
        tcfg,
        hparams,
        data,
        checkpoint_path=checkpoint_file(getattr(cfg, "checkpoint", ""), run, key),
        log_fn=lambda msg: log.info("%s%s", prefix, msg),
        observers=[tensorboard_observer(run, key, config={**cfg.flat(), **changes})],
    )


def run_metrics(result: TrainResult, tcfg: TrainConfig, num_train: int) -> dict:
    """metrics.json entry of one run: final numbers of the returned weights, schedule, time."""
    out = dict(result.metrics)
    sched = schedule_numbers(tcfg, num_train)
    out["steps_per_epoch"] = int(sched.batches_per_epoch)
    out["eval_every"] = int(sched.eval_every)
    out["wall_seconds"] = float(result.wall_seconds)
    return out


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve")  # fmt: skip


def class_words(data: DataConfig) -> DatasetSpec:
    """The registry entry of `data`'s data set: its class names, `noun` and `plural`."""
    return get_spec(data.dataset)


def task_name(data: DataConfig) -> str:
    """What is classified, in the data set's words: "2 vs 3", "Pullover vs Dress", "ten digits"
    or "ten classes" (for titles)."""
    spec = class_words(data)
    if data.binary:
        return f"{spec.class_names[data.digits[0]]} vs {spec.class_names[data.digits[1]]}"
    k = spec.num_classes
    return f"{_NUMBER_WORDS[k] if k < len(_NUMBER_WORDS) else k} {spec.plural}"


def data_text(data_cfg: DataConfig, data: Data) -> str:
    """One sentence on the data of a run, from its config."""
    n, v = int(np.shape(data.x_train)[0]), int(np.shape(data.x_val)[0])
    spec = class_words(data_cfg)
    if data_cfg.binary:
        pos, neg = (spec.class_names[c] for c in data_cfg.digits)
        what = f"{spec.plural} {pos} (label 1) vs {neg} (label 0)"
    else:
        what = f"all {task_name(data_cfg)}"
    return (
        f"Data: {data_cfg.dataset}, {what}, {n} training / {v} validation examples (split "
        f"`{data_cfg.split}`, scale `{data_cfg.scale}`, bias feature {data_cfg.bias_feature})."
    )


def protocol_text(cfg, data: Data, tcfg: TrainConfig | None = None) -> str:
    """The data and training protocol of a run as report prose, from its config."""
    tcfg = tcfg or cfg.train
    sched = schedule_numbers(tcfg, int(np.shape(data.x_train)[0]))
    lr = cfg.hparams.lr
    lr_text = f"{lr:g}" if isinstance(lr, float) else ", ".join(f"{v:g}" for v in lr)
    return (
        f"{data_text(cfg.data, data)} Model `{tcfg.model}`, optimizer `{tcfg.optimizer}`, "
        f"schedule `{tcfg.schedule}`, learning rate {lr_text}, batch {tcfg.batch_size}, up to "
        f"{tcfg.num_epochs} epochs ({sched.batches_per_epoch} steps each), shuffle "
        f"{tcfg.shuffle}, validation every {sched.eval_every} steps, dtype {cfg.data.dtype}."
    )


# ---------------------------------------------------------------------------------------------
# The exact optimum beside trained runs of the convex linear models.


class Optimum(NamedTuple):
    """Per-point optimum numbers (`jaxlr.core.optimum.optimum_report` rows) and the bound model."""

    rows: list
    report: Any
    model: Any


@dataclasses.dataclass(eq=False)  # hashed by identity (`_PENDING`)
class OptimumAhead:
    """The model, the thread and its stop flag of `optimum_ahead`, for `optimum_for`; `made`
    gets the thread's float64 features ("x") and `optimum.PreparedData` ("prepared")."""

    model: Any
    thread: threading.Thread
    stop: threading.Event
    made: dict
    data_cfg: DataConfig | None = None


# Compiling threads that were started and not yet waited for (`stop_optimum_ahead`).
_PENDING: set = set()
_PENDING_LOCK = threading.Lock()


def stop_optimum_ahead() -> None:
    """Stops every `optimum_ahead` thread still compiling after its current program, and waits.

    Called when an experiment ends (a run that failed before its optimum) and at exit: a
    thread inside XLA's compiler when the interpreter finalizes aborts the process.
    """
    with _PENDING_LOCK:
        pending = list(_PENDING)
    for ahead in pending:
        ahead.stop.set()
    for ahead in pending:
        ahead.thread.join()


atexit.register(stop_optimum_ahead)


def optimum_ahead(
    tcfg: TrainConfig, splits, l2_S, data_cfg: DataConfig | None = None
) -> OptimumAhead | None:
    """Starts, on a daemon thread, what `optimum_for` will run for `l2_S` that needs no run.

    Call it before training the runs; `optimum_for(..., ahead=...)` waits for the thread and
    uses the same bound model (a static argument of the compiled programs). First it
    compiles (only shapes are read): with the persistent compilation cache it traces, lowers
    and loads (~3-5 s of CPU for `tdt4265_task4`'s optimum, which busy cores take from the
    runs), without it it compiles. Then, with `data_cfg`, it computes what the optimum needs
    of the data alone (`jaxlr.data.splits.optimum_features`, `optimum.prepare_data`: the
    float64 features, the Gram eigenbasis, the stored copies; ~1.5 s for `tdt4265_task4`),
    nothing that depends on a lambda. A failure in the thread is logged and only loses the
    saving; a run that ends before its optimum stops it after the program it is running
    (`stop_optimum_ahead`). None for the MLP (no convex objective).
    """
    from jaxlr.core import optimum

    if tcfg.model not in ("logistic", "softmax"):
        return None
    num, num_features = np.shape(splits.data.x_train)
    model = model_for(tcfg, num_features, np.dtype(np.float64))
    x = jax.ShapeDtypeStruct((num, num_features), np.float64)
    y = np.asarray(splits.data.y_train)
    l2 = [float(v) for v in l2_S]

    stop = threading.Event()

    made: dict = {}

    def work():
        try:
            optimum.prepare(model, x, y, l2, stop=stop)
            if data_cfg is not None and not stop.is_set():
                made["x"] = optimum_features(data_cfg, splits)
                made["prepared"] = optimum.prepare_data(model, made["x"])
        except Exception as e:  # only the saving is lost: optimum_for does it
            made.clear()
            log.warning("preparing the optimum ahead failed (done when needed): %s", e)
        finally:
            with _PENDING_LOCK:
                _PENDING.discard(ahead)

    thread = threading.Thread(target=work, name="jaxlr-optimum-compile", daemon=True)
    ahead = OptimumAhead(model, thread, stop, made, data_cfg)
    with _PENDING_LOCK:
        _PENDING.add(ahead)
    thread.start()
    return ahead


def optimum_for(tcfg: TrainConfig, data_cfg: DataConfig, splits, l2_S, learning_rates=None,
                finals=None, ahead: OptimumAhead | None = None):  # fmt: skip
    """Solves each distinct lambda of `l2_S` to its optimum (float64) on the training set.

    The solver gets the float64 features rebuilt from the uint8 training images of `splits`
    (`jaxlr.data.splits.optimum_features`: same examples, same preprocessing), whatever
    `data_cfg.dtype` the runs trained in: the optimum is the optimum of the images, so a
    float32 run and a float64 run report the same one. Every row gains "unstable": the
    learning rate exceeds the gradient-descent limit 2 / lambda_max of the Hessian at the
    optimum (lr / lr_limit > 1), so gradient descent at that rate cannot settle there.

    Returns:
      `Optimum`, or None for models without a convex objective (the MLP).
    """
    from jaxlr.core import optimum

    if tcfg.model not in ("logistic", "softmax"):
        return None
    made = {}
    if ahead is not None:
        ahead.thread.join()
        # The thread's data work is used only for the data it was made for.
        made = ahead.made if ahead.data_cfg == data_cfg else {}
    x = made["x"] if "x" in made else optimum_features(data_cfg, splits)
    y = np.asarray(splits.data.y_train)
    model = ahead.model if ahead is not None else model_for(tcfg, x.shape[1], x.dtype)
    rep = optimum.optimum_report(
        model,
        x,
        y,
        [float(v) for v in l2_S],
        learning_rates=None if learning_rates is None else [float(v) for v in learning_rates],
        final_objectives=None if finals is None else [float(v) for v in finals],
        include_bias=tcfg.l2_bias,
        prepared=made.get("prepared"),
    )
    for row in rep.rows:
        ratio = row.get("lr_over_limit")
        row["unstable"] = bool(ratio is not None and ratio > 1.0)
    return Optimum(rep.rows, rep, model)


def optimum_params(opt: Optimum, l2: float):
    """The optimum's parameters (float64 numpy) at lambda `l2` (one of the solved ones)."""
    i = int(np.flatnonzero(np.asarray(opt.report.l2_L) == float(l2))[0])
    return jax.tree.map(lambda a: np.asarray(a[i]), opt.report.path.params)


def stability_text(rows: list, label) -> str:
    """Report sentence on the points above the gradient-descent limit (or that none are)."""
    bad = [label(i) for i, r in enumerate(rows) if r.get("unstable")]
    limits = sorted({(r["l2"], r["lr_limit"]) for r in rows})
    lim = ", ".join(f"{lr_lim:.3g} at lambda {lam:g}" for lam, lr_lim in limits)
    head = (
        f"Gradient descent can settle at the optimum only with lr < 2 / lambda_max(H), H the "
        f"Hessian of the objective at the optimum: the limit is {lim}. "
    )
    if not bad:
        return head + "Every point's learning rate is below its limit."
    return head + (
        f"**Unstable** (learning rate above the limit, so the iterates cannot converge to the "
        f"optimum; marked in the table): {', '.join(bad)}."
    )
