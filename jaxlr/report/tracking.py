"""TensorBoard output of runs and sweeps (host side only): a writer and jaxlr records -> events.

A `Writer` takes scalars, text and hyper-parameters; `TensorBoardWriter` writes them as
TensorBoard event files, `NullWriter` drops them. `make_writer` gives the first, or the second
(after one warning per process) where tensorboardX is not installed
(`pip install 'jaxlr[tensorboard]'`). Scalars are encoded by `jaxlr.report.event_file`, a whole
history chunk at once; text and hparams summaries are tensorboardX's protos, framed there too.
Each `write_*` of one run has a plural form for many runs, each to its own writer (a sweep's
points): `write_histories`, `write_configs`, `write_finals`, `write_points_hparams`. They write
the same bytes to each file (wall times aside), with one encoding for all runs (a constant
number of array operations, one CRC pass) and one write per file; the one-run functions are
their one-run case.
tensorboardX is imported inside functions only, so importing this module never needs it;
reading and serving the files needs `tensorboard`.

What jaxlr's records become (tags):
- `write_history`: a history (`jaxlr.engine.train.history_from_logs`, the rows of
  history.jsonl): `train/loss` at every step that ran; `val/loss`, `val/accuracy`,
  `train/accuracy` at every check; `lr` at every step where the history has a
  "learning_rate" array or a rate (a float, or a schedule of the global step) is given.
  Steps are the history's global steps, so calling it with only a chunk's new rows
  appends to the same curves (the file is flushed after each call, a run can be watched).
- `write_config`: the config as JSON in a Markdown code block, text tag `config`.
- `write_final`: final numbers as `final/<name>` (nested dicts as `final/<a>/<b>`).
- Sweeps: one run folder per point (`sweep_point_dir`, named by its hyper-parameters);
  `write_hparams_domains` once at the sweep's root (the HParams dashboard's columns: each
  hyper-parameter's discrete values and the metric tags); per point `write_point_hparams`
  (its hyper-parameters, seed included, and `point_metrics`, each also a scalar tag
  `hparams/<name>`: the HParams table shows a tag's last value).

Values that are not numbers: None and strings are skipped everywhere; bools become 0 / 1.
NaN and infinities are kept in `write_history` and `write_final` (they are the record, as in
history.jsonl; TensorBoard's charts mark them) but skipped in hyper-parameter metrics, where
a point then shows an empty cell (its `diverged` metric says why); "not stopped" and "not
pruned" are -1, as in jaxlr's records.

Dimension legend: T steps of a history, G tags of a step, R runs, E steps of all R runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jaxlr.report import event_file
from jaxlr.report.tables import jsonable

__all__ = [
    "HPARAMS_METRICS",
    "INSTALL_HINT",
    "NullWriter",
    "TensorBoardWriter",
    "Writer",
    "hparam_domains",
    "make_writer",
    "point_metrics",
    "sweep_point_dir",
    "write_config",
    "write_configs",
    "write_final",
    "write_finals",
    "write_hparams_domains",
    "write_histories",
    "write_history",
    "write_point_hparams",
    "write_points_hparams",
]

logger = logging.getLogger("jaxlr.tracking")

INSTALL_HINT = "pip install 'jaxlr[tensorboard]'"
_WARNED = False  # the missing-tensorboardX warning is logged once per process

# Tag of each history array: (history key, step key, tag).
_HISTORY_TAGS = (
    ("train_loss", "step", "train/loss"),
    ("val_loss", "check_step", "val/loss"),
    ("val_accuracy", "check_step", "val/accuracy"),
    ("train_accuracy", "check_step", "train/accuracy"),
)

# The metrics `point_metrics` gives (those a record lacks are left out), as scalar tags.
HPARAMS_METRICS = tuple(
    f"hparams/{name}"
    for name in (
        "best_val_loss",
        "best_val_accuracy",
        "final_val_loss",
        "final_val_accuracy",
        "steps",
        "stop_step",
        "pruned_rung",
        "diverged",
        "gap",
        "lr_over_limit",
    )
)

# Shorter names in folder names only (the hparams keep jaxlr's names).
_SHORT_NAMES = {"learning_rate": "lr"}


# ---------------------------------------------------------------------------------------------
# Writers.


class Writer(Protocol):
    """Where tracking output goes: scalars, text, hyper-parameters of one run folder."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Writes tag -> value at `step`."""

    def scalar_rows(
        self,
        steps_T: np.ndarray,
        tags: Sequence[str],
        values_TG: np.ndarray,
        present_TG: np.ndarray | None,
    ) -> None:
        """Writes, at each of the distinct `steps_T`, tag g -> values_TG[t, g] where
        present_TG[t, g] (None: everywhere); one event per step, as `scalars` would."""

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """Writes Markdown `text` under `tag`."""

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0
    ) -> None:
        """Marks this run as one session of the HParams dashboard; metrics as scalars at `step`."""

    def flush(self) -> None:
        """Makes everything written so far readable."""

    def close(self) -> None:
        """Flushes and releases the files."""


class NullWriter:
    """A `Writer` that writes nothing (tracking off, or tensorboardX not installed)."""

    logdir = None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def scalar_rows(
        self,
        steps_T: np.ndarray,
        tags: Sequence[str],
        values_TG: np.ndarray,
        present_TG: np.ndarray | None,
    ) -> None:
        pass

    def text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_FILE_COUNTER = itertools.count()


def _require_tensorboardx() -> None:
    """ImportError with the install hint where tensorboardX (its protos) cannot be imported."""
    try:
        from tensorboardX.proto import event_pb2  # noqa: F401
    except ImportError as e:
        raise ImportError(f"TensorBoard output needs tensorboardX: {INSTALL_HINT}") from e


def _events_file(logdir: str | os.PathLike):
    """A new event file in `logdir` (created if needed), its first event written.

    Named as tensorboardX names them (`events.out.tfevents.<seconds>.<host>`) plus the process
    id and a counter, so two files opened in the same second do not overwrite each other.
    """
    logdir = os.fspath(logdir)
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{str(time.time())[:10]}.{socket.gethostname()}"
    f = open(os.path.join(logdir, f"{name}.{os.getpid()}.{next(_FILE_COUNTER)}"), "wb")
    f.write(event_file.file_version_event(time.time()))
    return f


def _summary_event(summary, step: int) -> bytes:
    """One serialized event holding a tensorboardX `Summary` (not yet framed)."""
    from tensorboardX.proto.event_pb2 import Event

    return Event(wall_time=time.time(), step=int(step), summary=summary).SerializeToString()


def _summary_record(summary, step: int) -> bytes:
    """The TFRecord of one event holding a tensorboardX `Summary`."""
    return event_file.frame_records([_summary_event(summary, step)])


def _text_summary(tag: str, text: str):
    """A text-plugin Summary under exactly `tag` (tensorboardX's `add_text` appends
    "/text_summary" to the tag)."""
    from tensorboardX.proto.plugin_text_pb2 import TextPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

    content = TextPluginData(version=0).SerializeToString()
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="text", content=content)
    )
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[text.encode("utf-8")],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])


class TensorBoardWriter:
    """A `Writer` on a TensorBoard event file in `logdir` (one run folder).

    Every call hands its events to the file at once; `flush` makes them readable by other
    processes (TensorBoard watching a run). Writing after `close` opens a new event file in
    the same folder. `close` does not fsync (as tensorboardX's writer): a file outside a
    workdir gets the OS's usual durability; a workdir's publishing fsyncs its files.

    Raises:
      ImportError: tensorboardX is not installed (the message says how to install it).
    """

    def __init__(self, logdir: str | os.PathLike):
        _require_tensorboardx()
        self.logdir = os.fspath(logdir)
        self._events = _events_file(self.logdir)

    def _file(self):
        if self._events is None:
            self._events = _events_file(self.logdir)
        return self._events

    def _write(self, records: bytes) -> None:
        """Appends framed TFRecords (the module's batched functions encode many files' at once)."""
        if records:
            self._file().write(records)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if values:
            row = [[float(v) for v in values.values()]]
            self.scalar_rows(np.asarray([step]), list(values), np.asarray(row), None)

    def scalar_rows(
        self,
        steps_T: np.ndarray,
        tags: Sequence[str],
        values_TG: np.ndarray,
        present_TG: np.ndarray | None,
    ) -> None:
        if len(steps_T):
            self._write(event_file.scalar_events(time.time(), steps_T, tags, values_TG, present_TG))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._write(_summary_record(_text_summary(tag, text), step))

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0
    ) -> None:
        start, end = _session_summaries(hparams)
        self._write(event_file.frame_records([_summary_event(start, 0), _summary_event(end, 0)]))
        self.scalars(step, metrics)

    def flush(self) -> None:
        # To the OS only: readable at once by TensorBoard, and no fsync per chunk (an fsync per
        # run folder per chunk was most of a sweep's writing time).
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        # No fsync. Inside a workdir it adds no safety: publishing fsyncs the whole staged tree
        # (`jaxlr.host.workdir`) before the switch, and a run that fails publishes nothing. And
        # it was not cheap: a sweep closes a file per point, twice (curves, then HParams rows),
        # 0.5-2 ms each, one after the other. A caller's own logdir gets what tensorboardX's
        # writer gives: the data is with the OS at close, on disk when the OS writes it back.
        if self._events is not None:
            f, self._events = self._events, None
            f.close()


def make_writer(logdir: str | os.PathLike, enabled: bool = True) -> Writer:
    """The writer of one run folder: TensorBoard, or a `NullWriter`.

    Args:
      logdir: the run's folder (created if needed).
      enabled: False gives a `NullWriter` without a word.
    Returns:
      A `TensorBoardWriter`, or a `NullWriter` when tracking is off or tensorboardX cannot
      be imported (then one warning line per process on logger "jaxlr.tracking").
    """
    if not enabled:
        return NullWriter()
    try:
        return TensorBoardWriter(logdir)
    except ImportError:
        _warn_missing()
        return NullWriter()


def _warn_missing() -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        logger.warning(
            "tensorboardX is not installed, no TensorBoard output is written; install it with: %s",
            INSTALL_HINT,
        )


# ---------------------------------------------------------------------------------------------
# Runs: history, config, final numbers.


def write_history(
    writer: Writer,
    history: Mapping[str, Any],
    learning_rate: float | Callable | None = None,
) -> int:
    """Writes a history (or a chunk's new rows of one) as scalars, then flushes.

    Args:
      writer: the run's writer.
      history: a `jaxlr.engine.train` history: "step", "train_loss" [T] (steps that ran) and
        "check_step", "val_loss", "val_accuracy", "train_accuracy" (checks); an optional
        "learning_rate" [T] aligned with "step". Steps are global, so chunks append.
      learning_rate: where the history has no "learning_rate": the rate (a float), or the
        schedule as a function of the global step (the optimizer's update count, e.g.
        `jaxlr.engine.optim.make_schedule(config, lr, total_steps)`; called once with all
        steps [T]); None writes no `lr`.
    Returns:
      The number of steps written to (steps with any value).
    """
    if learning_rate is None:
        rates = None
    elif callable(learning_rate):
        rates = lambda _, steps: learning_rate(steps)  # noqa: E731
    else:
        rates = lambda _, steps: learning_rate  # noqa: E731
    return write_histories([writer], [history], rates)[0]


def write_histories(
    writers: Sequence[Writer],
    histories: Sequence[Mapping[str, Any]],
    learning_rate: Callable | None = None,
) -> list[int]:
    """Writes many runs' histories, each to its writer (e.g. a chunk's new rows of every
    sweep point), then flushes them.

    Each file gets the bytes `write_history` would write (wall times aside), but all runs are
    encoded together: a constant number of array operations and one CRC pass for all of them,
    one write per file.

    Args:
      writers: one per history.
      histories: R histories, as `write_history` takes them.
      learning_rate: where a history has no "learning_rate": None (no `lr`), or the rates of
        all runs as one function of (run [E], global step [E]) -> rate [E] (run: the index
        into `histories`), called once with the "step"s of every such run.
    Returns:
      Each run's number of steps written to.
    """
    if len(writers) != len(histories):
        raise ValueError(f"{len(writers)} writers for {len(histories)} histories")
    counts_R, steps_E, tags, values_EG, present_EG = _history_rows(histories, learning_rate)
    _write_rows(writers, counts_R, steps_E, tags, values_EG, present_EG)
    for w in writers:
        w.flush()
    return counts_R.tolist()


def _concat(arrays: Sequence, dtype) -> np.ndarray:
    """The arrays one after the other, as `dtype` (an empty one adds nothing, not its dtype)."""
    arrays = [a for a in arrays if len(a)]
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _run_series(histories, tag, step_key, key, rates) -> tuple | None:
    """One tag's series over the runs that have it, run after run.

    Returns:
      None if no run has it, else (tag, step key, runs [R'], lengths [R'], values, float64).
    """
    if tag != "lr":
        runs = [i for i, h in enumerate(histories) if key in h]
        if not runs:
            return None
        arrays = [histories[i][key] for i in runs]
        return tag, step_key, np.asarray(runs), _lengths(arrays), _concat(arrays, np.float64)
    # The rates: a history's own "learning_rate", else `rates` at its steps.
    own = [i for i, h in enumerate(histories) if "learning_rate" in h]
    want = [] if rates is None else [i for i, h in enumerate(histories) if "learning_rate" not in h]
    if not own and not want:
        return None
    own_arrays = [histories[i]["learning_rate"] for i in own]
    steps = [histories[i].get("step", ()) for i in want]
    runs, lengths = np.asarray(own + want, np.int64), _lengths(own_arrays + steps)
    values = _concat(own_arrays, np.float64)
    if len(want):
        steps_W = _concat(steps, np.int64)
        rate_W = rates(np.repeat(want, lengths[len(own) :]), steps_W) if len(steps_W) else 0.0
        values = np.concatenate(
            [values, np.broadcast_to(np.asarray(rate_W, np.float64), steps_W.shape)]
        )
    if own and want:  # back in run order
        values = values[np.argsort(np.repeat(runs, lengths), kind="stable")]
        by_run = np.argsort(runs)
        runs, lengths = runs[by_run], lengths[by_run]
    return tag, step_key, runs, lengths, values


def _lengths(arrays: Sequence) -> np.ndarray:
    return np.asarray([len(a) for a in arrays], np.int64)


def _history_rows(histories: Sequence[Mapping[str, Any]], rates) -> tuple:
    """Histories as one table of rows, one per step of each run, for `event_file`.

    Returns:
      counts_R (rows of each run; the rows are run after run), steps_E (each run's sorted
      and distinct), tags [G] (`_HISTORY_TAGS` order, then "lr"; those some run has),
      values_EG (float64) and present_EG (bool). A run's steps are those of the step keys its
      series use; a series longer or shorter than its steps is cut to the shorter of the two;
      a step given twice in a series keeps its last value.
    """
    r = len(histories)
    series = [_run_series(histories, tag, sk, k, rates) for k, sk, tag in _HISTORY_TAGS]
    series = [x for x in series + [_run_series(histories, "lr", "step", None, rates)] if x]
    # Each step key's steps of the runs whose series use it, run after run; (run, step)
    # pairs of all of them, sorted and distinct, are the rows.
    key_runs: dict[str, set] = {}
    for _, sk, runs, _, _ in series:
        key_runs.setdefault(sk, set()).update(runs.tolist())
    where, pair_runs, pair_steps, base = {}, [], [], 0
    for sk, runs in key_runs.items():
        runs = sorted(runs)
        arrays = [histories[i].get(sk, ()) for i in runs]
        n = _lengths(arrays)
        start_R, length_R = np.zeros(r, np.int64), np.zeros(r, np.int64)
        start_R[runs], length_R[runs] = base + np.cumsum(n) - n, n
        where[sk] = (start_R, length_R)
        pair_runs.append(np.repeat(np.asarray(runs, np.int64), n))
        pair_steps.append(_concat(arrays, np.int64))
        base += int(n.sum())
    runs_P, steps_P = _concat(pair_runs, np.int64), _concat(pair_steps, np.int64)
    order = np.lexsort((steps_P, runs_P))
    first = np.ones(len(order), bool)
    first[1:] = (np.diff(runs_P[order]) != 0) | (np.diff(steps_P[order]) != 0)
    row_P = np.empty(len(order), np.int64)
    row_P[order] = np.cumsum(first) - 1
    steps_E = steps_P[order][first]
    counts_R = np.bincount(runs_P[order][first], minlength=r)
    values_EG = np.zeros((len(steps_E), len(series)))
    present_EG = np.zeros(values_EG.shape, bool)
    for g, (_, sk, runs, n_values, values) in enumerate(series):
        start_R, length_R = where[sk]
        n = np.minimum(n_values, length_R[runs])
        if (n < n_values).any():  # cut to the steps: a run's first n values
            within = np.arange(len(values)) - np.repeat(np.cumsum(n_values) - n_values, n_values)
            values = values[within < np.repeat(n, n_values)]
        rows = row_P[np.repeat(start_R[runs] - (np.cumsum(n) - n), n) + np.arange(n.sum())]
        if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():  # a step twice: the last one
            last = len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]
            rows, values = rows[last], values[last]
        values_EG[rows, g] = values
        present_EG[rows, g] = True
    return counts_R, steps_E, [x[0] for x in series], values_EG, present_EG


def _write_rows(writers, counts_R, steps_E, tags, values_EG, present_EG) -> None:
    """Writes rows of many runs (run after run, counts_R of each), as `Writer.scalar_rows`."""
    if _all_tensorboard(writers):
        files = event_file.scalar_events_many(
            time.time(), counts_R, steps_E, tags, values_EG, present_EG
        )
        for w, records in zip(writers, files):
            w._write(records)
        return
    ends = np.cumsum(counts_R).tolist()
    for w, a, b in zip(writers, [0] + ends[:-1], ends):
        if b > a:
            w.scalar_rows(steps_E[a:b], tags, values_EG[a:b], present_EG[a:b])


def _write_scalars(writers, steps_R: Sequence[int], values_R: Sequence[Mapping]) -> None:
    """Writes, for each run, one event of tag -> value at its step, as `Writer.scalars`
    (runs with the same tags in the same order are encoded together)."""
    if not _all_tensorboard(writers):
        for w, step, values in zip(writers, steps_R, values_R):
            if values:
                w.scalars(step, values)
        return
    groups: dict[tuple, list[int]] = {}
    for i, values in enumerate(values_R):
        if values:
            groups.setdefault(tuple(values), []).append(i)
    now = time.time()
    for tags, runs in groups.items():
        values_EG = np.asarray([[float(v) for v in values_R[i].values()] for i in runs])
        steps_E = np.asarray([steps_R[i] for i in runs], np.int64)
        files = event_file.scalar_events_many(now, np.ones(len(runs)), steps_E, tags, values_EG)
        for i, records in zip(runs, files):
            writers[i]._write(records)


def write_config(writer: Writer, config: Mapping[str, Any], tag: str = "config") -> str:
    """Writes the config as text: JSON in a Markdown code block (TensorBoard's Text tab).

    Returns:
      The Markdown written.
    """
    return write_configs([writer], [config], tag)[0]


def write_configs(
    writers: Sequence[Writer], configs: Sequence[Mapping[str, Any]], tag: str = "config"
) -> list[str]:
    """`write_config` of many runs, each to its writer (e.g. every sweep point's), framed
    together.

    Returns:
      Each run's Markdown.
    """
    texts = []
    for config in configs:
        body = json.dumps(jsonable(dict(config)), indent=2, default=str)
        texts.append(f"```json\n{body}\n```")
    if _all_tensorboard(writers):
        _write_summaries(writers, [[(_text_summary(tag, t), 0)] for t in texts])
    else:
        for w, t in zip(writers, texts):
            w.text(tag, t)
    for w in writers:
        w.flush()
    return texts


def _all_tensorboard(writers: Sequence[Writer]) -> bool:
    """Whether the module's batched encoding can write to all of them (else each writer's own
    methods, one run at a time)."""
    return all(isinstance(w, TensorBoardWriter) for w in writers)


def _write_summaries(writers, summaries_R: Sequence[Sequence[tuple]]) -> None:
    """Writes each run's (tensorboardX `Summary`, step) pairs as events to its
    `TensorBoardWriter`, the CRCs of all runs' in one call."""
    events = [[_summary_event(summary, step) for summary, step in run] for run in summaries_R]
    for w, records in zip(writers, event_file.frame_record_groups(events)):
        w._write(records)


def _number(value: Any) -> float | None:
    """A number's float (bools 0 / 1), 0-d arrays (numpy or JAX) included; None for anything
    else (None, text, arrays of rank >= 1)."""
    if not isinstance(value, (str, bytes)) and hasattr(value, "dtype") and np.ndim(value) == 0:
        value = np.asarray(value)[()]
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _flat_numbers(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flat_numbers(v, f"{prefix}{k}/"))
        elif (x := _number(v)) is not None:
            out[f"{prefix}{k}"] = x
    return out


def write_final(writer: Writer, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    """Writes final numbers as scalars `final/<name>` at `step`, then flushes.

    Args:
      writer: the run's writer.
      metrics: name -> value, e.g. `TrainResult.metrics`; nested dicts become
        `final/<a>/<b>`; None, text and arrays are skipped, NaN and infinities kept.
      step: the step to write them at (e.g. the last step that ran).
    Returns:
      The tags and values written.
    """
    return write_finals([writer], [metrics], [step])[0]


def write_finals(
    writers: Sequence[Writer], metrics: Sequence[Mapping[str, Any]], steps: Sequence[int]
) -> list[dict[str, float]]:
    """`write_final` of many runs, each to its writer (e.g. every sweep point's), encoded
    together.

    Returns:
      Each run's tags and values written.
    """
    values = [_flat_numbers(m, "final/") for m in metrics]
    _write_scalars(writers, steps, values)
    for w in writers:
        w.flush()
    return values


# ---------------------------------------------------------------------------------------------
# Sweeps: a folder per point, the HParams dashboard.


def _value_text(value: Any) -> str:
    if isinstance(value, np.floating):
        # The shortest text of the value at its own precision (float32 0.1 -> "0.1").
        value = float(str(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def sweep_point_dir(root: str | os.PathLike, hparams: Mapping[str, Any]) -> Path:
    """The run folder of one sweep point under `root`, named by its hyper-parameters.

    `{"learning_rate": 0.01, "l2": 0.001, "momentum": 0.0, "seed": 0}` ->
    `root/lr=0.01,l2=0.001,momentum=0.0,seed=0`: keys in the given order ("learning_rate"
    shortened to "lr"), floats as their shortest exact text (distinct values give distinct
    folders), None skipped, any character other than letters, digits and `.+-=,_` as "_".
    The same point always gets the same folder.
    """
    parts = [
        f"{_SHORT_NAMES.get(k, k)}={_value_text(v)}" for k, v in hparams.items() if v is not None
    ]
    name = re.sub(r"[^A-Za-z0-9.+\-=,_]", "_", ",".join(parts)) or "point"
    return Path(root) / name


def _hparam_value(value: Any) -> Any:
    """A hyper-parameter as a Python bool, float or str (None for None).

    A numpy float is its shortest decimal at its own precision (float32 0.1 -> 0.1, not
    0.10000000149011612), as `sweep_point_dir` and `Grid.point` give it: the dashboard
    hides a session whose value is not one of its domain's values.
    """
    if value is None:
        return None
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def hparam_domains(points: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Each hyper-parameter's distinct values over the points, sorted (for the dashboard)."""
    out: dict[str, set] = {}
    for p in points:
        for k, v in p.items():
            if (x := _hparam_value(v)) is not None:
                out.setdefault(k, set()).add(x)
    return {k: sorted(v, key=lambda x: (str(type(x)), x)) for k, v in out.items()}


def _plugin_summary(tag: str, **content):
    """A Summary carrying hparams plugin data (`HParamsPluginData(**content)`) under `tag`."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    data = HParamsPluginData(version=0, **content).SerializeToString()
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=data)
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def _session_summaries(hparams: Mapping[str, Any]):
    """The session start (hyper-parameters) and end (success) summaries of one run."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import SessionEndInfo, SessionStartInfo

    start = SessionStartInfo(start_time_secs=time.time())
    for k, v in hparams.items():
        x = _hparam_value(v)
        if isinstance(x, bool):
            start.hparams[k].bool_value = x
        elif isinstance(x, float):
            start.hparams[k].number_value = x
        elif isinstance(x, str):
            start.hparams[k].string_value = x
    end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"), end_time_secs=time.time())
    return (
        _plugin_summary("_hparams_/session_start_info", session_start_info=start),
        _plugin_summary("_hparams_/session_end_info", session_end_info=end),
    )


def write_hparams_domains(
    root: str | os.PathLike,
    domains: Mapping[str, Sequence[Any]],
    metric_tags: Sequence[str] = HPARAMS_METRICS,
) -> bool:
    """Writes the HParams dashboard's experiment once at a sweep's root folder.

    Args:
      root: the sweep's folder (the point folders are below it).
      domains: hyper-parameter name -> its discrete values (e.g. `hparam_domains(points)`);
        names and value types must be those the points' `write_point_hparams` get.
      metric_tags: the scalar tags shown as metric columns.
    Returns:
      True if written; False (after the one warning) when tensorboardX is not installed.
    """
    if not _importable():
        _warn_missing()
        return False
    from tensorboardX.proto.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        MetricInfo,
        MetricName,
    )

    infos = []
    for name, values in domains.items():
        vals = [x for x in (_hparam_value(v) for v in values) if x is not None]
        kinds = {type(x) for x in vals}
        kind = {bool: "DATA_TYPE_BOOL", float: "DATA_TYPE_FLOAT64", str: "DATA_TYPE_STRING"}
        dtype = kind[kinds.pop()] if len(kinds) == 1 else "DATA_TYPE_STRING"
        if dtype == "DATA_TYPE_STRING":
            vals = [str(x) for x in vals]
        info = HParamInfo(name=name, type=DataType.Value(dtype))
        info.domain_discrete.extend(vals)
        infos.append(info)
    metrics = [MetricInfo(name=MetricName(tag=t)) for t in metric_tags]
    experiment = Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    w = TensorBoardWriter(root)
    try:
        summary = _plugin_summary("_hparams_/experiment", experiment=experiment)
        w._file().write(_summary_record(summary, 0))
    finally:
        w.close()
    return True


def _importable() -> bool:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def _finite(value: Any) -> float | None:
    x = _number(value)
    return x if x is not None and math.isfinite(x) else None


def point_metrics(record: Mapping[str, Any], history: Mapping[str, Any] | None = None) -> dict:
    """The HParams metrics of one run or sweep point (names without the `hparams/` prefix).

    Args:
      record: the point's final record: `SweepResult.records()[i]` (or a sweep table row), or
        `TrainResult.metrics`; read: "val_loss", "val_accuracy", "steps", "diverged",
        "early_stopping" ("step", "stopped", "best_val_loss"), "pruned_rung", "gap",
        "lr_over_limit" (each where present).
      history: its history; gives best (lowest loss, highest accuracy over the checks) and
        final (last check) validation numbers.
    Returns:
      name -> float: best_val_loss, best_val_accuracy, final_val_loss, final_val_accuracy
      (without a history, final = the record's numbers, those of the returned parameters,
      and best_val_loss the early-stopping one), steps, stop_step (-1: not stopped),
      pruned_rung (-1: not pruned; only for pruned sweeps), diverged (0 / 1), gap and
      lr_over_limit (linear models with the optimum). Non-finite values are left out.
    """
    es = record.get("early_stopping") or {}
    out: dict[str, float | None] = {}
    checks = history is not None and len(history.get("check_step", ())) > 0
    if checks:
        loss = np.asarray(history["val_loss"], np.float64)
        acc = np.asarray(history["val_accuracy"], np.float64)
        ok_loss, ok_acc = loss[np.isfinite(loss)], acc[np.isfinite(acc)]
        out["best_val_loss"] = float(ok_loss.min()) if ok_loss.size else None
        out["best_val_accuracy"] = float(ok_acc.max()) if ok_acc.size else None
        out["final_val_loss"] = float(loss[-1])
        out["final_val_accuracy"] = float(acc[-1])
    else:
        out["best_val_loss"] = _finite(es.get("best_val_loss", record.get("val_loss")))
        out["final_val_loss"] = _finite(record.get("val_loss"))
        out["final_val_accuracy"] = _finite(record.get("val_accuracy"))
    out["steps"] = _finite(record.get("steps"))
    if es:
        stopped = es.get("stopped", es.get("step") is not None)
        step = es.get("step")
        out["stop_step"] = float(step) if stopped and step is not None and step >= 0 else -1.0
    if "pruned_rung" in record:
        rung = _finite(record["pruned_rung"])  # "" in table rows: not pruned
        out["pruned_rung"] = rung if rung is not None and rung >= 0 else -1.0
    if "diverged" in record:
        out["diverged"] = float(bool(record["diverged"]))
    for k in ("gap", "lr_over_limit"):
        if k in record:
            out[k] = _finite(record[k])
    return {k: v for k, v in out.items() if v is not None and math.isfinite(v)}


def write_point_hparams(
    writer: Writer, hparams: Mapping[str, Any], metrics: Mapping[str, Any], step: int = 0
) -> dict[str, float]:
    """Writes one point's hyper-parameters and metrics for the HParams dashboard, then flushes.

    Args:
      writer: the point's writer (on its `sweep_point_dir`).
      hparams: its hyper-parameters, seed included (e.g. `Grid.point(i)`); None skipped.
      metrics: name -> value (e.g. `point_metrics(record, history)`); each is written as the
        scalar tag `hparams/<name>` (names with a "/" as they are); None, text and
        non-finite values are skipped.
      step: the step of those scalars (e.g. the point's last step; the table ignores it).
    Returns:
      The tags and values written.
    """
    return write_points_hparams([writer], [hparams], [metrics], [step])[0]


def write_points_hparams(
    writers: Sequence[Writer],
    hparams: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    steps: Sequence[int],
) -> list[dict[str, float]]:
    """`write_point_hparams` of many points, each to its writer, encoded together.

    Returns:
      Each point's tags and values written.
    """
    values = []
    for m in metrics:
        values.append(
            {
                k if "/" in k else f"hparams/{k}": x
                for k, v in m.items()
                if (x := _finite(v)) is not None
            }
        )
    hparams = [{k: v for k, v in h.items() if v is not None} for h in hparams]
    if _all_tensorboard(writers):
        _write_summaries(writers, [[(s, 0) for s in _session_summaries(h)] for h in hparams])
        _write_scalars(writers, steps, values)
    else:
        for w, h, v, step in zip(writers, hparams, values, steps):
            w.hparams(h, v, step)
    for w in writers:
        w.flush()
    return values
