"""The workdir as one unit: one run at a time, and a run's outputs published all at once.

Host side only. A run (one `python -m experiments.main ...` into `WORKDIR`) does

    with workdir.Staging(WORKDIR, kind=NAME) as out:  # lock, check, recover, make staging
        write(out.path("config.json"))          # every output goes into out.dir
        ...                                     # checkpoints for resuming: WORKDIR itself
    # success: the staged set is now WORKDIR's outputs; an exception: nothing changed

On disk (`<id>` = `YYYYmmdd-HHMMSS-ffffff-<pid>`):

    WORKDIR/
      .lock                 held with flock(LOCK_EX) by the running process; holds its pid,
                            host, start time and command (empty when released cleanly)
      .staging-<pid>/       the running process's outputs, not yet visible
      .runs/<id>/           the published run: its files, and `.run.json` (id, kind, pid,
                            command, time, file list)
      latest -> .runs/<id>  THE commit point: switched atomically (`os.replace` of a link)
      config.json -> latest/config.json     one relative link per top-level name of the
      metrics.json -> latest/metrics.json   published run (files and subfolders), so
      report.md -> latest/report.md         `WORKDIR/metrics.json` opens directly and
      loss.png -> latest/loss.png           relative links in report.md work
      checkpoints/ ...      files a run writes in place (e.g. for resuming): not managed

Publishing: the staged folder is fsynced and renamed to `.runs/<id>/`; links are made for
the names the old run lacked (dangling, so invisible, until the switch); `latest` is
switched (the commit: before it, every link resolves into the old run, after it into the new
one); then links of names the new run lacks are removed and the older run folders deleted.
A reader therefore sees either the whole old set or the whole new set, never a mix. A signal
that ends a run (SIGINT, SIGTERM, SIGHUP) arriving during publishing takes effect right after
it (the run is then published). A run that raises (fails, diverges, is interrupted) before the
switch leaves the published files byte for byte as they were and removes its staging folder;
a crash (SIGKILL, power loss) leaves garbage that the next run removes under the lock before
it starts (staging folders, run folders other than the one `latest` names, dangling output
links, temporary links).

Taking over: a run never deletes or overwrites what no run wrote. Before anything is written
(so before training), under the lock, a `Staging` refuses with a one-line `WorkdirError`:
- a `latest` that is not a link (a real file or folder), or a link that does not name an
  existing run folder (nothing is deleted, not even the run folders in `.runs/`);
- a published run of a different kind (the experiment, `Staging(kind=...)`, recorded in the
  run's `.run.json`; older runs: the "experiment" of their config.json): one experiment's run
  never replaces another's set; a run of the same kind replaces it as usual;
- a top-level name of the published run, or one of the outputs the run announces
  (`Staging(outputs=...)`), that is not the link this module keeps there (a real file or
  folder, or a link elsewhere): it is the user's.
`publish` checks every staged name the same way and refuses (nothing changed) rather than
replace it. Other entries of the workdir are left alone: real subfolders such as the
checkpoints a run writes in place for resuming, and real files no run publishes.

Locking: `fcntl.flock` on `WORKDIR/.lock`. The kernel releases it when the process dies,
so a lock file that still names a process but is not locked is stale: it is taken over with
a one-line warning. A second run into a busy workdir (another process, or the same one) is
refused at once with `WorkdirBusy`. flock is not reliable on every network file system.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from jaxlr.host import io

log = logging.getLogger("jaxlr.workdir")

LOCK_NAME = ".lock"
RUNS_NAME = ".runs"
LATEST_NAME = "latest"
STAGING_PREFIX = ".staging-"
RUN_INFO_NAME = ".run.json"
_RESERVED = {LATEST_NAME}
_TMP_LINK = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # io.atomic_symlink's temporary names


# Locks this process holds: (st_dev, st_ino) of the workdir -> (thread id, LockInfo). Lets a
# `Staging` inside `lock_workdir` of the same folder, in the same thread, use that lock.
_HELD: dict[tuple[int, int], tuple[int, LockInfo]] = {}


class WorkdirError(OSError):
    """The workdir cannot be used; the one-line message names the path and the problem."""


class WorkdirBusy(WorkdirError):
    """Another run holds the workdir's lock; the message names the process."""


class LockInfo(NamedTuple):
    """Who holds (or held) a workdir's lock, as written into `WORKDIR/.lock`."""

    pid: int
    host: str
    started: str  # local time, ISO 8601 to the second
    command: str


# ---------------------------------------------------------------------------------------------
# Checks of the folder itself.


def _first_file_component(path: Path) -> Path | None:
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


def check_own_folder(workdir: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Refuses a folder a run writes in place (a checkpoint folder) inside what runs manage.

    `latest` (the published run, through its link), `.runs/` and the staging folders are
    replaced and removed by runs: a checkpoint written there would change the published
    outputs while the run trains, and be deleted when it publishes.

    Returns:
      `folder` as a Path.
    Raises:
      WorkdirError: one line naming the folder and the managed place it lies in.
    """
    folder, workdir = Path(folder), Path(workdir)
    real = Path(os.path.realpath(folder))
    top = Path(os.path.realpath(workdir))
    managed = [top / RUNS_NAME]
    latest = workdir / LATEST_NAME
    if latest.is_symlink() or latest.exists():
        managed.append(Path(os.path.realpath(latest)))
        managed.append(top / LATEST_NAME)
    for place in managed:
        if real == place or place in real.parents:
            raise WorkdirError(
                f"folder {folder} lies inside {place}, which runs of workdir {workdir} publish "
                "and remove: give a folder of its own (e.g. ckpt, relative to the workdir)"
            )
    rel = real.relative_to(top).parts if top in real.parents else ()
    if rel and rel[0].startswith(STAGING_PREFIX):
        raise WorkdirError(
            f"folder {folder} lies inside the staging folder {top / rel[0]} of workdir "
            f"{workdir}: give a folder of its own (e.g. ckpt, relative to the workdir)"
        )
    return folder


def ensure_workdir(path: str | os.PathLike) -> Path:
    """Creates the workdir (and its parents) if needed and checks that it is a writable folder.

    Args:
      path: the workdir.

    Returns:
      `path` as a Path.

    Raises:
      WorkdirError: it is a file, a parent is a file, it cannot be created, or it is not
        writable (the message names the path and the reason).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {path} is a file, not a folder; choose another --workdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = _first_file_component(path)
        raise WorkdirError(
            f"workdir {path} cannot be created: {blocker or 'a parent'} is a file, not a folder"
        ) from None
    except OSError as e:
        raise WorkdirError(
            f"workdir {path} cannot be created: {e.strerror or e} ({e.filename or path})"
        ) from None
    return path


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
    the kernel if the process dies. It is not re-entrant: a second `lock_workdir` of the same
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
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: not stale
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The published set.


def _link_target(p: Path) -> str | None:
    try:
        return os.readlink(p)
    except OSError:
        return None


def latest_run(path: str | os.PathLike) -> Path | None:
    """The folder of the published run of workdir `path` (`WORKDIR/.runs/<id>`), or None."""
    target = _link_target(Path(path) / LATEST_NAME)
    if target is None or len(PurePosixPath(target).parts) != 2:
        return None
    if PurePosixPath(target).parts[0] != RUNS_NAME:  # a link this module did not make
        return None
    run = Path(path) / target
    return run if run.is_dir() else None


def published_names(path: str | os.PathLike) -> list[str]:
    """The top-level names of the published run (the links at the workdir's top), sorted."""
    run = latest_run(path)
    if run is None:
        return []
    return sorted(n for n in os.listdir(run) if not n.startswith("."))


def _managed_links(workdir: Path) -> dict[str, str]:
    out = {}
    for entry in os.scandir(workdir):
        if entry.is_symlink():
            target = _link_target(Path(entry.path))
            if target == f"{LATEST_NAME}/{entry.name}":
                out[entry.name] = target
    return out


def _rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
    if p.exists() or p.is_symlink():  # a leftover that rmtree could not remove
        with contextlib.suppress(OSError):
            p.unlink()


def recover(path: str | os.PathLike) -> list[str]:
    """Removes what a crashed run left behind. Call only while holding the lock.

    Removes staging folders, run folders that are not the published one, temporary links
    and dangling output links; never touches the published run or files it does not manage.

    Returns:
      One line per thing removed (also logged).
    """
    workdir = Path(path)
    notes = []
    for entry in sorted(os.scandir(workdir), key=lambda e: e.name):
        p = Path(entry.path)
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            _rmtree(p)
            notes.append(f"removed the staging folder {p} of an unfinished run")
        elif entry.is_symlink() and _TMP_LINK.match(entry.name):
            p.unlink()
            notes.append(f"removed the temporary link {p}")
    current = latest_run(workdir)
    if os.path.lexists(workdir / LATEST_NAME) and current is None:
        # Not a link to a run folder: which run folder is published is unknown, so none is
        # garbage (`Staging` refuses such a workdir before calling this).
        for note in notes:
            log.warning("workdir recovery: %s", note)
        return notes
    runs = workdir / RUNS_NAME
    if runs.is_dir():
        for entry in sorted(os.scandir(runs), key=lambda e: e.name):
            p = Path(entry.path)
            if current is None or entry.name != current.name:
                _rmtree(p)
                notes.append(f"removed the unpublished or superseded run folder {p}")
    for name in _managed_links(workdir):
        p = workdir / name
        if not p.exists():  # dangling: a name the published run does not have
            p.unlink()
            notes.append(f"removed the dangling link {p}")
    for note in notes:
        log.warning("workdir recovery: %s", note)
    return notes


def _run_kind(run: Path) -> str | None:
    """The kind of published run `run`: `.run.json` "kind", else config.json "experiment"."""
    for name, key in ((RUN_INFO_NAME, "kind"), ("config.json", "experiment")):
        try:
            value = json.loads((run / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value:
            return value
    return None


def _not_ours(workdir: Path, name: str) -> str | None:
    """What stands at top-level `name` if it is not this module's link (None: free or ours)."""
    p = workdir / name
    if not os.path.lexists(p):
        return None
    if p.is_symlink():
        target = _link_target(p)
        return None if target == f"{LATEST_NAME}/{name}" else f"a link to {target}"
    return "a folder" if p.is_dir() else "a file"


def check_takeover(
    path: str | os.PathLike, kind: str | None = None, outputs: tuple[str, ...] = ()
) -> None:
    """Refuses a workdir that a run of `kind` announcing `outputs` cannot take over.

    Call while holding the lock, before writing anything (see "Taking over" in the module
    docstring). Changes nothing.

    Raises:
      WorkdirError: one line naming the path, what is there and what to do.
    """
    workdir = Path(path)
    latest = workdir / LATEST_NAME
    names: list[str] = []
    if os.path.lexists(latest):
        if not latest.is_symlink():
            what = "folder" if latest.is_dir() else "file"
            raise WorkdirError(
                f"workdir {workdir}: {latest} exists and is not the link to the published run "
                f"that runs keep there (a real {what}); nothing was changed: move it away or "
                "choose another --workdir"
            )
        target = _link_target(latest) or ""
        run = latest_run(workdir)
        if run is None:
            raise WorkdirError(
                f"workdir {workdir}: its link {latest} points to {target}, which is not a run "
                f"folder; nothing was changed (the folders in {workdir / RUNS_NAME} are kept): "
                "restore the link or choose another --workdir"
            )
        published = _run_kind(run)
        if kind and published and published != kind:
            raise WorkdirError(
                f"workdir {workdir} holds the published outputs of {published}; a run of "
                f"{kind} would replace them: choose another --workdir"
            )
        names = published_names(workdir)
    for name in sorted(set(names) | set(outputs)):
        what = _not_ours(workdir, name)
        if what is not None:
            raise WorkdirError(
                f"workdir {workdir}: {workdir / name} is {what} that no run published there; "
                "a run would replace it: move it away or choose another --workdir"
            )


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            p = os.path.join(folder, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        io.fsync_dir(folder)


_DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the signals that end a run


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds back SIGINT, SIGTERM and SIGHUP for the block; each that came is re-sent after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    # A handler installed outside Python (None) cannot be restored: that signal is not held.
    previous = {s: h for s in _DEFERRED if (h := signal.getsignal(s)) is not None}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for s in dict.fromkeys(received):
            os.kill(os.getpid(), s)


def _run_id(runs: Path) -> str:
    now = datetime.datetime.now()
    base = now.strftime("%Y%m%d-%H%M%S-%f") + f"-{os.getpid()}"
    run_id, n = base, 1
    while (runs / run_id).exists():
        run_id, n = f"{base}-{n}", n + 1
    return run_id


def check_output_name(name: str | os.PathLike) -> PurePosixPath:
    """Checks a staged output's name (a relative path, subfolders allowed).

    Raises:
      ValueError: absolute, empty, with "..", or a reserved or hidden top-level name.
    """
    rel = PurePosixPath(os.fspath(name))
    if rel.is_absolute() or not rel.parts or rel.parts == (".",) or ".." in rel.parts:
        raise ValueError(
            f"output name must be a relative path inside the workdir without '..', got {name!r}"
        )
    top = rel.parts[0]
    if top in _RESERVED or top.startswith("."):
        raise ValueError(
            f"output name {name!r} is reserved: top-level names may not be {LATEST_NAME!r} "
            "or start with '.'"
        )
    return rel


class Staging:
    """One run's outputs: staged in `WORKDIR/.staging-<pid>/`, published as one set.

    Use as a context manager: entering takes the workdir's lock (`lock_workdir`; or uses the
    one this thread holds through an enclosing `with lock_workdir(workdir)`), refuses what it
    cannot take over (`check_takeover`), removes what a crashed run left (`recover`) and
    creates the staging folder `dir`; leaving without an exception publishes (unless
    `publish` or `discard` was called), leaving with one discards the staged files and
    re-raises; a lock it took is released in every case.

    Args:
      workdir: the workdir.
      kind: what kind of run this is (the experiment's name), recorded in `.run.json`; a
        workdir whose published run is of another kind is refused on entering.
      outputs: top-level names the run will publish, known in advance (checked on entering,
        before the run's work, that nothing but this module's links stands there).

    Attributes:
      workdir: the workdir (Path). Files for resuming (checkpoints) go here, in place.
      dir: the staging folder (Path): write every output under it (or use `path`).
      lock: this process's LockInfo.
      run_dir: after `publish`, the published run's folder (`WORKDIR/.runs/<id>`).
    """

    def __init__(
        self, workdir: str | os.PathLike, kind: str | None = None, outputs: tuple[str, ...] = ()
    ):
        self.workdir = Path(workdir)
        self.kind = kind
        self.outputs = tuple(outputs)
        self.dir: Path | None = None
        self.lock: LockInfo | None = None
        self.run_dir: Path | None = None
        self._state = "new"  # new -> open -> published | discarded
        self._lock_cm = None

    def __enter__(self) -> Staging:
        if self._state != "new":
            raise WorkdirError(f"workdir {self.workdir}: a Staging can be entered only once")
        held = _held_here(self.workdir)
        if held is not None:  # inside `with lock_workdir(workdir)` of this thread
            cm, self.lock = None, held
        else:
            cm = lock_workdir(self.workdir)
            self.lock = cm.__enter__()
        self._lock_cm = cm
        try:
            check_takeover(self.workdir, self.kind, self.outputs)
            recover(self.workdir)
            self.dir = self.workdir / f"{STAGING_PREFIX}{os.getpid()}"
            self.dir.mkdir()
            self._state = "open"
        except BaseException:
            if cm is not None:
                cm.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._state == "open":
                if exc_type is None:
                    try:
                        self.publish()
                    except BaseException:
                        self.discard()
                        raise
                else:
                    self.discard()
        finally:
            cm, self._lock_cm = self._lock_cm, None
            if cm is not None:
                cm.__exit__(None, None, None)

    def path(self, name: str | os.PathLike) -> Path:
        """The staged path of output `name` (e.g. "metrics.json", "figures/loss.png").

        Creates the parent folders of a name in a subfolder.

        Raises:
          ValueError: a bad name (see `check_output_name`).
          WorkdirError: the staging is not open (not entered, or already published/discarded).
        """
        rel = check_output_name(name)
        self._require_open()
        out = self.dir.joinpath(*rel.parts)
        if len(rel.parts) > 1:
            out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def _require_open(self) -> None:
        if self._state != "open":
            raise WorkdirError(
                f"workdir {self.workdir}: staging is {self._state}, not open (use it inside "
                "`with Staging(...)` before publishing)"
            )

    def discard(self) -> None:
        """Drops the staged outputs; the published files stay as they were."""
        if self._state == "open":
            self._state = "discarded"
            _rmtree(self.dir)

    def publish(self) -> Path:
        """Makes the staged set the workdir's outputs, all at once (see the module docstring).

        Returns:
          The published run's folder `WORKDIR/.runs/<id>`.

        Raises:
          WorkdirError: `latest` is not a link to a run folder, or a staged top-level name is
            reserved or has something other than this module's link in the workdir (a real
            file or folder, or a foreign link): nothing is changed, the staging stays open;
            or the staged set could not be moved into place (nothing visible is changed).
        """
        self._require_open()
        workdir, staged = self.workdir, self.dir
        names = sorted(n for n in os.listdir(staged) if not n.startswith("."))
        latest = workdir / LATEST_NAME
        if os.path.lexists(latest) and latest_run(workdir) is None:
            raise WorkdirError(
                f"workdir {workdir}: cannot publish: {latest} exists and is not the link to a "
                "run folder that this module keeps there; move it away"
            )
        for name in names:
            check_output_name(name)  # e.g. a file written directly as dir / "latest"
            what = _not_ours(workdir, name)
            if what is not None:
                raise WorkdirError(
                    f"workdir {workdir}: cannot publish {name!r}: {what} of that name exists "
                    "in the workdir and was not published by a run; move it away"
                )
        info = {
            "kind": self.kind,
            "pid": self.lock.pid,
            "host": self.lock.host,
            "command": self.lock.command,
            "started": self.lock.started,
            "published": datetime.datetime.now().isoformat(timespec="seconds"),
            "files": sorted(
                str(Path(f).relative_to(staged).as_posix())
                for f in (Path(d) / n for d, _, fs in os.walk(staged) for n in fs)
                if not f.name.startswith(".")
            ),
        }
        runs = workdir / RUNS_NAME
        runs.mkdir(exist_ok=True)
        run_id = _run_id(runs)
        info["id"] = run_id
        io.atomic_write_json(staged / RUN_INFO_NAME, info)
        _fsync_tree(staged)
        run_dir = runs / run_id
        created: list[Path] = []
        committed = False
        try:
            with _signals_deferred():
                os.rename(staged, run_dir)
                io.fsync_dir(runs)
                io.fsync_dir(workdir)
                for name in names:
                    p = workdir / name
                    if not os.path.lexists(p):  # dangling until the switch: invisible
                        io.atomic_symlink(f"{LATEST_NAME}/{name}", p)
                        created.append(p)
                io.atomic_symlink(f"{RUNS_NAME}/{run_id}", workdir / LATEST_NAME)  # commit
                committed = True
                self._state = "published"
                self.run_dir = run_dir
                self._tidy(names, run_id)
        except BaseException:
            if not committed:
                for p in created:
                    with contextlib.suppress(OSError):
                        p.unlink()
                _rmtree(run_dir)
                _rmtree(staged)
                self._state = "discarded"
            raise
        log.info("published %d outputs of run %s in %s", len(names), run_id, workdir)
        return run_dir

    def _tidy(self, names: list[str], run_id: str) -> None:
        # After the commit: failures here are logged; the next run's `recover` finishes.
        workdir = self.workdir
        try:
            keep = set(names)
            for name in _managed_links(workdir):
                if name not in keep:
                    (workdir / name).unlink()
            for entry in os.scandir(workdir / RUNS_NAME):
                if entry.name != run_id:
                    _rmtree(Path(entry.path))
            io.fsync_dir(workdir)
        except OSError as e:
            log.warning("workdir %s: tidying after publishing failed (%s)", workdir, e)
