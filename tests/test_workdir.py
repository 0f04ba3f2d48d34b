"""Tests for jaxlr.host.workdir: one run at a time per workdir, outputs published all or nothing."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jaxlr.host import io, workdir, workdir_checks, workdir_lock

REPO = Path(__file__).resolve().parents[1]


def _snapshot(root: Path) -> dict:
    """Every entry under root (links not followed): link targets and file bytes."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
            else:
                out[rel] = ("dir",)
    return out


def _visible(root: Path) -> dict:
    """What a user sees at the workdir's top: each name that opens, with its bytes."""
    out = {}
    for name in sorted(os.listdir(root)):
        p = root / name
        if name.startswith(".") or name == workdir_checks.LATEST_NAME or not p.exists():
            continue
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    out[f.relative_to(root).as_posix()] = f.read_bytes()
        else:
            out[name] = p.read_bytes()
    return out


def _publish(wd: Path, files: dict) -> Path:
    with workdir.Staging(wd) as st:
        for name, text in files.items():
            io.atomic_write_text(st.path(name), text)
    return st.run_dir


OLD = {
    "config.json": '{"lr": 0.1}\n',
    "metrics.json": '{"acc": 0.9}\n',
    "report.md": "![loss](figures/loss.png)\n",
    "figures/loss.png": "old png",
    "history_a.jsonl": "{}\n",
}
NEW = {
    "config.json": '{"lr": 0.2}\n',
    "metrics.json": '{"acc": 0.95}\n',
    "report.md": "![loss](figures/loss.png)\n",
    "figures/loss.png": "new png",
    "history_b.jsonl": "{}\n",
}


def _child(code: str, *args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("child did not get ready in time")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Publishing.


def test_publish_shows_one_runs_files_at_the_top(tmp_path):
    wd = tmp_path / "runs" / "x"
    run_dir = _publish(wd, OLD)
    assert _visible(wd) == {k: v.encode() for k, v in OLD.items()}
    assert (
        run_dir == workdir_checks.latest_run(wd) and run_dir.parent == wd / workdir_checks.RUNS_NAME
    )
    assert (wd / "metrics.json").read_text() == OLD["metrics.json"]
    # The relative image link of report.md resolves from the workdir itself.
    assert (wd / "report.md").parent.joinpath("figures/loss.png").read_text() == "old png"
    assert workdir_checks.published_names(wd) == sorted(
        ["config.json", "metrics.json", "report.md", "figures", "history_a.jsonl"]
    )
    # No staging folder, no temporary names, a released (empty) lock file.
    assert not [n for n in os.listdir(wd) if n.startswith(".staging-") or n.endswith(".tmp")]
    assert (wd / ".lock").read_bytes() == b""
    # The links are relative: the workdir can be moved as a whole.
    moved = tmp_path / "moved"
    os.rename(wd, moved)
    assert _visible(moved) == {k: v.encode() for k, v in OLD.items()}


def test_publish_replaces_the_whole_set(tmp_path):
    wd = tmp_path / "wd"
    first = _publish(wd, OLD)
    _publish(wd, NEW)
    assert _visible(wd) == {k: v.encode() for k, v in NEW.items()}
    assert not os.path.lexists(wd / "history_a.jsonl")  # only in the old run: gone
    assert not first.exists()  # the older run folder is deleted
    assert os.listdir(wd / workdir_checks.RUNS_NAME) == [workdir_checks.latest_run(wd).name]


def test_failed_run_leaves_every_file_byte_for_byte(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _snapshot(wd)
    with pytest.raises(RuntimeError, match="diverged"):
        with workdir.Staging(wd) as st:
            io.atomic_write_text(st.path("config.json"), '{"lr": NaN}\n')
            io.atomic_write_text(st.path("history_a.jsonl"), "partial\n")
            io.atomic_write_text(st.path("extra.png"), "x")
            raise RuntimeError("diverged")
    assert _snapshot(wd) == before


def test_failed_run_may_add_a_checkpoint_in_place(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _snapshot(wd)
    with pytest.raises(KeyboardInterrupt):
        with workdir.Staging(wd) as st:
            io.atomic_write_text(st.path("metrics.json"), "{}\n")
            io.atomic_write_bytes(st.workdir / "checkpoints" / "step_10.npz", b"ckpt")
            raise KeyboardInterrupt
    after = _snapshot(wd)
    assert after.pop("checkpoints/step_10.npz") == ("file", b"ckpt")
    assert after.pop("checkpoints") == ("dir",)
    assert after == before
    # The next run publishes and leaves the checkpoint alone.
    _publish(wd, NEW)
    assert (wd / "checkpoints" / "step_10.npz").read_bytes() == b"ckpt"
    assert _visible(wd)["metrics.json"] == NEW["metrics.json"].encode()


def test_publish_early_and_discard(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _snapshot(wd)
    with workdir.Staging(wd) as st:
        io.atomic_write_text(st.path("metrics.json"), "{}\n")
        st.discard()
    assert _snapshot(wd) == before
    with workdir.Staging(wd) as st:
        io.atomic_write_text(st.path("metrics.json"), "{}\n")
        run_dir = st.publish()
        with pytest.raises(workdir_checks.WorkdirError, match="staging is published"):
            st.path("late.txt")
    assert workdir_checks.latest_run(wd) == run_dir
    assert _visible(wd) == {"metrics.json": b"{}\n"}


@pytest.mark.parametrize("name", ["latest", ".hidden", "../escape", "/abs/file", "", "a/../../b"])
def test_bad_output_names_are_refused(tmp_path, name):
    with workdir.Staging(tmp_path / "wd") as st:
        with pytest.raises(ValueError, match="output name"):
            st.path(name)
        io.atomic_write_text(st.path("ok.txt"), "ok")
    assert _visible(tmp_path / "wd") == {"ok.txt": b"ok"}


def test_name_written_around_path_that_is_reserved_is_refused_at_publish(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _snapshot(wd)
    with pytest.raises(ValueError, match="'latest' is reserved"):
        with workdir.Staging(wd) as st:
            io.atomic_write_text(st.dir / "latest", "oops")
    assert _snapshot(wd) == before


def test_real_folder_in_the_way_is_an_error_and_changes_nothing(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    (wd / "data").mkdir()
    (wd / "data" / "keep.bin").write_bytes(b"user data")
    before = _snapshot(wd)
    with pytest.raises(workdir_checks.WorkdirError, match=r"cannot publish 'data': a folder"):
        with workdir.Staging(wd) as st:
            io.atomic_write_text(st.path("data/x.txt"), "x")
    assert _snapshot(wd) == before


def test_real_latest_in_the_way_is_an_error(tmp_path):
    wd = tmp_path / "wd"
    (wd / "latest").mkdir(parents=True)
    with pytest.raises(workdir_checks.WorkdirError, match="latest exists and is not the link"):
        _publish(wd, NEW)
    assert sorted(os.listdir(wd)) == [".lock", "latest"]


def test_users_files_with_output_names_are_refused_before_the_run(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "report.md").write_text("my report")
    (wd / "metrics.json").write_text("my metrics")
    before = _snapshot(wd)
    ran = []
    with pytest.raises(workdir_checks.WorkdirError, match=r"metrics.json is a file that no run"):
        with workdir.Staging(wd, kind="x", outputs=("metrics.json", "report.md")):
            ran.append(1)
    assert not ran  # refused on entering: before the run's work
    assert {k: v for k, v in _snapshot(wd).items() if k != ".lock"} == before


@pytest.mark.parametrize("what", ["file", "folder", "foreign link"])
def test_a_staged_name_over_what_no_run_wrote_is_refused_at_publish(tmp_path, what):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "notes.txt").write_text("mine")
    if what == "file":
        (wd / "config.json").write_text("legacy config")
    elif what == "folder":
        (wd / "config.json").mkdir()
    else:
        os.symlink("notes.txt", wd / "config.json")
    before = _snapshot(wd)
    with pytest.raises(workdir_checks.WorkdirError, match=r"cannot publish 'config.json': a"):
        _publish(wd, NEW)
    after = _snapshot(wd)
    assert {k: v for k, v in after.items() if k != ".lock"} == before


def test_a_published_name_replaced_by_the_user_is_refused_on_entering(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    (wd / "report.md").unlink()
    (wd / "report.md").write_text("edited by hand")
    before = _snapshot(wd)
    with pytest.raises(workdir_checks.WorkdirError, match=r"report.md is a file that no run"):
        with workdir.Staging(wd):
            pass
    assert _snapshot(wd) == before


@pytest.mark.parametrize("latest", ["regular file", "dangling link", "link elsewhere"])
def test_a_broken_latest_is_refused_and_the_run_folder_kept(tmp_path, latest):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    (wd / "latest").unlink()
    if latest == "regular file":
        (wd / "latest").write_text("oops")
    elif latest == "dangling link":
        os.symlink(".runs/20990101-000000-000000-1", wd / "latest")
    else:
        (wd / "elsewhere").mkdir()
        os.symlink("elsewhere", wd / "latest")
    before = _snapshot(wd)
    ran = []
    with pytest.raises(workdir_checks.WorkdirError, match=r"nothing was changed") as err:
        with workdir.Staging(wd):
            ran.append(1)
    assert not ran and "\n" not in str(err.value)
    assert _snapshot(wd) == before  # the old run folder and every link are still there
    assert workdir.recover(wd) == [] and _snapshot(wd) == before  # recover alone deletes none


def test_a_run_of_another_kind_is_refused_the_same_kind_replaces(tmp_path):
    wd = tmp_path / "wd"
    with workdir.Staging(wd, kind="grid") as st:
        io.atomic_write_text(st.path("report.md"), "grid")
    info = (st.run_dir / workdir_checks.RUN_INFO_NAME).read_text()
    assert '"kind": "grid"' in info
    before = _snapshot(wd)
    with pytest.raises(
        workdir_checks.WorkdirError, match=r"holds the published outputs of grid; a run"
    ):
        with workdir.Staging(wd, kind="mistakes"):
            pass
    assert _snapshot(wd) == before
    with workdir.Staging(wd, kind="grid") as st:
        io.atomic_write_text(st.path("report.md"), "grid again")
    assert (wd / "report.md").read_text() == "grid again"


def test_kind_of_an_older_run_is_its_config_experiment(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, {"config.json": '{"experiment": "grid"}\n'})
    with pytest.raises(workdir_checks.WorkdirError, match=r"published outputs of grid"):
        with workdir.Staging(wd, kind="mistakes"):
            pass


def test_real_subfolders_for_resuming_stay_usable(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    (wd / "ckpt").mkdir()
    (wd / "ckpt" / "run.npz").write_bytes(b"state")
    (wd / "run.npz").write_bytes(b"top-level state")
    _publish(wd, NEW)
    assert (wd / "ckpt" / "run.npz").read_bytes() == b"state"
    assert (wd / "run.npz").read_bytes() == b"top-level state"
    assert _visible(wd)["config.json"] == NEW["config.json"].encode()


# ---------------------------------------------------------------------------------------------
# Interrupts and crashes during publishing.


def _patch_steps(monkeypatch, before_step) -> None:
    """Calls `before_step()` before every step of publishing that changes the disk."""
    for owner, name in (
        (io, "atomic_symlink"),
        (os, "rename"),
        (workdir, "_rmtree"),
    ):
        real = getattr(owner, name)

        def step(*args, real=real):
            before_step()
            return real(*args)

        monkeypatch.setattr(owner, name, step)


def _count_steps(monkeypatch, tmp_path) -> int:
    wd = tmp_path / "count"
    _publish(wd, OLD)
    calls = []
    _patch_steps(monkeypatch, lambda: calls.append(1))
    _publish(wd, NEW)
    monkeypatch.undo()
    return len(calls)


def test_interrupt_at_every_step_of_publishing_is_all_or_nothing(monkeypatch, tmp_path):
    steps = _count_steps(monkeypatch, tmp_path)
    assert steps >= 4  # rename, a new name's link, the switch, deleting the old run
    old_view = {k: v.encode() for k, v in OLD.items()}
    new_view = {k: v.encode() for k, v in NEW.items()}
    outcomes = set()
    for k in range(steps):
        wd = tmp_path / f"wd{k}"
        _publish(wd, OLD)
        before = _snapshot(wd)
        calls = []

        def interrupt(calls=calls, k=k):
            calls.append(1)
            if len(calls) == k + 1:
                raise KeyboardInterrupt

        _patch_steps(monkeypatch, interrupt)
        with pytest.raises(KeyboardInterrupt):
            _publish(wd, NEW)
        monkeypatch.undo()
        view = _visible(wd)
        assert view in (old_view, new_view), f"step {k}: a mixed set {sorted(view)}"
        if view == old_view:
            assert _snapshot(wd) == before, f"step {k}: old files changed"
            outcomes.add("old")
        else:
            outcomes.add("new")
        # The next run's recovery leaves the visible set alone and removes all leftovers.
        with workdir.Staging(wd) as st:
            st.discard()
        assert _visible(wd) == view
        assert sorted(os.listdir(wd / workdir_checks.RUNS_NAME)) == [
            workdir_checks.latest_run(wd).name
        ]
        assert all((wd / n).exists() for n in os.listdir(wd))  # no dangling links
    assert outcomes == {"old", "new"}  # the switch really is the one commit point


def test_sigint_during_publishing_takes_effect_after_it(monkeypatch, tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    real_symlink = io.atomic_symlink
    sent = []

    def symlink_and_interrupt(*a):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler would run here if it were not held back
        return real_symlink(*a)

    monkeypatch.setattr(io, "atomic_symlink", symlink_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _publish(wd, NEW)
    assert sent
    assert _visible(wd) == {k: v.encode() for k, v in NEW.items()}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_recovery_removes_what_a_crash_left(tmp_path, caplog):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    visible = _visible(wd)
    (wd / ".staging-999999" / "figures").mkdir(parents=True)
    (wd / ".staging-999999" / "metrics.json").write_text("half")
    (wd / workdir_checks.RUNS_NAME / "20990101-000000-000000-1").mkdir()
    os.symlink("latest/history_z.jsonl", wd / "history_z.jsonl")  # dangling output link
    os.symlink(".runs/x", wd / ".latest.0123456789ab.tmp")
    with caplog.at_level(logging.WARNING, logger="jaxlr.workdir"):
        with workdir.Staging(wd) as st:
            st.discard()
    assert sorted(os.listdir(wd)) == sorted(
        [".lock", ".runs", "latest", *workdir_checks.published_names(wd)]
    )
    assert os.listdir(wd / workdir_checks.RUNS_NAME) == [workdir_checks.latest_run(wd).name]
    assert _visible(wd) == visible
    text = caplog.text
    assert ".staging-999999" in text and "20990101" in text and "history_z.jsonl" in text


def test_sigint_while_writing_outputs_leaves_old_files(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _snapshot(wd)
    ready = tmp_path / "ready"
    proc = _child(
        """
        import sys, time
        from pathlib import Path
        from jaxlr.host import io, workdir
        with workdir.Staging(sys.argv[1]) as st:
            io.atomic_write_text(st.path("config.json"), "new config")
            Path(sys.argv[2]).touch()
            i = 0
            while True:  # a long run writing its history
                io.atomic_write_text(st.path("history_a.jsonl"), str(i))
                i += 1
        """,
        wd,
        ready,
    )
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert _snapshot(wd) == before
    assert workdir_lock.read_lock_info(wd) is None  # released cleanly


# ---------------------------------------------------------------------------------------------
# Locking.


def test_second_run_is_refused_at_once_naming_the_holder(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = _child(
        """
        import sys, time
        from pathlib import Path
        from jaxlr.host import io, workdir
        with workdir.Staging(sys.argv[1]) as st:
            io.atomic_write_text(st.path("metrics.json"), "first")
            Path(sys.argv[2]).touch()
            while not Path(sys.argv[3]).exists():
                time.sleep(0.02)
        """,
        wd,
        ready,
        go,
    )
    try:
        _wait_for(ready, first)
        second = _child(
            """
            import sys
            from jaxlr.host import io, workdir, workdir_checks
            try:
                with workdir.Staging(sys.argv[1]) as st:
                    io.atomic_write_text(st.path("metrics.json"), "second")
            except workdir_checks.WorkdirBusy as e:
                print(e)
                sys.exit(3)
            """,
            wd,
        )
        # The first run is still waiting for `go`: the second did not block on the lock.
        out, err = second.communicate(timeout=60)
        assert second.returncode == 3, err
        assert first.poll() is None
        line = out.strip()
        assert "\n" not in line
        assert line.startswith(f"workdir {wd} is in use by process {first.pid} (")
        assert "started " in line
        holder = workdir_lock.read_lock_info(wd)
        assert holder is not None and holder.pid == first.pid
    finally:
        go.touch()
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert _visible(wd) == {"metrics.json": b"first"}  # one run's set, not a mix


def test_lock_is_not_reentrant_and_always_released(tmp_path):
    wd = tmp_path / "wd"
    with workdir_lock.lock_workdir(wd) as me:
        assert me.pid == os.getpid()
        assert workdir_lock.read_lock_info(wd) == me
        with pytest.raises(workdir_checks.WorkdirBusy, match=f"in use by process {os.getpid()} "):
            with workdir_lock.lock_workdir(wd):
                pass
        # Another thread of this process is refused too.
        errors = []

        def other_thread():
            try:
                with workdir.Staging(wd):
                    pass
            except workdir_checks.WorkdirBusy as e:
                errors.append(str(e))

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and f"process {os.getpid()} " in errors[0]
    assert workdir_lock.read_lock_info(wd) is None
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with workdir.Staging(wd):
                raise exc()
        with workdir_lock.lock_workdir(wd):  # free again
            pass
    # Nothing was ever written into the workdir these locks created: it is gone again.
    assert not wd.exists()


def test_a_refused_run_leaves_no_folder_it_created(tmp_path):
    """A workdir (and parents) created by a run that fails before writing anything is
    removed again; one that existed, or that holds anything else, stays."""
    wd = tmp_path / "new" / "deeper" / "wd"
    with pytest.raises(ValueError, match="refused"):
        with workdir.Staging(wd):
            raise ValueError("refused after loading the data")
    assert not (tmp_path / "new").exists()
    # An existing, empty workdir stays (with the lock file, released).
    wd.mkdir(parents=True)
    with pytest.raises(ValueError):
        with workdir.Staging(wd):
            raise ValueError("refused")
    assert sorted(os.listdir(wd)) == [workdir_checks.LOCK_NAME]
    assert workdir_lock.read_lock_info(wd) is None
    # A created workdir that got a checkpoint in place keeps it, and so its folders.
    wd2 = tmp_path / "other" / "wd"
    with pytest.raises(KeyboardInterrupt):
        with workdir.Staging(wd2) as st:
            io.atomic_write_bytes(st.workdir / "ckpt.npz", b"ckpt")
            raise KeyboardInterrupt
    assert (wd2 / "ckpt.npz").read_bytes() == b"ckpt"
    # And a successful run publishes as before.
    wd3 = tmp_path / "third" / "wd"
    _publish(wd3, NEW)
    assert _visible(wd3)["metrics.json"] == NEW["metrics.json"].encode()


def test_staging_inside_lock_workdir_uses_that_lock(tmp_path):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    with workdir_lock.lock_workdir(wd) as me, workdir.Staging(wd) as st:
        assert st.lock == me
        io.atomic_write_text(st.path("metrics.json"), "new")
        st.publish()
        assert workdir_lock.read_lock_info(wd) == me  # still held until lock_workdir exits
    assert workdir_lock.read_lock_info(wd) is None
    assert _visible(wd) == {"metrics.json": b"new"}
    before = _snapshot(wd)
    with pytest.raises(RuntimeError):
        with workdir_lock.lock_workdir(wd), workdir.Staging(wd) as st:
            io.atomic_write_text(st.path("metrics.json"), "failed")
            raise RuntimeError
    assert _snapshot(wd) == before
    with workdir_lock.lock_workdir(wd):  # released
        pass


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    wd = tmp_path / "wd"
    _publish(wd, OLD)
    before = _visible(wd)
    ready = tmp_path / "ready"
    proc = _child(
        """
        import sys, time
        from pathlib import Path
        from jaxlr.host import io, workdir
        with workdir.Staging(sys.argv[1]) as st:
            io.atomic_write_text(st.path("metrics.json"), "never published")
            Path(sys.argv[2]).touch()
            time.sleep(600)
        """,
        wd,
        ready,
    )
    _wait_for(ready, proc)
    proc.kill()  # SIGKILL: no cleanup; the kernel drops the flock
    proc.communicate(timeout=60)
    stale = workdir_lock.read_lock_info(wd)
    assert stale is not None and stale.pid == proc.pid
    assert (wd / f".staging-{proc.pid}").is_dir()
    with caplog.at_level(logging.WARNING, logger="jaxlr.workdir"):
        with workdir.Staging(wd) as st:
            assert workdir_lock.read_lock_info(wd).pid == os.getpid()
            st.discard()
    assert f"took over the stale lock of dead process {proc.pid}" in caplog.text
    assert not (wd / f".staging-{proc.pid}").exists()
    assert _visible(wd) == before


def test_stale_lock_file_written_by_hand(tmp_path, caplog):
    wd = tmp_path / "wd"
    wd.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (wd / ".lock").write_text(
        f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", '
        '"started": "2026-01-01T00:00:00", "command": "python -m experiments.main"}\n'
    )
    with caplog.at_level(logging.WARNING, logger="jaxlr.workdir"):
        with workdir_lock.lock_workdir(wd):
            pass
    assert f"took over the stale lock of dead process {dead.pid}" in caplog.text
    assert "python -m experiments.main" in caplog.text


# ---------------------------------------------------------------------------------------------
# Unusable workdirs.


def test_workdir_that_is_a_file(tmp_path):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    with pytest.raises(workdir_checks.WorkdirError, match=f"^workdir {f} is a file, not a folder"):
        with workdir.Staging(f):
            pass
    with pytest.raises(workdir_checks.WorkdirError, match=f"cannot be created: {f} is a file"):
        with workdir.Staging(f / "x" / "y"):
            pass
    assert f.read_text() == "not a folder"
    assert issubclass(workdir_checks.WorkdirError, OSError)


def test_the_root_or_the_home_folder_is_refused_as_a_workdir(tmp_path, monkeypatch):
    """`--workdir=/` as root strewed links, latest, .runs and .lock over the file system's
    root; the home folder would get the same."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for folder, words in (("/", "the file system's root"), (tmp_path, "your home folder")):
        before = sorted(os.listdir(folder))
        with pytest.raises(workdir_checks.WorkdirError, match=f"is {words}: a run writes"):
            with workdir.Staging(folder):
                pass
        assert sorted(os.listdir(folder)) == before
    with workdir.Staging(tmp_path / "runs" / "a") as stage:  # a folder inside it is fine
        (stage.dir / "metrics.json").write_text("{}")


_AS_NOBODY = """
import os, sys
from jaxlr.host import workdir, workdir_checks
pid = os.fork()
if pid == 0:  # no exec: nothing has to be readable by nobody
    code = 1
    try:
        os.setgid(65534)
        os.setuid(65534)
        try:
            with workdir.Staging(sys.argv[1]):
                pass
            print("no error", flush=True)
            code = 2
        except workdir_checks.WorkdirError as e:
            print(e, flush=True)
            code = 3
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _error_as_nobody(wd: Path) -> str:
    """Enters Staging(wd) as user `nobody`; returns its error line.

    The fork happens in a fresh single-threaded Python that imports only `jaxlr.host.workdir`:
    forking the test process itself (JAX's threads) could deadlock the child.
    """
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    r = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(wd)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("sub", ["", "x"])
def test_unwritable_workdir(tmp_path, sub):
    base = Path(tempfile.mkdtemp(prefix="jaxlr-ro-"))  # not under tmp_path: nobody can enter
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        wd = ro / sub if sub else ro
        if os.geteuid() == 0:  # root ignores file modes: check as the unprivileged `nobody`
            message = _error_as_nobody(wd)
        else:
            with pytest.raises(workdir_checks.WorkdirError) as err:
                with workdir.Staging(wd):
                    pass
            message = str(err.value)
        expected = (
            f"workdir {wd} cannot be created: Permission denied"
            if sub
            else f"workdir {wd} is not writable: permission denied"
        )
        assert message.startswith(expected), message
        assert "\n" not in message
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_workdir_that_even_root_cannot_create():
    wd = Path("/sys/jaxlr-workdir-test")
    with pytest.raises(workdir_checks.WorkdirError, match=f"^workdir {wd} cannot be created: "):
        with workdir.Staging(wd):
            pass
