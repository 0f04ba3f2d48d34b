"""Tests of `jaxlr.host.checkpoint.save_params` / `load_params`: parameters with a kind check.

(Round trips of whole training states and resuming live in tests/test_train.py.)
"""

import os

import numpy as np
import pytest

from jaxlr.host import checkpoint as ckpt

PARAMS = {"w": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.array([1.0, -1.0])}
HINT = "run `python -m experiments.main --experiment=grid --workdir=W` first"


def _one_line_naming(err, *parts):
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_round_trip_and_on_disk_format(tmp_path):
    path = ckpt.save_params(
        tmp_path / "p.npz", PARAMS, kind="grid_best", step=7, config={"lr": 0.5}, meta={"x": 1}
    )
    assert path == tmp_path / "p.npz"
    template = {k: np.zeros_like(v) for k, v in PARAMS.items()}
    got, meta = ckpt.load_params(path, template, kind="grid_best")
    for k in PARAMS:
        np.testing.assert_array_equal(got[k], PARAMS[k])
        assert got[k].dtype == PARAMS[k].dtype
    assert meta["kind"] == "grid_best" and meta["step"] == 7
    assert meta["config"] == {"lr": 0.5} and meta["x"] == 1
    # The format hw3_logreg_grid writes: arrays under "params/", the kind in the metadata.
    flat, _ = ckpt.load_flat(path)
    assert sorted(flat) == ["params/b", "params/w"]
    same, _ = ckpt.load_checkpoint(path, template, prefix="params")
    np.testing.assert_array_equal(same["w"], PARAMS["w"])
    # ... and a checkpoint written that way by hand is read by load_params.
    old = ckpt.save_checkpoint(
        tmp_path / "old.npz", {"params": PARAMS}, step=3, meta={"kind": "grid_best"}
    )
    assert ckpt.load_params(old, template, kind="grid_best")[1]["step"] == 3


def test_template_from_the_checkpoints_own_metadata(tmp_path):
    path = ckpt.save_params(tmp_path / "p.npz", PARAMS, kind="k", step=1, meta={"width": 2})
    seen = []

    def template(meta):
        seen.append(meta["width"])
        return {"w": np.zeros((3, meta["width"]), np.float32), "b": np.zeros(2)}

    got, _ = ckpt.load_params(path, template, kind="k")
    assert seen == [2]
    np.testing.assert_array_equal(got["w"], PARAMS["w"])


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "none.npz"
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(path, PARAMS, kind="grid_best", hint=HINT)
    _one_line_naming(err, "no checkpoint", str(path), "'grid_best'", HINT)


def test_corrupt_or_truncated_checkpoint(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 not a zip archive" * 10)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(path, PARAMS, kind="grid_best", hint=HINT)
    _one_line_naming(err, "corrupt", str(path), "expected kind 'grid_best'", HINT)
    good = ckpt.save_params(tmp_path / "good.npz", PARAMS, kind="grid_best", step=1)
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(path, PARAMS, kind="grid_best", hint=HINT)
    _one_line_naming(err, str(path), "expected kind 'grid_best'", HINT)


def test_another_kind_is_refused(tmp_path):
    path = ckpt.save_params(tmp_path / "p.npz", PARAMS, kind="train_run", step=1)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(path, PARAMS, kind="grid_best", hint=HINT)
    _one_line_naming(err, str(path), "of kind 'train_run'", "expected kind 'grid_best'", HINT)
    # A checkpoint without any kind (e.g. a training state) is refused as well.
    plain = ckpt.save_checkpoint(tmp_path / "plain.npz", {"params": PARAMS}, step=1)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(plain, PARAMS, kind="grid_best")
    _one_line_naming(err, "of kind None", "expected kind 'grid_best'")


def test_right_kind_wrong_shape_or_dtype(tmp_path):
    path = ckpt.save_params(tmp_path / "p.npz", PARAMS, kind="k", step=1)
    wide = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(2)}
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_params(path, wide, kind="k", hint=HINT)
    _one_line_naming(err, "shape", str(path), HINT)
    f64 = {"w": np.zeros((3, 2)), "b": np.zeros(2)}
    with pytest.raises(ckpt.CheckpointError, match="float32"):
        ckpt.load_params(path, f64, kind="k")
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_params(path, {"w": PARAMS["w"]}, kind="k")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind=""), "kind must be"),
        (dict(kind=None), "kind must be"),
        (dict(kind="a", meta={"kind": "b"}), "contradicts"),
    ],
)
def test_save_params_refuses_bad_kinds(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ckpt.save_params(tmp_path / "p.npz", PARAMS, step=1, **kwargs)
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("case", ["random bytes", "truncated", "pickled", "folder", "no meta"])
def test_corrupt_checkpoint_is_one_line_without_numpys_advice(tmp_path, case):
    path = tmp_path / "sweep.npz"
    if case == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        expected = "(not a complete .npz archive: 5000 bytes, no zip directory)"
    elif case == "truncated":
        blob = ckpt.save_checkpoint(path, {"w": np.zeros(1000)}, step=1).read_bytes()
        path.write_bytes(blob[: len(blob) - 200])
        expected = "(not a complete .npz archive"  # the zip directory at the end is gone
    elif case == "pickled":
        np.savez(path, w=np.array([{"a": 1}], dtype=object))
        expected = "(it holds pickled objects)"
    elif case == "folder":
        path.mkdir()
        expected = "is a folder, not a checkpoint file"
    else:
        np.savez(path, w=np.zeros(3))
        expected = "(no __meta__ entry)"
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_flat(path)
    _one_line_naming(err, f"checkpoint {path}", expected)
    assert "allow_pickle" not in str(err.value) and "Errno" not in str(err.value)
    if case != "folder":
        assert "is corrupt or not a jaxlr checkpoint (" in str(err.value)
        assert str(err.value).endswith("): remove it or give another path")


def test_checkpoint_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    path = tmp_path / "ck" / "sweep.npz"  # the folder is made for the lock
    with ckpt.checkpoint_lock(path):
        assert ckpt.lock_path(path).exists()
        with pytest.raises(ckpt.CheckpointError) as err:  # not re-entrant, even in-process
            with ckpt.checkpoint_lock(path):
                pass
        _one_line_naming(err, f"checkpoint {path} is in use by process {os.getpid()}")
        assert "give another checkpoint path" in str(err.value)
    with ckpt.checkpoint_lock(path):  # released
        pass


_WRITER = """
import sys, time
from jaxlr.host import io
with io.atomic_open(sys.argv[1], "wb") as f:
    f.write(b"x" * 3_000_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def test_a_write_killed_midway_leaves_a_temporary_that_the_lock_removes(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "sweep.npz"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(repo)),
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].stat().st_size == 3_000_000
    assert left[0].name.startswith(f".sweep.npz.{proc.pid}.")
    with ckpt.checkpoint_lock(path):
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert not path.exists()


def test_an_interrupt_inside_numpys_zip_writer_stays_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C inside zipfile's opening of a member left numpy's `savez` to raise ValueError
    ("Can't close the ZIP file ...") in its `finally`, which replaced the interrupt: a run
    interrupted during a checkpoint save ended with a traceback and exit 1 (seen in CI).
    The SIGINT comes while the member is opened; it must surface as KeyboardInterrupt."""
    import signal
    import zipfile

    opened = zipfile._ZipWriteFile.__init__

    def interrupted(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler as os.kill returns
        opened(self, *args, **kwargs)

    monkeypatch.setattr(zipfile._ZipWriteFile, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "c.npz", {"w": PARAMS["w"]}, step=1)
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor a temporary
