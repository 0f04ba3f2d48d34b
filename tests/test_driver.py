"""Tests of the one host driver (`jaxlr.engine.driver`) as `fit` and `run_sweep` use it.

Observers see every chunk's new history rows (their concatenation is the final history,
also after a resume), the final records, and progress displays; TensorBoard output of a run
(`jaxlr.report.observers.TensorBoardObserver`) equals its history, resumed or not.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxlr.data import fake as jfake
from jaxlr.data.config import DataConfig
from jaxlr.data.splits import load_splits
from jaxlr.engine import driver, events, progress
from jaxlr.engine import grid as jgrid
from jaxlr.engine import sweep as jsweep
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.train import fit
from jaxlr.report.observers import TensorBoardObserver

CONFIG = TrainConfig(
    model="logistic",
    batch_size=16,
    num_epochs=6,
    eval_every=3,
    early_stopping=True,
    patience=3,
    epochs_per_call=2,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = jfake.write_fake_dataset(tmp_path_factory.mktemp("fake"), 600, 200, seed=1)
    cfg = DataConfig(dataset="fake", data_dir=str(folder), digits=(2, 3), num_train=None)
    return load_splits(cfg).data


class Recorder(events.Observer):
    def __init__(self):
        self.start, self.chunks, self.end, self.closed = None, [], None, False

    def on_start(self, start):
        self.start = start

    def on_chunk(self, chunk):
        self.chunks.append(chunk)

    def on_end(self, end):
        self.end = end

    def close(self):
        self.closed = True

    def rows(self, i: int) -> dict:
        """Point i's history as the observer saw it: a resumed start, then every chunk's rows."""
        parts = [self.start.histories[i]] if self.start.histories[i] else []
        parts += [c.new[i] for c in self.chunks if i in c.new]
        return driver.concat_histories(parts)


def _quiet(msg):
    pass


def _equal_histories(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_observers_of_a_run_see_every_row_once_and_the_final_record(data):
    rec = Recorder()
    r = fit(CONFIG, make_hparams(0.1, 0.001, seed=2), data, log_fn=_quiet, observers=[rec])
    assert rec.start.kind == "run" and rec.start.epoch == 0 and rec.start.resumed == ""
    assert rec.start.points == [{"learning_rate": 0.1, "l2": 0.001, "momentum": 0.0, "seed": 2}]
    assert [c.epoch for c in rec.chunks] == list(range(2, 2 * len(rec.chunks) + 1, 2))
    _equal_histories(rec.rows(0), r.history)
    assert rec.end.records[0]["val_loss"] == r.metrics["val_loss"]
    _equal_histories(rec.end.histories[0], r.history)
    assert rec.closed


def test_a_resumed_run_gives_observers_the_earlier_rows_then_the_rest(data, tmp_path):
    hp = make_hparams(0.1, 0.001, seed=2)
    cfg = dataclasses.replace(CONFIG, early_stopping=False)
    full = fit(cfg, hp, data, log_fn=_quiet)
    path = tmp_path / "run.npz"
    fit(cfg, hp, data, checkpoint_path=path, stop_after_epochs=2, log_fn=_quiet)
    rec, lines = Recorder(), []
    resumed = fit(cfg, hp, data, checkpoint_path=path, log_fn=lines.append, observers=[rec])
    assert rec.start.epoch == 2 and len(rec.start.histories[0]["step"]) > 0
    assert lines[0].startswith(f"run: resumed from {path} at epoch 2")
    _equal_histories(rec.rows(0), full.history)
    _equal_histories(resumed.history, full.history)


def test_observers_of_a_sweep_see_each_point_and_its_record(data):
    grid = jgrid.make_grid(learning_rate=(0.01, 0.3), l2=(0.0, 0.01), seed=(0, 1))
    rec = Recorder()
    res = jsweep.run_sweep(CONFIG, grid, data, log_fn=_quiet, observers=[rec])
    assert rec.start.kind == "sweep" and rec.start.points == [grid.point(i) for i in range(8)]
    for i in range(grid.size):
        _equal_histories(rec.rows(i), res.histories[i])
    assert rec.end.records == res.records()
    # Points drop out of the chunks once they stop.
    assert rec.chunks[-1].active.sum() <= rec.chunks[0].active.sum()


def test_progress_lines_bar_and_refusal(data, capsys):
    lines = []
    fit(CONFIG, make_hparams(0.1), data, log_fn=lines.append, progress=False)
    assert lines and all(line.startswith("epoch ") for line in lines)
    assert "train_loss" in lines[0] and "steps/s" in lines[0]
    # Under pytest stderr is not a terminal: "auto" shows no bar.
    assert not progress.bar_wanted("auto")
    capsys.readouterr()
    # A bar on request (tqdm writes to stderr); beside a bar no line per chunk.
    lines.clear()
    fit(CONFIG, make_hparams(0.1), data, progress=True, log_fn=lines.append)
    err = capsys.readouterr().err
    assert "epoch" in err and "/6" in err, err
    assert not [line for line in lines if line.startswith("epoch ")]
    with pytest.raises(ValueError, match="progress must be True, False or 'auto'"):
        progress.bar_wanted("yes")


def test_the_bar_counts_epochs_and_shows_points_active():
    from tqdm import tqdm

    out = io.StringIO()
    bar = progress.ProgressBar()
    start = events.Start("sweep", [{}] * 4, None, 10, 5, 0, [None] * 4, "", "")
    # Give the bar a stream we can read (tqdm.auto falls back to the text bar here).
    bar._bar = tqdm(total=10, file=out, desc="sweep", unit="epoch")
    bar._kind, bar._size = start.kind, 4
    bar.on_chunk(events.Chunk(4, 10, {}, np.array([1, 1, 0, 0], bool), 0, 1.0, 1.0, 4, "", {}))
    bar.close()
    text = out.getvalue()
    assert "4/10" in text and "active=2/4" in text, text


def _tb_series(folder, tag):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    ev = acc.Scalars(tag)
    return [e.step for e in ev], np.float32([e.value for e in ev])


def test_tensorboard_of_a_resumed_run_equals_its_history(data, tmp_path):
    hp = make_hparams(0.1, 0.001, seed=2)
    cfg = dataclasses.replace(CONFIG, early_stopping=False)
    path = tmp_path / "run.npz"
    fit(cfg, hp, data, checkpoint_path=path, stop_after_epochs=2, log_fn=_quiet)
    logdir = tmp_path / "tb"
    r = fit(
        cfg, hp, data, checkpoint_path=path, log_fn=_quiet, observers=[TensorBoardObserver(logdir)]
    )
    for tag, (step_key, key) in {
        "train/loss": ("step", "train_loss"),
        "val/loss": ("check_step", "val_loss"),
        "val/accuracy": ("check_step", "val_accuracy"),
    }.items():
        steps, values = _tb_series(logdir, tag)
        assert steps == list(r.history[step_key]), tag
        np.testing.assert_array_equal(values, np.float32(r.history[key]), err_msg=tag)
    steps, lr = _tb_series(logdir, "lr")
    assert steps == list(r.history["step"]) and set(lr.tolist()) == {np.float32(0.1)}
    steps, final = _tb_series(logdir, "final/val_loss")
    assert steps == [int(r.history["step"][-1])] and final[0] == np.float32(r.metrics["val_loss"])


def test_summaries_are_short(data):
    r = fit(CONFIG, make_hparams(0.1), data, log_fn=_quiet)
    assert len(repr(r).splitlines()) <= 10 and "TrainResult(" in repr(r)
    grid = jgrid.make_grid(learning_rate=tuple(np.geomspace(0.01, 0.3, 12)), seed=(0, 1, 2))
    res = jsweep.run_sweep(dataclasses.replace(CONFIG, num_epochs=2), grid, data, log_fn=_quiet)
    text = repr(res)
    assert len(text.splitlines()) <= 30 and "36 points" in text and "26 more" in text


_SCRIPT = """
import numpy as np
from jaxlr.engine.config import TrainConfig, make_hparams
from jaxlr.engine.step import Data
from jaxlr.engine.train import fit
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 5)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32)
cfg = TrainConfig(model="logistic", batch_size=16, num_epochs=4, epochs_per_call=1)
fit(cfg, make_hparams(0.1), Data(x[:64], y[:64], x[64:], y[64:]))
"""


def _run_in_pty(argv, timeout=120) -> str:
    """Runs argv with stdin, stdout and stderr on a pseudo-terminal; returns what it printed."""
    import os
    import pty
    import select
    import subprocess
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out.extend(chunk)
            elif proc.poll() is not None:
                break
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return out.decode(errors="replace")


def test_a_terminal_shows_a_bar_and_a_pipe_shows_lines():
    import subprocess
    import sys

    tty = _run_in_pty([sys.executable, "-c", _SCRIPT])
    assert "epoch/s" in tty and "4/4" in tty, tty
    assert "epoch 1/4" not in tty, tty
    piped = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert "epoch 1/4  train_loss" in piped.stderr and "epoch/s" not in piped.stderr
