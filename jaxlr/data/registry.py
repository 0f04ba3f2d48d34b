"""Registered MNIST-style data sets: registry, lookup, verified download, loading, cache.

Dimension legend: N examples, H image height, W image width.

Where the four files of a data set are looked for (the first folder holding all four wins):
  1. the `data_dir` argument (the `--data_dir` flag of experiments/main.py). When given, it
     is the only place searched: it must be an existing folder (else `DataError` naming it),
     holding the files directly or in a subfolder named after the data set (`mnist/`,
     `fashion_mnist/`, `fashion-mnist/`); if they are not there, that is an error too, never
     a fall-back to the places below and never a download.
Without `data_dir`:
  2. the `JAXLR_DATA_DIR` environment variable (the files directly or in such a subfolder);
  3. the user cache: `$JAXLR_CACHE_DIR/<name>` if set, else `$XDG_CACHE_HOME/jaxlr/<name>`,
     else `~/.cache/jaxlr/<name>`;
  4. system folders of the data set (Debian's `dataset-fashion-mnist` package installs
     `/usr/share/datasets/fashion-mnist`);
  5. a download from the mirrors into the user cache (`JAXLR_MIRRORS` overrides the mirror
     list; `JAXLR_DOWNLOAD_TIMEOUT` the socket timeout in seconds, default 60).

Trust: every file is fully checked before any of it is used (see `jaxlr.data.idx`), and
against the registry: the shape and the sha256 of the decompressed bytes, labels in range,
image/label counts. Any violation raises `DataError` naming the file and what is wrong.
Downloads are verified before they are moved into place, so the cache only ever holds
verified files. A registry entry whose `sha256`/`shape` is None is not checked for it: the
data set "fake" (tiny random MNIST-like files that `jaxlr.data.fake.write_fake_dataset`
writes for tests) is registered that way, with no mirrors; `load_dataset(..., verify=False)`
skips those two checks for any data set.

Decoded data sets are cached in-process (keyed by the resolved paths, sizes and mtimes),
and their arrays are read-only so that no caller can corrupt the cache: copy before
writing in place.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from absl import logging

from jaxlr.data.idx import ChecksumError, DataError, gunzip, load_idx_pair, parse_idx
from jaxlr.host import io

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One file of a data set: its role (see ROLES), name, sha256 of the decompressed bytes
    and the array shape it must decode to (uint8); None = not checked (e.g. the "fake" set)."""

    role: str
    filename: str
    sha256: str | None
    shape: tuple[int, ...] | None


DIGITS = tuple(str(k) for k in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its four files, download mirrors (base URLs), number of classes,
    subfolder names it may live under, system folders that may hold it, and the words that
    reports use for its classes: `class_names[k]` names label k, `noun` / `plural` say what
    one class is ("digit" / "digits" for MNIST, "class" / "classes" for Fashion-MNIST)."""

    name: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    num_classes: int = 10
    folder_names: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    class_names: tuple[str, ...] = DIGITS
    noun: str = "digit"
    plural: str = "digits"

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"data set {self.name}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )


def _mnist_like(name, sha256s, mirrors, folder_names, system_dirs=(), **words) -> DatasetSpec:
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    shapes = ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    files = tuple(FileSpec(*f) for f in zip(ROLES, names, sha256s, shapes, strict=True))
    return DatasetSpec(
        name, files, tuple(mirrors), 10, tuple(folder_names), tuple(system_dirs), **words
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": _mnist_like(
        "mnist",
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        folder_names=("mnist",),
    ),
    "fashion_mnist": _mnist_like(
        "fashion_mnist",
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        ),
        folder_names=("fashion_mnist", "fashion-mnist"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        class_names=FASHION_MNIST_CLASSES,
        noun="class",
        plural="classes",
    ),
    # Tiny random MNIST-like files for tests (`jaxlr.data.fake.write_fake_dataset`): the
    # same file names, any sizes, no checksum, nothing to download; give `data_dir`. Its
    # classes are fake digits, named as MNIST's.
    "fake": DatasetSpec(
        "fake",
        tuple(
            FileSpec(f.role, f.filename, None, None)
            for f in _mnist_like("fake", (None,) * 4, (), ()).files
        ),
        (),
        10,
        ("fake",),
    ),
}

# To tell the user which file they pointed us at by mistake (e.g. MNIST for Fashion-MNIST).
_KNOWN_SHA256 = {f.sha256: (s.name, f.role) for s in DATASETS.values() for f in s.files if f.sha256}


def _checksum_error(source: str, got: str, expected: str) -> ChecksumError:
    known = _KNOWN_SHA256.get(got)
    if known:
        advice = f"It is {known[0]}'s {known[1]} file: is this another data set's folder?"
        return ChecksumError(source, got, expected, advice)
    return ChecksumError(source, got, expected)


def get_spec(name: str) -> DatasetSpec:
    """Looks up a registered data set by name ("fashion-mnist" is read as "fashion_mnist").

    Raises:
      DataError: unknown name; the message lists the valid ones.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


# ---------------------------------------------------------------------------------------------
# Lookup and download.


def cache_dir(name: str) -> Path:
    """The user-cache folder of data set `name` (lookup step 3; downloads go here)."""
    root = os.environ.get("JAXLR_CACHE_DIR")
    if root:
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path("~/.cache").expanduser()  # XDG: abs only
    return base / "jaxlr" / name


def check_data_dir(data_dir: str | os.PathLike) -> Path:
    """Checks that an explicitly given data folder exists and is a folder.

    Raises:
      DataError: it does not exist, or it is a file (one line naming the path).
    """
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"data_dir {path} does not exist (give a folder holding the data files)")
    if not path.is_dir():
        raise DataError(f"data_dir {path} is a file, not a folder (give the folder holding it)")
    return path


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders searched for data set `name`, in order, each with where it came from.

    With `data_dir` only that folder (and its subfolders named after the data set) is
    searched; without it, `$JAXLR_DATA_DIR`, the user cache and the system folders.

    Raises:
      DataError: unknown name; `data_dir` missing or a file (see `check_data_dir`).
    """
    spec = get_spec(name)
    if data_dir is not None and os.fspath(data_dir) != "":
        root = check_data_dir(data_dir)
        out = [("data_dir argument", root / sub) for sub in spec.folder_names]
        out.append(("data_dir argument", root))
    else:
        out = []
        root = os.environ.get("JAXLR_DATA_DIR")
        if root:
            root = Path(root).expanduser()
            out += [("$JAXLR_DATA_DIR", root / sub) for sub in spec.folder_names]
            out.append(("$JAXLR_DATA_DIR", root))
        out.append(("user cache", cache_dir(spec.name)))
        out += [("system folder", Path(d)) for d in spec.system_dirs]
    seen, unique = set(), []
    for origin, d in out:
        if d.absolute() not in seen:
            seen.add(d.absolute())
            unique.append((origin, d))
    return unique


def mirrors_for(name: str) -> list[str]:
    """Mirror base URLs for `name`: `$JAXLR_MIRRORS` (comma/space separated; `{name}` in a URL
    is replaced by the data set name) if set, else the registry's."""
    spec = get_spec(name)
    env = os.environ.get("JAXLR_MIRRORS", "").strip()
    if env:
        return [u.replace("{name}", spec.name) for u in re.split(r"[,\s]+", env) if u]
    return list(spec.mirrors)


def _download_timeout() -> float:
    value = os.environ.get("JAXLR_DOWNLOAD_TIMEOUT", "60")
    try:
        timeout = float(value)
    except ValueError:
        raise DataError(
            f"JAXLR_DOWNLOAD_TIMEOUT must be a number of seconds, got {value!r}"
        ) from None
    if not timeout > 0:
        raise DataError(f"JAXLR_DOWNLOAD_TIMEOUT must be > 0, got {value!r}")
    return timeout


def _progress_printer(label: str, total: int | None):
    """Returns `show(done_bytes, final)`, printing progress to stderr at most every 0.5 s."""
    tty = sys.stderr.isatty()
    last = [-1.0, -1]  # time of the last line, last quarter printed (non-tty)
    t0 = time.monotonic()

    def show(done: int, final: bool = False) -> None:
        mb = f"{done / 1e6:.1f}" + (f" / {total / 1e6:.1f} MB" if total else " MB")
        pct = f"{100 * done // total:3d}% " if total else ""
        if tty:
            now = time.monotonic()
            if final or now - last[0] >= 0.5:
                last[0] = now
                rate = done / max(now - t0, 1e-9)
                eta = f", {(total - done) / rate:.0f} s left" if total and rate > 0 else ""
                speed = f" {rate / 1e6:.1f} MB/s{eta}" if done else ""
                sys.stderr.write(f"\r{label}: {pct}({mb}){speed}" + ("\n" if final else ""))
                sys.stderr.flush()
        else:  # a log file: one line per quarter, not one per chunk
            quarter = 4 * done // total if total else 0
            if quarter > last[1] or (final and quarter < 4):
                last[1] = quarter
                sys.stderr.write(f"{label}: {pct}({mb})\n")

    return show


def _fetch_verified(url: str, dest: Path, sha256: str, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "jaxlr"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = _progress_printer(f"jaxlr: downloading {url}", total)
        # The temporary file only becomes `dest` if the block finishes: verified, complete.
        with io.atomic_open(dest, "wb") as f:
            done = 0
            show(0)
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                done += len(chunk)
                show(done)
            show(done, final=True)
            if total is not None and done != total:
                raise DataError(f"incomplete download: {done} of {total} bytes")
            f.flush()
            raw = gunzip(Path(f.name).read_bytes(), url)
            parse_idx(raw, url)
            got = hashlib.sha256(raw).hexdigest()
            if got != sha256:
                raise _checksum_error(url, got, sha256)


def download_file(
    urls: Sequence[str], dest: str | os.PathLike, sha256: str, *, timeout: float = 60.0
) -> Path:
    """Downloads one gzip IDX file, trying each URL in turn, verifying before moving into place.

    Args:
      urls: full URLs of the same file, tried in order until one succeeds.
      dest: final path; written atomically, only after the decompressed bytes match `sha256`.
      sha256: expected sha256 (hex) of the decompressed bytes.
      timeout: socket timeout in seconds (per connection attempt and per read).

    Returns:
      `dest` as a Path.

    Raises:
      DataError: every URL failed; the message lists each URL with its error.
    """
    dest = Path(dest)
    errors = []
    for url in urls:
        try:
            _fetch_verified(url, dest, sha256.lower(), timeout)
            logging.info("jaxlr: downloaded and verified %s -> %s", url, dest)
            return dest
        except urllib.error.HTTPError as e:
            errors.append(f"{url}: HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            errors.append(f"{url}: {e.reason}")
        except (OSError, http.client.HTTPException, ValueError) as e:  # incl. timeouts, DataError
            errors.append(f"{url}: {type(e).__name__}: {e}")
        sys.stderr.write(f"jaxlr: download failed: {errors[-1]}\n")
    raise DataError(f"could not download {dest.name}; tried:\n  " + "\n  ".join(errors))


def download_dataset(
    name: str,
    dest_dir: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Path]:
    """Downloads the files of `name` that `dest_dir` lacks, each verified before it lands.

    Args:
      name: registered data set.
      dest_dir: target folder (default: `cache_dir(name)`); created if needed.
      mirrors: base URLs (default: `mirrors_for(name)`); each file is tried on each in turn.
      timeout: socket timeout in seconds (default: `$JAXLR_DOWNLOAD_TIMEOUT` or 60).

    Returns:
      {role: path} for the four files.

    Raises:
      DataError: a file could not be obtained from any mirror (files already verified and
        placed stay, so a later call only fetches the rest).
    """
    spec = get_spec(name)
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir(spec.name)
    mirrors = list(mirrors) if mirrors is not None else mirrors_for(spec.name)
    timeout = timeout if timeout is not None else _download_timeout()
    if not mirrors:
        raise DataError(f"no download mirrors for {spec.name}")
    unchecked = [f.filename for f in spec.files if not f.sha256]
    if unchecked:
        raise DataError(f"{spec.name} cannot be downloaded: no sha256 registered for {unchecked}")
    paths = {}
    for f in spec.files:
        dest = dest_dir / f.filename
        if not dest.is_file():
            urls = [base.rstrip("/") + "/" + f.filename for base in mirrors]
            download_file(urls, dest, f.sha256, timeout=timeout)
        paths[f.role] = dest
    return paths


def find_dataset_files(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False
) -> dict[str, Path]:
    """Finds the four files of a data set (see the module docstring for the order).

    Only existence is checked here; `load_dataset` validates the contents.

    Args:
      name: registered data set, e.g. "mnist" or "fashion_mnist".
      data_dir: the only folder searched when given (the files directly or in `<name>/`);
        None: `$JAXLR_DATA_DIR`, the user cache, system folders.
      download: without `data_dir`, download into the user cache if found nowhere.

    Returns:
      {role: path} with the roles in ROLES.

    Raises:
      DataError: `data_dir` missing or a file; not found (and not downloaded): the message
        lists every folder searched, what was wrong with it, the download attempts, and how
        to provide the files.
    """
    spec = get_spec(name)
    explicit = data_dir is not None and os.fspath(data_dir) != ""
    looked = []
    for origin, folder in candidate_dirs(spec.name, data_dir):
        paths = {f.role: folder / f.filename for f in spec.files}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if not missing:
            logging.info("jaxlr: %s found in %s (%s)", spec.name, folder, origin)
            return paths
        if not folder.is_dir():
            status = "no such folder"
        elif len(missing) == len(paths):
            status = "none of the files"
        else:
            status = "incomplete, missing " + ", ".join(missing)
        looked.append(f"  {folder}  ({origin}): {status}")
    names = ", ".join(f.filename for f in spec.files)
    sub = spec.folder_names[0] if spec.folder_names else spec.name
    if explicit:
        raise DataError(
            f"data set {spec.name!r} not found in data_dir {Path(data_dir).expanduser()}; "
            "looked in:\n" + "\n".join(looked) + f"\nPut the four files ({names}) there or in "
            f"its subfolder {sub}/, or leave data_dir out to search $JAXLR_DATA_DIR and "
            f"{cache_dir(spec.name)} (and download)."
        )
    if download:
        try:
            return download_dataset(spec.name)
        except DataError as e:
            download_note = f"Download into {cache_dir(spec.name)} failed: {e}"
    else:
        download_note = "Download was not attempted (download=False)."
    mirrors = ", ".join(mirrors_for(spec.name)) or "none"
    raise DataError(
        f"data set {spec.name!r} not found. Looked in, in this order:\n"
        + "\n".join(looked)
        + f"\n{download_note}\nTo provide the files, put the four files ({names}) in one of: "
        f"a folder passed as data_dir (or --data_dir); $JAXLR_DATA_DIR/{sub}/ "
        f"(set JAXLR_DATA_DIR); or {cache_dir(spec.name)}. Or allow the download (mirrors: "
        f"{mirrors}; override with JAXLR_MIRRORS)."
    )


# ---------------------------------------------------------------------------------------------
# Loading.


class Dataset(NamedTuple):
    """A whole data set as read-only numpy arrays."""

    x_train: np.ndarray  # uint8 [N_train, H, W]
    y_train: np.ndarray  # uint8 [N_train]
    x_test: np.ndarray  # uint8 [N_test, H, W]
    y_test: np.ndarray  # uint8 [N_test]


def _load_files(spec: DatasetSpec, paths: dict[str, Path], verify: bool) -> Dataset:
    files = {f.role: f for f in spec.files}
    arrays = {}
    for split in ("train", "test"):
        fx, fy = files[f"{split}_images"], files[f"{split}_labels"]
        try:
            x, y = load_idx_pair(
                paths[fx.role],
                paths[fy.role],
                num_classes=spec.num_classes,
                images_sha256=fx.sha256 if verify else None,
                labels_sha256=fy.sha256 if verify else None,
            )
        except ChecksumError as e:
            raise _checksum_error(e.source, e.got, e.expected) from None
        for f, a in ((fx, x), (fy, y)):
            shape_ok = not verify or f.shape is None or a.shape == tuple(f.shape)
            if a.dtype != np.uint8 or not shape_ok:
                want = f"uint8 of shape {tuple(f.shape)}" if verify and f.shape else "uint8"
                raise DataError(
                    f"{paths[f.role]}: expected {want}, found {a.dtype} of shape {a.shape}"
                )
        arrays[fx.role], arrays[fy.role] = x, y
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(
            f"{paths['train_images']} holds images of shape {arrays['train_images'].shape[1:]} "
            f"but {paths['test_images']} of shape {arrays['test_images'].shape[1:]}"
        )
    return Dataset(
        arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]
    )


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DatasetSpec, key: tuple, verify: bool) -> Dataset:
    paths = {role: Path(p) for role, p, _, _ in key}
    return _load_files(spec, paths, verify)


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    verify: bool = True,
) -> Dataset:
    """Finds, validates and decodes a registered data set; repeated calls are instant.

    Args:
      name: "mnist", "fashion_mnist" or "fake" (see DATASETS).
      data_dir: the only folder searched when given (see the module docstring for the order
        without it); a missing folder or a file is an error.
      download: without `data_dir`, download into the user cache when found nowhere.
      verify: check each file's sha256 and shape against the registry (the IDX structure,
        label range and counts are always checked). False e.g. for test files written by
        `jaxlr.data.fake.write_fake_dataset` under a real data set's name.

    Returns:
      Dataset of read-only arrays (copy before writing in place).

    Raises:
      DataError: unknown name, `data_dir` missing or a file, files not found, or any file
        invalid (the message names it).
    """
    spec = get_spec(name)
    paths = find_dataset_files(spec.name, data_dir, download=download)
    key = []
    for role in ROLES:
        p = paths[role].resolve()
        st = p.stat()
        # Size and mtime in the key: a file replaced on disk is re-read and re-verified.
        key.append((role, str(p), st.st_size, st.st_mtime_ns))
    return _load_cached(spec, tuple(key), bool(verify))


def clear_cache() -> None:
    """Drops the in-process cache of decoded data sets."""
    _load_cached.cache_clear()
