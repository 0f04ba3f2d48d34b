"""Tests of `jaxlr.report.tracking`: what it writes, read back by TensorBoard's own code.

Event files are read with TensorBoard's `EventAccumulator` (every event kept) and the hparams
plugin's protos; one test serves a sweep's folder with a real `tensorboard` process and asks
its HTTP API. The hand-encoded records of `jaxlr.report.event_file` are compared byte for byte
with what tensorboardX's own protos and `EventsWriter` write, and its numpy CRC with
tensorboardX's pure-Python one. Scalars are stored as float32 in event files, so a value read
back is compared with the float32 of what was written (exactly).

Dimension legend: T steps of a history, S sweep points.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from jaxlr.data import fake as jfake
from jaxlr.data.config import DataConfig
from jaxlr.data.splits import load_splits
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine import sweep_result as jsweep_result
from jaxlr.engine import train as jtrain
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.report import event_file, tracking
from jaxlr.report.observers import TensorBoardObserver

HISTORY_TAGS = {
    "train/loss": ("step", "train_loss"),
    "val/loss": ("check_step", "val_loss"),
    "val/accuracy": ("check_step", "val_accuracy"),
    "train/accuracy": ("check_step", "train_accuracy"),
}
# Small batches on a few hundred images: several epochs of several steps, a check every step
# or two, all in a couple of seconds.
CONFIG = TrainConfig(model="logistic", batch_size=16, num_epochs=4, eval_every=2)


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Fake 2-vs-3 data (the real MNIST files are not needed)."""
    folder = jfake.write_fake_dataset(tmp_path_factory.mktemp("fake"), 1000, 300, seed=0)
    cfg = DataConfig(dataset="fake", data_dir=str(folder), digits=(2, 3), num_train=None)
    return load_splits(cfg).data


@pytest.fixture(scope="module")
def run(data):
    return jtrain.fit(CONFIG, make_hparams(0.05, l2=0.001), data, log_fn=_quiet)


def _accumulator(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str):
    events = acc.Scalars(tag)
    return np.asarray([e.step for e in events]), np.asarray([e.value for e in events], np.float32)


def _check_history(acc: EventAccumulator, history: dict, rate_at_step=None) -> None:
    for tag, (step_key, key) in HISTORY_TAGS.items():
        steps, values = _series(acc, tag)
        np.testing.assert_array_equal(steps, history[step_key], err_msg=tag)
        np.testing.assert_array_equal(values, np.float32(history[key]), err_msg=tag)
    if rate_at_step is not None:
        steps, values = _series(acc, "lr")
        np.testing.assert_array_equal(steps, history["step"])
        np.testing.assert_array_equal(values, np.float32([rate_at_step(s) for s in steps]))


def _take(history: dict, keep_step) -> dict:
    """The rows of `history` whose step satisfies `keep_step` (a chunk of the run)."""
    out = {}
    for k, v in history.items():
        steps = history["check_step" if k.startswith(("check_", "val_", "train_acc")) else "step"]
        out[k] = np.asarray(v)[keep_step(np.asarray(steps))]
    return out


# ---------------------------------------------------------------------------------------------
# Runs.


def test_history_of_a_real_fit_reads_back_as_the_same_series(run, tmp_path):
    h = run.history
    assert len(h["step"]) > 10 and 0 < len(h["check_step"]) < len(h["step"])
    w = tracking.make_writer(tmp_path / "run")
    assert isinstance(w, tracking.TensorBoardWriter)
    # Steps written: every step that ran (each check is one of them).
    assert tracking.write_history(w, h, learning_rate=0.05) == len(h["step"])
    w.close()
    acc = _accumulator(tmp_path / "run")
    assert set(acc.Tags()["scalars"]) == set(HISTORY_TAGS) | {"lr"}
    _check_history(acc, h, rate_at_step=lambda s: 0.05)


def test_history_written_in_two_chunks_appends_and_is_readable_after_each(run, tmp_path):
    h = run.history
    m = int(h["step"][-1] + 1) // CONFIG.num_epochs  # steps per epoch
    cut = 2 * m  # the host loop's chunk boundary after epoch 2
    first, second = _take(h, lambda s: s < cut), _take(h, lambda s: s >= cut)
    assert len(first["check_step"]) and len(second["check_step"])
    # An annealed rate as a function of the global step, computed here by hand.
    alpha0, t_anneal = 0.1, 7.0

    def rate(step):
        return alpha0 / (1.0 + np.asarray(step, np.float64) / t_anneal)

    w = tracking.make_writer(tmp_path / "run")
    tracking.write_history(w, first, learning_rate=rate)
    # Readable while the writer is still open (a run can be watched): only the first chunk.
    _check_history(_accumulator(tmp_path / "run"), first, rate_at_step=rate)
    tracking.write_history(w, second, learning_rate=rate)
    w.close()
    _check_history(_accumulator(tmp_path / "run"), h, rate_at_step=rate)


def test_history_with_its_own_learning_rate_and_without_any(run, tmp_path):
    h = dict(run.history)
    h["learning_rate"] = 0.2 * 0.5 ** np.asarray(h["epoch"], np.float64)
    w = tracking.make_writer(tmp_path / "own")
    tracking.write_history(w, h, learning_rate=123.0)  # the history's own rates win
    w.close()
    by_step = dict(zip(h["step"].tolist(), h["learning_rate"].tolist()))
    _check_history(_accumulator(tmp_path / "own"), h, rate_at_step=by_step.__getitem__)

    w = tracking.make_writer(tmp_path / "none")
    tracking.write_history(w, run.history)
    w.close()
    assert "lr" not in _accumulator(tmp_path / "none").Tags()["scalars"]


def _text(acc: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


def test_config_text_and_final_scalars_read_back(run, tmp_path):
    w = tracking.make_writer(tmp_path / "run")
    config = {"train": CONFIG.to_dict(), "lr": 0.05, "digits": (2, 3), "note": "task 2"}
    markdown = tracking.write_config(w, config)
    last = int(run.history["step"][-1])
    metrics = {
        **run.metrics,
        "diverged": False,
        "nested": {"best": np.float64(0.25), "flag": True, "deeper": {"x": 3}},
        "array0": np.asarray(0.75),  # a 0-d array is a number
        "vector": np.arange(3.0),  # not a number: skipped
        "nothing": None,
        "text": "skipped",
        "nan": float("nan"),  # kept: it is the record
        "inf": -math.inf,
    }
    written = tracking.write_final(w, metrics, last)
    w.close()

    acc = _accumulator(tmp_path / "run")
    # Text tab: the tag is "config"; the Markdown holds the config as JSON.
    assert "config" in acc.Tags()["tensors"]
    assert _text(acc, "config") == [(0, markdown)]
    assert markdown.startswith("```json\n") and markdown.endswith("\n```")
    body = json.loads(markdown[len("```json\n") : -len("\n```")])
    assert body == {"train": CONFIG.to_dict(), "lr": 0.05, "digits": [2, 3], "note": "task 2"}
    plugin = acc.SummaryMetadata("config").plugin_data.plugin_name
    assert plugin == "text"

    expected = {f"final/{k}": float(v) for k, v in run.metrics.items() if k != "early_stopping"}
    expected.update(
        {
            "final/diverged": 0.0,
            "final/nested/best": 0.25,
            "final/nested/flag": 1.0,
            "final/nested/deeper/x": 3.0,
            "final/array0": 0.75,
            "final/nan": math.nan,
            "final/inf": -math.inf,
        }
    )
    assert written.keys() == expected.keys()
    assert set(acc.Tags()["scalars"]) == set(expected)
    for tag, value in expected.items():
        (event,) = acc.Scalars(tag)
        assert event.step == last
        np.testing.assert_array_equal(np.float32(event.value), np.float32(value), err_msg=tag)
    assert expected["final/val_accuracy"] == run.metrics["val_accuracy"]


# ---------------------------------------------------------------------------------------------
# Sweeps.

SWEEP_CONFIG = TrainConfig(
    model="logistic", batch_size=16, num_epochs=6, eval_every=2, early_stopping=True, patience=2
)
SWEEP_GRID = dict(learning_rate=(0.02, 0.3), l2=(0.0, 0.01), seed=(0, 1))


def _expected_metrics(result: jsweep_result.SweepResult, i: int) -> dict[str, float]:
    """Point i's HParams metrics, from the sweep result's own arrays."""
    h = result.histories[i]
    step = int(result.early_stopping["step"][i])
    return {
        "hparams/best_val_loss": float(np.min(h["val_loss"])),
        "hparams/best_val_accuracy": float(np.max(h["val_accuracy"])),
        "hparams/final_val_loss": float(h["val_loss"][-1]),
        "hparams/final_val_accuracy": float(h["val_accuracy"][-1]),
        "hparams/steps": float(len(h["step"])),
        "hparams/stop_step": float(step) if result.early_stopping["stopped"][i] else -1.0,
        "hparams/diverged": float(result.diverged[i]),
    }


@pytest.fixture(scope="module")
def sweep(data, tmp_path_factory):
    """The sweep written as runs write it: `run_sweep` with a `TensorBoardObserver`."""
    grid = jgrid.make_grid(**SWEEP_GRID)
    root = tmp_path_factory.mktemp("sweep")
    result = jsweep.run_sweep(
        SWEEP_CONFIG, grid, data, log_fn=_quiet, observers=[TensorBoardObserver(root)]
    )
    folders = [tracking.sweep_point_dir(root, grid.point(i)) for i in range(grid.size)]
    return result, root, folders


def _plugin_data(acc: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    content = acc.PluginTagToContent("hparams")[tag]
    return plugin_data_pb2.HParamsPluginData.FromString(content)


def _session_hparams(start) -> dict:
    out = {}
    for k, v in start.hparams.items():
        out[k] = getattr(v, v.WhichOneof("kind"))
    return out


def test_sweep_points_read_back_through_the_hparams_plugin_data(sweep):
    result, root, folders = sweep
    grid = result.grid
    s = grid.size
    assert s == 8 and len(set(folders)) == s
    assert result.early_stopping["stopped"].any()  # stop_step takes both kinds of values
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(f.name for f in folders)

    # The root: the dashboard's experiment, its columns and each one's values.
    exp = _plugin_data(_accumulator(root), "_hparams_/experiment").experiment
    infos = {i.name: i for i in exp.hparam_infos}
    assert set(infos) == {"learning_rate", "l2", "momentum", "seed"}
    for name, values in {**SWEEP_GRID, "momentum": (0.0,)}.items():
        assert infos[name].type == api_pb2.DATA_TYPE_FLOAT64, name
        assert list(infos[name].domain_discrete) == sorted(float(v) for v in values), name
    assert [m.name.tag for m in exp.metric_infos] == list(tracking.HPARAMS_METRICS)

    for i in range(s):
        point = grid.point(i)
        assert folders[i] == root / (
            f"lr={point['learning_rate']!r},l2={point['l2']!r},momentum=0.0,seed={point['seed']}"
        )
        acc = _accumulator(folders[i])
        start = _plugin_data(acc, "_hparams_/session_start_info").session_start_info
        # Every point's hyper-parameters, its seed included, in the domain's values.
        assert _session_hparams(start) == {k: float(v) for k, v in point.items()}
        for k, v in _session_hparams(start).items():
            assert v in infos[k].domain_discrete
        end = _plugin_data(acc, "_hparams_/session_end_info").session_end_info
        assert end.status == api_pb2.STATUS_SUCCESS
        # The metric columns: one scalar each, at the point's last step.
        expected = _expected_metrics(result, i)
        tags = {t for t in acc.Tags()["scalars"] if t.startswith("hparams/")}
        assert tags == set(expected)
        last = int(result.histories[i]["step"][-1])
        for tag, value in expected.items():
            (event,) = acc.Scalars(tag)
            assert event.step == last
            assert np.float32(event.value) == np.float32(value), (i, tag)
        _check_history(acc, result.histories[i], rate_at_step=lambda _, p=point: p["learning_rate"])


def test_point_hparams_of_float32_values_match_the_domains(tmp_path):
    """A point given as float32 scalars (a grid's own arrays) and the domains from
    `Grid.point` (shortest decimals) agree: TensorBoard filters the table by the domain."""
    grid = jgrid.make_grid(learning_rate=(0.1, 0.3), l2=(1e-3,), dtype=np.float32)
    points = [grid.point(i) for i in range(grid.size)]
    tracking.write_hparams_domains(tmp_path, tracking.hparam_domains(points))
    domain = {
        i.name: list(i.domain_discrete)
        for i in _plugin_data(
            _accumulator(tmp_path), "_hparams_/experiment"
        ).experiment.hparam_infos
    }
    assert domain["learning_rate"] == [0.1, 0.3] and domain["l2"] == [0.001]
    for i in range(grid.size):
        raw = {k: v[i] for k, v in grid.hparams._asdict().items()}  # numpy float32 / int32
        assert isinstance(raw["learning_rate"], np.float32)
        folder = tracking.sweep_point_dir(tmp_path, raw)
        assert folder == tracking.sweep_point_dir(tmp_path, points[i])
        w = tracking.make_writer(folder)
        tracking.write_point_hparams(w, raw, {"val_loss": np.float32(0.5), "x/y": 1})
        w.close()
        acc = _accumulator(folder)
        got = _session_hparams(_plugin_data(acc, "_hparams_/session_start_info").session_start_info)
        assert got == {k: float(v) for k, v in points[i].items()}
        assert all(v in domain[k] for k, v in got.items())
        assert set(acc.Tags()["scalars"]) == {"hparams/val_loss", "x/y"}


def test_writer_hparams_after_close_reopens(tmp_path):
    w = tracking.make_writer(tmp_path)
    w.close()
    tracking.write_point_hparams(w, {"lr": 0.1}, {"m": 2.0})
    w.close()
    acc = _accumulator(tmp_path)
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert acc.Scalars("hparams/m")[0].value == 2.0


def test_two_writers_on_one_folder_keep_both_files(tmp_path):
    """A resumed run opens a second writer on its folder, often within the same second."""
    for step in (0, 1):
        w = tracking.make_writer(tmp_path)
        w.scalars(step, {"x": 10.0 + step})
        w.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert [(e.step, e.value) for e in _accumulator(tmp_path).Scalars("x")] == [(0, 10), (1, 11)]


# ---------------------------------------------------------------------------------------------
# Event files: the same bytes as tensorboardX's.

WALL_TIME = 1_700_000_000.25  # wall times are fixed where files are compared byte for byte
# Lengths around the varint, block (W = 128) and 4-byte boundaries of the numpy CRC.
CRC_LENGTHS = (0, 1, 2, 3, 4, 5, 7, 8, 31, 127, 128, 129, 255, 256, 257, 1000, 5000)


def _reference_crc32c(data: bytes) -> int:
    from tensorboardX.crc32c import _crc32c  # pure Python, byte by byte

    return _crc32c(data)


def test_numpy_crc32c_equals_the_reference_for_many_lengths(monkeypatch):
    monkeypatch.setattr(event_file, "_native", None)  # the numpy path, C package or not
    rng = np.random.default_rng(0)
    strings = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in CRC_LENGTHS]
    strings += [b"\0" * 300, b"\xff" * 130, b"\0" * 3]
    expected = [_reference_crc32c(x) for x in strings]
    assert event_file.crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert [event_file.crc32c(x) for x in strings] == expected
    # Many at once, in any order (short strings between long ones), as the writer calls it.
    order = rng.permutation(len(strings))
    got = event_file.crc32c_many(
        b"".join(strings[i] for i in order), [len(strings[i]) for i in order]
    )
    assert got.dtype == np.uint32 and got.tolist() == [expected[i] for i in order]
    assert event_file.crc32c_many(b"", []).tolist() == []
    from tensorboardX.record_writer import masked_crc32c

    masked = event_file.masked_crc32c(np.asarray(expected, np.uint32)).tolist()
    assert masked == [masked_crc32c(x) for x in strings]


def _frame_with_tensorboardx(folder: Path, serialized: list[bytes]) -> bytes:
    """The bytes tensorboardX's own `RecordWriter` writes for these serialized events."""
    from tensorboardX.record_writer import RecordWriter

    path = folder / f"tensorboardx.{len(list(folder.iterdir()))}"
    writer = RecordWriter(str(path))
    for data in serialized:
        writer.write(data)
    writer.close()
    return path.read_bytes()


def _scalar_event_protos(steps, tags, values, present) -> list[bytes]:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    out = []
    for step, row, has in zip(steps, values, present):
        values_ = [
            Summary.Value(tag=t, simple_value=float(v)) for t, v, h in zip(tags, row, has) if h
        ]
        event = Event(wall_time=WALL_TIME, step=int(step), summary=Summary(value=values_))
        out.append(event.SerializeToString())
    return out


# Steps at every varint length change (step 0 is left out of the proto, -1 takes 10 bytes),
# a tag over 127 bytes (2-byte lengths), a non-ASCII tag, values that float32 rounds, overflows
# or keeps as they are (NaN, infinities, -0, a subnormal).
EDGE_STEPS = np.asarray([0, 1, 127, 128, 16383, 16384, 2**31, 2**40, 2**62, -1], np.int64)
EDGE_TAGS = ("train/loss", "x" * 130, "val/accuracy", "lr/é")


def _edge_values(rng) -> tuple[np.ndarray, np.ndarray]:
    values = rng.standard_normal((len(EDGE_STEPS), len(EDGE_TAGS)))
    special = [math.nan, math.inf, -math.inf, 1e300, -0.0, 1e-46, 3.4028235e38, 0.1, 1.0, 0.0]
    values[:, 0] = special
    present = rng.random(values.shape) < 0.7
    present[:, 0] = True
    present[-1] = False  # an event with an empty Summary
    return values, present


def test_scalar_events_are_the_bytes_of_tensorboardx_protos(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    values, present = _edge_values(rng)

    def reference(steps, tags, values, present):
        return _frame_with_tensorboardx(
            tmp_path, _scalar_event_protos(steps, tags, values, present)
        )

    got = event_file.scalar_events(WALL_TIME, EDGE_STEPS, EDGE_TAGS, values, present)
    assert got == reference(EDGE_STEPS, EDGE_TAGS, values, present)
    # float32 values give the bytes of their float64 (the cast is exact).
    with np.errstate(over="ignore"):
        v32 = np.float32(values)
    assert event_file.scalar_events(WALL_TIME, EDGE_STEPS, EDGE_TAGS, v32, present) == (
        reference(EDGE_STEPS, EDGE_TAGS, v32, present)
    )
    # All tags present (None), a single event, none.
    all_ = np.ones_like(present)
    assert event_file.scalar_events(WALL_TIME, EDGE_STEPS, EDGE_TAGS, values, None) == (
        reference(EDGE_STEPS, EDGE_TAGS, values, all_)
    )
    one = event_file.scalar_events(WALL_TIME, [7], ["a"], [[0.5]])
    assert one == reference([7], ["a"], [[0.5]], [[True]])
    assert event_file.scalar_events(WALL_TIME, [], ["a"], np.zeros((0, 1))) == b""
    # The C package's path (here the reference CRC in its place) frames the same bytes.
    monkeypatch.setattr(event_file, "_native", _reference_crc32c)
    assert event_file.scalar_events(WALL_TIME, EDGE_STEPS, EDGE_TAGS, values, present) == got


def test_framed_records_and_the_first_event_match_tensorboardx(tmp_path):
    from tensorboardX.proto.event_pb2 import Event

    rng = np.random.default_rng(2)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 5, 300, 17)]
    assert event_file.frame_records(records) == _frame_with_tensorboardx(tmp_path, records)
    first = Event(wall_time=WALL_TIME, file_version="brain.Event:2").SerializeToString()
    assert event_file.file_version_event(WALL_TIME) == _frame_with_tensorboardx(tmp_path, [first])


def test_tensorboard_loads_hand_encoded_events_with_their_tags_steps_and_values(tmp_path):
    rng = np.random.default_rng(3)
    values, present = _edge_values(rng)
    path = tmp_path / "events.out.tfevents.0.test"
    path.write_bytes(
        event_file.file_version_event(WALL_TIME)
        + event_file.scalar_events(WALL_TIME, EDGE_STEPS, EDGE_TAGS, values, present)
    )
    # TensorBoard's reader checks every record's two CRCs (a mismatch raises DataLossError);
    # the legacy loader gives the events as stored (the other turns scalars into tensors).
    events = list(event_file_loader.LegacyEventFileLoader(str(path)).Load())
    assert events[0].file_version == "brain.Event:2" and events[0].wall_time == WALL_TIME
    assert len(events) == 1 + len(EDGE_STEPS)
    for event, step, row, has in zip(events[1:], EDGE_STEPS, values, present):
        assert event.step == step and event.wall_time == WALL_TIME
        got = [(v.tag, np.float32(v.simple_value)) for v in event.summary.value]
        assert [t for t, _ in got] == [t for t, h in zip(EDGE_TAGS, has) if h]
        with np.errstate(over="ignore"):  # 1e300 is inf in float32, as in the file
            np.testing.assert_array_equal([x for _, x in got], np.float32(row[has]))


def _write_run_the_old_way(folder: Path, history, rate, config, metrics, last, hparams) -> None:
    """What `TensorBoardWriter` wrote through tensorboardX's `EventsWriter` and protos before it
    encoded scalar events itself: one `Event` per step holding that step's tags (kept here as
    the reference the new files must equal, byte for byte)."""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    def scalars(step, values):
        summary = Summary(
            value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in values.items()]
        )
        events.write_event(Event(wall_time=WALL_TIME, step=int(step), summary=summary))

    def summary(s, step):
        events.write_event(Event(wall_time=WALL_TIME, step=int(step), summary=s))

    folder.mkdir()
    events = EventsWriter(str(folder / "events"))
    rows: dict[int, dict[str, float]] = {}
    for key, step_key, tag in tracking._HISTORY_TAGS:
        for s, v in zip(np.asarray(history[step_key]), np.asarray(history[key])):
            rows.setdefault(int(s), {})[tag] = float(v)
    for s in history["step"]:
        rows.setdefault(int(s), {})["lr"] = float(rate)
    for s in sorted(rows):
        scalars(s, rows[s])
    body = json.dumps(tracking.jsonable(dict(config)), indent=2, default=str)
    summary(tracking._text_summary("config", f"```json\n{body}\n```"), 0)
    scalars(last, tracking._flat_numbers(metrics, "final/"))
    start, end = tracking._session_summaries(hparams)
    summary(start, 0)
    summary(end, 0)
    scalars(last, {f"hparams/{k}": v for k, v in tracking.point_metrics(metrics).items()})
    events.close()


def test_a_run_event_file_is_byte_identical_to_what_tensorboardx_wrote(run, tmp_path, monkeypatch):
    import tensorboardX.event_file_writer

    clock = SimpleNamespace(time=lambda: WALL_TIME)
    monkeypatch.setattr(tracking, "time", clock)
    monkeypatch.setattr(tensorboardX.event_file_writer, "time", clock)
    h = run.history
    last = int(h["step"][-1])
    config = {"lr": 0.05, "note": "task 2"}
    hparams = {"learning_rate": 0.05, "l2": 0.001, "seed": 0}
    _write_run_the_old_way(tmp_path / "old", h, 0.05, config, run.metrics, last, hparams)

    w = tracking.make_writer(tmp_path / "new")
    m = int(h["step"][-1] + 1) // CONFIG.num_epochs  # chunks of one epoch, as the driver writes
    for epoch in range(CONFIG.num_epochs):
        tracking.write_history(
            w, _take(h, lambda s, e=epoch: (s >= e * m) & (s < (e + 1) * m)), learning_rate=0.05
        )
    tracking.write_config(w, config)
    tracking.write_final(w, run.metrics, last)
    tracking.write_point_hparams(w, hparams, tracking.point_metrics(run.metrics), last)
    w.close()
    (old,), (new,) = (list((tmp_path / d).glob("events.out.tfevents.*")) for d in ("old", "new"))
    assert new.read_bytes() == old.read_bytes()
    assert len(new.read_bytes()) > 1000


def test_a_step_given_twice_keeps_its_last_value_as_before(tmp_path):
    history = {"step": np.asarray([0, 1, 1, 2]), "train_loss": np.asarray([4.0, 3.0, 2.5, 2.0])}
    w = tracking.make_writer(tmp_path)
    assert tracking.write_history(w, history) == 3
    w.close()
    steps, values = _series(_accumulator(tmp_path), "train/loss")
    assert steps.tolist() == [0, 1, 2] and values.tolist() == [4.0, 2.5, 2.0]


# ---------------------------------------------------------------------------------------------
# Without tensorboardX.


def test_missing_tensorboardx_gives_a_null_writer_and_one_warning(monkeypatch, caplog, tmp_path):
    # As if it were not installed: importing it or any of its modules fails.
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboardX"] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(tracking, "_WARNED", False)  # as in a fresh process
    caplog.set_level(logging.WARNING, logger="jaxlr.tracking")
    history = {"step": np.arange(3), "train_loss": np.ones(3)}

    writers = [tracking.make_writer(tmp_path / f"run{i}") for i in range(3)]
    assert all(isinstance(w, tracking.NullWriter) for w in writers)
    assert tracking.write_history(writers[0], history, learning_rate=0.1) == 3
    assert tracking.write_config(writers[0], {"a": 1}).startswith("```json")
    assert tracking.write_point_hparams(writers[1], {"lr": 0.1}, {"m": 1.0}) == {"hparams/m": 1.0}
    assert tracking.write_hparams_domains(tmp_path, {"lr": [0.1]}) is False
    for w in writers:
        w.close()
    warnings = [r for r in caplog.records if r.name == "jaxlr.tracking"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert tracking.INSTALL_HINT in warnings[0].getMessage()
    assert "pip install 'jaxlr[tensorboard]'" in warnings[0].getMessage()
    assert not any(tmp_path.rglob("*")), "nothing is written without tensorboardX"

    # Tracking switched off: a NullWriter without a word, tensorboardX or not.
    caplog.clear()
    monkeypatch.setattr(tracking, "_WARNED", False)
    assert isinstance(tracking.make_writer(tmp_path / "off", enabled=False), tracking.NullWriter)
    assert not caplog.records

    monkeypatch.undo()  # tensorboardX back: a real writer again
    assert isinstance(tracking.make_writer(tmp_path / "on"), tracking.TensorBoardWriter)


# ---------------------------------------------------------------------------------------------
# A real TensorBoard server over the sweep's folder.


def _tensorboard_executable() -> str | None:
    beside = Path(sys.executable).with_name("tensorboard")
    return str(beside) if beside.exists() else shutil.which("tensorboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


SERVER_WAIT_S = 60.0


def test_tensorboard_server_shows_the_sweep(sweep, tmp_path):
    exe = _tensorboard_executable()
    if exe is None:
        pytest.skip(
            "the tensorboard executable is not installed (pip install 'jaxlr[tensorboard]')"
        )
    result, root, folders = sweep
    grid = result.grid
    port = _free_port()
    log_path = tmp_path / "tensorboard.log"
    base = f"http://127.0.0.1:{port}"
    runs = {f.name: i for i, f in enumerate(folders)}
    domains = tracking.hparam_domains([grid.point(i) for i in range(grid.size)])
    # As the dashboard asks: every hyper-parameter filtered to its domain, every metric shown.
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [
            {"hparam": k, "filterDiscrete": [float(x) for x in v]} for k, v in domains.items()
        ]
        + [{"metric": {"tag": t, "group": ""}} for t in tracking.HPARAMS_METRICS],
        "startIndex": 0,
        "sliceSize": 100,
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [exe, "--logdir", str(root), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the data server goes with it
        )
    try:
        deadline = time.monotonic() + SERVER_WAIT_S
        listing = tags = experiment = groups = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                listing = _get(f"{base}/data/plugins_listing")
                tags = _get(f"{base}/data/plugin/scalars/tags")
                experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
                groups = _get(f"{base}/data/plugin/hparams/session_groups", request)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
                continue
            loaded = set(tags) >= set(runs) and len(groups.get("sessionGroups", [])) == len(runs)
            if loaded and listing["hparams"]["enabled"] and listing["scalars"]["enabled"]:
                break
            time.sleep(0.5)
        else:
            pytest.fail(
                f"tensorboard did not serve the sweep within {SERVER_WAIT_S:.0f} s; last answers: "
                f"runs {sorted(tags or {})}, groups {groups}\n{log_path.read_text()}"
            )

        assert listing["scalars"]["enabled"] and listing["hparams"]["enabled"]
        for run_name in runs:
            assert set(HISTORY_TAGS) | {"lr"} | set(_expected_metrics(result, 0)) <= set(
                tags[run_name]
            ), run_name

        infos = {i["name"]: i for i in experiment["hparamInfos"]}
        assert set(infos) == set(domains)
        for k, values in domains.items():
            assert infos[k]["domainDiscrete"] == [float(x) for x in values], k
        metric_tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metric_tags == list(tracking.HPARAMS_METRICS)

        seen = set()
        for g in groups["sessionGroups"]:
            (session,) = g["sessions"]
            i = runs[session["name"]]
            seen.add(i)
            assert session["status"] == "STATUS_SUCCESS"
            assert g["hparams"] == {k: float(v) for k, v in grid.point(i).items()}
            values = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
            expected = _expected_metrics(result, i)
            assert values.keys() == expected.keys()
            for tag, value in expected.items():
                assert np.float32(values[tag]) == np.float32(value), (i, tag)
        assert seen == set(range(grid.size))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


# ---------------------------------------------------------------------------------------------
# Runs of experiments: TensorBoard inside the published set.


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    return jfake.write_fake_dataset(tmp_path_factory.mktemp("fake_exp"), 3000, 600, seed=0)


def _overrides(name, folder, **more):
    import experiments.registry  # noqa: F401  (registers the experiments)
    from experiments.config import EXPERIMENTS

    return {
        **EXPERIMENTS[name].smoke,
        "dataset": "fake",
        "data_dir": str(folder),
        "num_train": None,
        **more,
    }


def test_an_experiment_publishes_tensorboard_equal_to_its_history(fake_folder, tmp_path):
    from experiments.common import run_experiment

    w = tmp_path / "wd"
    run_experiment("tdt4265_task2", w, _overrides("tdt4265_task2", fake_folder))
    history = [json.loads(line) for line in (w / "history.jsonl").read_text().splitlines()]
    acc = _accumulator(w / "tensorboard" / "run")
    steps, values = _series(acc, "train/loss")
    assert list(steps) == [r["step"] for r in history]
    np.testing.assert_array_equal(values, np.float32([r["train_loss"] for r in history]))
    checks = [r for r in history if "val_loss" in r]
    steps, values = _series(acc, "val/loss")
    assert list(steps) == [r["step"] for r in checks]
    np.testing.assert_array_equal(values, np.float32([r["val_loss"] for r in checks]))
    ((_, text),) = _text(acc, "config")
    assert '"learning_rate"' in text or '"lr"' in text, text
    # The event files are published with the rest (a link into latest/).
    assert (w / "tensorboard").is_symlink()


def test_no_tensorboard_and_a_failed_run_leave_no_event_files(fake_folder, tmp_path):
    from experiments.common import run_experiment
    from jaxlr.engine.results import TrainingDiverged

    w = tmp_path / "off"
    run_experiment("tdt4265_task2", w, _overrides("tdt4265_task2", fake_folder), tensorboard=False)
    assert (w / "metrics.json").exists() and not (w / "tensorboard").exists()
    bad = tmp_path / "bad"
    with pytest.raises(TrainingDiverged):
        run_experiment("tdt4265_task2", bad, _overrides("tdt4265_task2", fake_folder, lr=1e6))
    assert not list(bad.rglob("events.out.tfevents*"))


def test_a_sweep_experiment_has_one_hparams_row_per_point_with_the_optimum(fake_folder, tmp_path):
    from experiments.common import run_experiment

    w = tmp_path / "sweep"
    m = run_experiment("sweep", w, _overrides("sweep", fake_folder))
    root = w / "tensorboard"
    points = m["points"]
    assert len([p for p in root.iterdir() if p.is_dir()]) == len(points) == 4
    for p in points:
        folder = tracking.sweep_point_dir(
            root, {k: p[k] for k in ("learning_rate", "l2", "momentum", "seed")}
        )
        acc = _accumulator(folder)
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "val/loss", "hparams/best_val_loss", "hparams/lr_over_limit"} <= tags
        (ev,) = acc.Scalars("hparams/lr_over_limit")
        assert np.float32(ev.value) == np.float32(p["lr_over_limit"])
