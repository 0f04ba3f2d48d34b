"""Tests for jaxlr.host.io: atomic writes leave either the old file or the complete new one."""

import json
import math
import os
import stat

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.host import io


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_create_parents_and_overwrite(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    assert io.atomic_write_bytes(target, b"first") == target
    assert target.read_bytes() == b"first"
    io.atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    io.atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []
    # Not mkstemp's 0600: the usual mode under the process umask.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    io.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_open(target, "w") as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"):
        with io.atomic_open(target, "a"):
            pass


def test_json_converts_numpy_jax_and_paths(tmp_path):
    obj = {
        "i": np.int32(3),
        "f": np.float32(0.5),
        "arr": np.arange(3),
        "jax": jnp.array([[1.0, 2.0]]),
        "path": tmp_path,
        "nan": float("nan"),
    }
    target = io.atomic_write_json(tmp_path / "sub" / "x.json", obj)
    text = target.read_text()
    assert text.endswith("\n")
    back = json.loads(text)
    assert back["i"] == 3 and back["f"] == 0.5 and back["arr"] == [0, 1, 2]
    assert back["jax"] == [[1.0, 2.0]] and back["path"] == str(tmp_path)
    assert math.isnan(back["nan"])
    with pytest.raises(TypeError, match="not JSON serializable"):
        io.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and _leftovers(tmp_path) == []


def test_atomic_symlink_replaces_files_and_links(tmp_path):
    (tmp_path / "a").write_text("A")
    (tmp_path / "b").write_text("B")
    link = tmp_path / "link"
    link.write_text("a real file")
    assert io.atomic_symlink("a", link) == link
    assert os.readlink(link) == "a" and link.read_text() == "A"  # relative target kept as is
    io.atomic_symlink("b", link)
    assert link.read_text() == "B"
    io.atomic_symlink("missing", link)  # dangling links are allowed
    assert link.is_symlink() and not link.exists()
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        io.atomic_symlink("a", tmp_path / "folder")
    assert (tmp_path / "folder").is_dir()
    assert _leftovers(tmp_path) == []


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_name_their_process_and_stale_ones_are_removed(tmp_path):
    import time

    target = tmp_path / "sweep.npz"
    with io.atomic_open(target, "wb") as f:
        assert os.path.basename(f.name).startswith(f".sweep.npz.{os.getpid()}.")
        f.write(b"x")
    dead = tmp_path / f".sweep.npz.{_dead_pid()}.abc123.tmp"
    alive = tmp_path / f".sweep.npz.{os.getppid()}.def456.tmp"
    old_format = tmp_path / ".sweep.npz.k2j4h5.tmp"
    other = tmp_path / f".other.npz.{_dead_pid()}.abc.tmp"
    mine = tmp_path / f".sweep.npz.{os.getpid()}.mine.tmp"
    for p in (dead, alive, old_format, other, mine):
        p.write_bytes(b"half a checkpoint")
    assert io.remove_stale_temporaries(target) == [dead]  # its writer is dead
    # A caller holding the destination's lock: every older temporary but this process's own.
    removed = io.remove_stale_temporaries(target, older_than=time.time() + 1)
    assert sorted(removed) == sorted([alive, old_format])
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, mine.name, "sweep.npz"])


def test_a_write_error_without_a_file_names_the_destination(tmp_path):
    import errno

    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as info:
        with io.atomic_open(target, "w"):
            raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert _leftovers(tmp_path) == [] and not target.exists()
