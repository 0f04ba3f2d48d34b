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
import logging
import os
import shutil
import sys
from pathlib import Path

from jaxlr.host import io
from jaxlr.host.workdir_checks import (
    _TMP_LINK,
    LATEST_NAME,
    RUN_INFO_NAME,
    RUNS_NAME,
    STAGING_PREFIX,
    WorkdirError,
    _managed_links,
    _not_ours,
    check_output_name,
    check_takeover,
    latest_run,
)
from jaxlr.host.workdir_lock import LockInfo, _held_here, lock_workdir

log = logging.getLogger("jaxlr.workdir")


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


def _run_id(runs: Path) -> str:
    now = datetime.datetime.now()
    base = now.strftime("%Y%m%d-%H%M%S-%f") + f"-{os.getpid()}"
    run_id, n = base, 1
    while (runs / run_id).exists():
        run_id, n = f"{base}-{n}", n + 1
    return run_id


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
            with io.signals_deferred():
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


__all__ = [
    "Staging",
    "recover",
]
