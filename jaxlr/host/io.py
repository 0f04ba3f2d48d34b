"""Atomic file writing (host side only): a reader never sees a half-written file.

Every writer here writes a temporary file in the destination's own folder (so the final
rename stays on one file system), flushes and fsyncs it, `os.replace`s it over the
destination, then fsyncs the folder so that the rename itself survives a crash. Missing
parent folders are created. If anything fails, or the process is interrupted before the
rename, the destination is untouched and the temporary file (named `.<name>.<pid>.<random>.tmp`,
so it never looks like the real file and names the process that writes it) is removed. A
process killed outright (SIGKILL, power loss) cannot remove it: `remove_stale_temporaries`
finds such leftovers of one destination by their names and removes those of dead processes
(or all older than a given time, for a writer that holds a lock on the destination).

An `OSError` of a write that names no file (ENOSPC, EIO, EDQUOT from `write` or `fsync`) is
raised again with the destination as its `filename`, so the error says which file failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

# mkstemp creates files with mode 0600; finished files get the usual 0666 & ~umask instead.
# Reading the umask means setting it, so it is done once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Opens a temporary file that replaces `path` only when the `with` block succeeds.

    Args:
      path: destination file; its parent folders are created.
      mode: "wb" (bytes) or "w" (text).
      encoding: text encoding for mode "w" (default utf-8).

    Yields:
      The open temporary file; `f.name` is its path (e.g. to re-read it for a check
      before committing). Raising inside the block discards it.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
        text_encoding = (encoding or "utf-8") if mode == "w" else None
        with open(tmp, mode, encoding=text_encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            # write() and fsync() name no file: say which one could not be written.
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err
        raise
    fsync_dir(path.parent)


# The signals that end a run (the launcher turns SIGTERM and SIGHUP into KeyboardInterrupt).
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds back SIGINT, SIGTERM and SIGHUP for the block; each that came is re-sent after.

    For short steps that an interrupt must not cut in two: publishing a run's outputs, and
    serialising a checkpoint (an interrupt inside zipfile's member writer turns, in numpy's
    `savez`, into a ValueError). Outside the main thread (where Python runs signal handlers)
    it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    # A handler installed outside Python (None) cannot be restored: that signal is not held.
    previous = {s: h for s in DEFERRED_SIGNALS if (h := signal.getsignal(s)) is not None}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for s in dict.fromkeys(received):
            os.kill(os.getpid(), s)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def remove_stale_temporaries(
    path: str | os.PathLike, *, older_than: float | None = None
) -> list[Path]:
    """Removes the temporary files the atomic writers left beside `path` and never renamed.

    A temporary of `path` is `.<name>.<pid>.<random>.tmp` in its folder (`.<name>.<random>.tmp`
    from before the pid was part of the name). One is stale when the process in its name is
    no longer alive, or, with `older_than` (a `time.time()` value), when it was last modified
    before then: a caller that holds a lock on `path` (the only writer) passes the time it
    took the lock. This process's own temporaries are never removed.

    Args:
      path: the destination whose temporaries to look for.
      older_than: also remove those modified before this time, whatever their process.
    Returns:
      The temporaries removed.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid == os.getpid():
            continue
        stale = pid is not None and not _alive(pid)
        if not stale and older_than is not None:
            with contextlib.suppress(OSError):
                stale = entry.stat(follow_symlinks=False).st_mtime < older_than
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flushes a folder's entries (renames, new names) to disk; best effort.

    Some file systems refuse fsync on a folder; the files themselves are then already safe.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_symlink(target: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Makes `path` a symbolic link to `target`, atomically replacing what `path` was.

    The link is made under a temporary name in the same folder and `os.replace`d over
    `path`, so a reader sees the old entry or the new link, never neither. `path` must not
    be a folder (a real one; a link to a folder is replaced like any link).

    Args:
      target: what the link points to, stored as given (relative targets resolve from the
        link's own folder, so a folder of relative links can be moved as a whole).
      path: the link to make; its parent folder must exist.

    Returns:
      `path` as a Path.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f"{_temp_prefix(path)}{os.urandom(6).hex()}.tmp"
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"atomic_symlink: no free temporary name beside {path}")
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically.

    Args:
      path: destination file; parent folders are created.
      data: the bytes to write.

    Returns:
      The destination as a Path.
    """
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Writes `text` to `path` atomically.

    Args:
      path: destination file; parent folders are created.
      text: the text to write (written as is: add the final newline yourself).
      encoding: text encoding.

    Returns:
      The destination as a Path.
    """
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    # Lets metrics and configs go to JSON without manual conversion of numpy/jax values.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(
    path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Writes `obj` as JSON (plus a final newline) to `path` atomically.

    numpy/jax scalars and arrays become numbers and nested lists, paths become strings,
    dataclass instances become dicts. NaN and infinities are written as `NaN`/`Infinity`
    (Python's `json` reads them back; strict JSON parsers do not).

    Args:
      path: destination file; parent folders are created.
      obj: the JSON-serializable value.
      indent: indentation passed to `json.dumps` (None for one line).
      sort_keys: sort dict keys.

    Returns:
      The destination as a Path.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_json_default)
    return atomic_write_text(path, text + "\n")
