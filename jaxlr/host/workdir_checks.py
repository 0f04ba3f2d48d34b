"""The names on a workdir's disk, its errors, and the checks made before a run writes anything.

Host side only; `jaxlr.host.workdir` describes the layout and the whole protocol. Here: the
folder checks (`ensure_workdir`, `check_own_folder`), reading the published set
(`latest_run`, `published_names`), the takeover rule (`check_takeover`: a run never replaces
what no run wrote, nor another experiment's outputs) and the check of a staged output's name
(`check_output_name`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

LOCK_NAME = ".lock"
RUNS_NAME = ".runs"
LATEST_NAME = "latest"
STAGING_PREFIX = ".staging-"
RUN_INFO_NAME = ".run.json"
_RESERVED = {LATEST_NAME}
_TMP_LINK = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # io.atomic_symlink's temporary names


class WorkdirError(OSError):
    """The workdir cannot be used; the one-line message names the path and the problem."""


class WorkdirBusy(WorkdirError):
    """Another run holds the workdir's lock; the message names the process."""


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
    _refuse_shared_folder(path)
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


def _refuse_shared_folder(path: Path) -> None:
    """A workdir gets the published set's links, `latest`, `.runs` and `.lock` at its top:
    the file system's root or the home folder would be strewn with them (a run into `/` as
    root wrote there without a word)."""
    try:
        resolved = path.resolve()
    except OSError:
        return
    shared = {Path(resolved.anchor): "the file system's root"}
    home = os.path.expanduser("~")
    if home and home != "~":
        shared[Path(home).resolve()] = "your home folder"
    if resolved in shared:
        raise WorkdirError(
            f"workdir {path} is {shared[resolved]}: a run writes its links, latest, .runs and "
            "a lock file at the top of its workdir; give a folder of its own (e.g. "
            "--workdir=runs/NAME)"
        )


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
