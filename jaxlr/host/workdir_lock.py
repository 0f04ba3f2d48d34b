"""The workdir's lock: one run at a time (host side only).

`fcntl.flock` on `WORKDIR/.lock`, which holds the running process's pid, host, start time and
command. The kernel releases it when the process dies, so a lock file that still names a
process but is not locked is stale: it is taken over with a one-line warning. A second run into
a busy workdir (another process, or the same one) is refused at once with `WorkdirBusy`.
flock is not reliable on every network file system. `jaxlr.host.workdir` describes the rest.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from jaxlr.host.workdir_checks import LOCK_NAME, WorkdirBusy, WorkdirError, ensure_workdir

log = logging.getLogger("jaxlr.workdir")


# Locks this process holds: (st_dev, st_ino) of the workdir -> (thread id, LockInfo). Lets a
# `Staging` inside `lock_workdir` of the same folder, in the same thread, use that lock.
_HELD: dict[tuple[int, int], tuple[int, LockInfo]] = {}


class LockInfo(NamedTuple):
    """Who holds (or held) a workdir's lock, as written into `WORKDIR/.lock`."""

    pid: int
    host: str
    started: str  # local time, ISO 8601 to the second
    command: str


def _describe(info: LockInfo | None) -> str:
    if info is None:
        return "an unknown process (its lock file is not readable yet)"
    where = "" if info.host == socket.gethostname() else f" on host {info.host}"
    return f"process {info.pid}{where} ({info.command}, started {info.started})"


def _read_info(fd: int) -> LockInfo | None:
    try:
        raw = os.pread(fd, 1 << 16, 0)
        d = json.loads(raw.decode("utf-8"))
        return LockInfo(int(d["pid"]), str(d["host"]), str(d["started"]), str(d["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_lock_info(path: str | os.PathLike) -> LockInfo | None:
    """Who holds the lock of workdir `path` (or last held it without releasing it cleanly).

    Returns:
      The LockInfo written into `WORKDIR/.lock`, or None if there is none (never locked,
      released cleanly, or unreadable).
    """
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_info(fd)
    finally:
        os.close(fd)


def _command_line() -> str:
    try:  # the command as typed, e.g. "python -m experiments.main --workdir=..."
        with open("/proc/self/cmdline", "rb") as f:
            parts = [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
        parts[0] = os.path.basename(parts[0])
    except (OSError, IndexError):
        parts = [os.path.basename(sys.executable), *sys.argv]
    text = " ".join(parts).replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _folder_key(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _held_here(path: Path) -> LockInfo | None:
    """This thread's lock of workdir `path`, if it holds one (via `lock_workdir`)."""
    try:
        held = _HELD.get(_folder_key(path))
    except OSError:
        return None
    return held[1] if held and held[0] == threading.get_ident() else None


@contextlib.contextmanager
def lock_workdir(path: str | os.PathLike) -> Iterator[LockInfo]:
    """Holds the workdir's lock for the `with` block; refuses at once if another run holds it.

    The lock is released when the block exits in any way (also on KeyboardInterrupt), and by
    the kernel if the process dies. A workdir this call created that holds nothing but the
    lock file when the block exits (a run refused or failed before it wrote anything) is
    removed again, with the parents this call created, still under the lock: a refusal
    leaves no empty folder behind. It is not re-entrant: a second `lock_workdir` of the same
    folder in the same process is refused like any other. A `Staging` of the same folder
    entered inside the block, in the same thread, uses this lock.

    Args:
      path: the workdir (created if needed).

    Yields:
      This process's LockInfo (as written into `WORKDIR/.lock`).

    Raises:
      WorkdirBusy: another run holds it (the message names its pid, command and start time).
      WorkdirError: see `ensure_workdir`; or the lock file cannot be opened.
    """
    created = _missing_folders(Path(path))
    path = ensure_workdir(path)
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        reason = "permission denied" if e.errno in (errno.EACCES, errno.EPERM) else e.strerror
        if e.errno == errno.EROFS:
            reason = "read-only file system"
        raise WorkdirError(f"workdir {path} is not writable: {reason} ({lock_path})") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_info(fd)
            for _ in range(20):  # the holder may be between flock and writing its info
                if holder is not None:
                    break
                time.sleep(0.01)
                holder = _read_info(fd)
            raise WorkdirBusy(f"workdir {path} is in use by {_describe(holder)}") from None
        locked = True
        previous = _read_info(fd)
        if previous is not None:
            state = (
                "dead"
                if previous.host == socket.gethostname() and not _pid_alive(previous.pid)
                else "no longer running"
            )
            log.warning(
                "took over the stale lock of %s process %d of workdir %s (%s, started %s)",
                state,
                previous.pid,
                path,
                previous.command,
                previous.started,
            )
        me = LockInfo(
            os.getpid(),
            socket.gethostname(),
            datetime.datetime.now().isoformat(timespec="seconds"),
            _command_line(),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me._asdict()) + "\n").encode(), 0)
        os.fsync(fd)
        key = _folder_key(path)
        _HELD[key] = (threading.get_ident(), me)
        try:
            yield me
        finally:
            _HELD.pop(key, None)
    finally:
        if locked:
            if created:
                _remove_if_unused(lock_path, created)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: not stale
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _missing_folders(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in [path, *path.parents]:
        if os.path.lexists(p):
            break
        missing.append(p)
    return missing


def _remove_if_unused(lock_path: Path, created: list[Path]) -> None:
    """Removes the lock file and the folders `created` (deepest first) if nothing else is in
    them. Called holding the lock: a run that opened the file meanwhile finds it busy, one
    that comes after finds no workdir and creates it anew."""
    try:
        if os.listdir(created[0]) != [LOCK_NAME]:
            return
        os.unlink(lock_path)
        for folder in created:
            os.rmdir(folder)
    except OSError:  # something appeared meanwhile: it stays, as does its folder
        return
