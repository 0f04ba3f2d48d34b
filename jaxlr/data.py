"""MNIST-style data: checked IDX reading, registry, lookup/download, preprocessing, splits, batches.

Dimension legend: N examples, H image height, W image width, D features (H*W, plus one
with the bias trick: 784 -> 785), K classes, M batches per epoch, B batch size.

Where the four files of a data set are looked for (the first folder holding all four wins):
  1. the `data_dir` argument (the `--data_dir` flag of experiments/main.py);
  2. the `JAXLR_DATA_DIR` environment variable;
  3. the user cache: `$JAXLR_CACHE_DIR/<name>` if set, else `$XDG_CACHE_HOME/jaxlr/<name>`,
     else `~/.cache/jaxlr/<name>`;
  4. system folders of the data set (Debian's `dataset-fashion-mnist` package installs
     `/usr/share/datasets/fashion-mnist`);
  5. a download from the mirrors into the user cache (`JAXLR_MIRRORS` overrides the mirror
     list; `JAXLR_DOWNLOAD_TIMEOUT` the socket timeout in seconds, default 60).
In 1 and 2 the folder may hold the files in a subfolder named after the data set (`mnist/`,
`fashion_mnist/`, `fashion-mnist/`) or directly.

Trust: every file is fully checked before any of it is used: gzip stream, IDX magic,
dtype code, number of dimensions, declared sizes against the byte count, the shape the
registry expects, labels in range, image/label counts, and the sha256 of the decompressed
bytes. Any violation raises `DataError` naming the file and what is wrong. Downloads are
verified before they are moved into place, so the cache only ever holds verified files.

Decoded data sets are cached in-process (keyed by the resolved paths, sizes and mtimes),
and their arrays are read-only so that no caller can corrupt the cache: copy before
writing in place.

Preprocessing functions (`flatten`, `scale_images`, `add_bias_feature`, `one_hot`,
`preprocess`) take numpy or jax arrays and return the same kind; they are jit-compatible on
jax arrays. `binary_subset` and the splits have data-dependent sizes: host side only.
`epoch_batches` is jax and runs inside `jit`/`vmap`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import math
import operator
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlr import io


class DataError(ValueError):
    """A data file is missing, corrupt or not the expected one; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# IDX format: magic = two zero bytes, a dtype code, the number of dimensions; then one
# big-endian uint32 size per dimension; then the data, big-endian, in C order.

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decodes uncompressed IDX bytes, validating the header against the byte count.

    Args:
      raw: the whole (decompressed) IDX file.
      source: what to call the data in error messages (usually its path).

    Returns:
      A read-only array in native byte order with the declared dtype and shape.

    Raises:
      DataError: wrong magic, unknown dtype code, zero dimensions, truncated header or data,
        trailing bytes.
    """
    n = len(raw)
    if n < 4:
        raise DataError(f"{source}: not an IDX file: {n} bytes, but the IDX header alone is 4+")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{source}: wrong magic number 0x{raw[:4].hex()}: an IDX file starts with two zero "
            "bytes (e.g. 0x00000803 for 3-d uint8 images)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({IDX_DTYPES[c].name})" for c in IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02x}; known codes: {known}")
    if ndim == 0:
        raise DataError(f"{source}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if n < header:
        raise DataError(
            f"{source}: truncated: the header declares {ndim} dimensions ({header} header "
            f"bytes) but the file has only {n} bytes"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = n - header
    if actual < expected:
        raise DataError(
            f"{source}: truncated: the header declares shape {shape} of {dtype.name} "
            f"({expected} data bytes) but only {actual} data bytes follow"
        )
    if actual > expected:
        raise DataError(
            f"{source}: {actual - expected} trailing bytes after the {expected} data bytes "
            f"declared by the header (shape {shape} of {dtype.name})"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    arr.flags.writeable = False
    return arr


def encode_idx(arr: np.ndarray) -> bytes:
    """Encodes an array as uncompressed IDX bytes (the inverse of `parse_idx`).

    Args:
      arr: array of rank >= 1 with an IDX dtype (uint8, int8, int16, int32, float32,
        float64).

    Returns:
      The IDX bytes.
    """
    arr = np.asarray(arr)
    native = arr.dtype.newbyteorder("=")
    if native not in _IDX_CODES or arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"encode_idx: cannot encode dtype {arr.dtype} of rank {arr.ndim}")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Writes `arr` as a gzip IDX file (atomically), e.g. to build tiny test data sets.

    Args:
      path: destination, conventionally ending in `.gz`.
      arr: the array (see `encode_idx`).

    Returns:
      The destination as a Path.
    """
    return io.atomic_write_bytes(path, gzip.compress(encode_idx(arr), mtime=0))


def _gunzip(blob: bytes, source: str) -> bytes:
    if blob[:2] != b"\x1f\x8b":
        raise DataError(
            f"{source}: not a gzip file (it starts with 0x{blob[:4].hex()}, gzip starts with "
            "0x1f8b); the data files must be the original .gz files"
        )
    try:
        return gzip.decompress(blob)
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{source}: corrupt or truncated gzip data: {e}") from None


def _sha256_error(source: str, got: str, expected: str) -> DataError:
    known = _KNOWN_SHA256.get(got)
    if known:
        advice = f"It is {known[0]}'s {known[1]} file: is this another data set's folder?"
    else:
        advice = "Delete or replace it."
    return DataError(
        f"{source}: sha256 of the decompressed bytes is {got}, expected {expected}: the file is "
        f"corrupt or not the registry's version, and was not used. {advice}"
    )


def read_idx(path: str | os.PathLike, *, expected_sha256: str | None = None) -> np.ndarray:
    """Reads and fully validates one IDX file (gzip-compressed when the name ends in `.gz`).

    Args:
      path: the file.
      expected_sha256: if given, the sha256 (hex) that the decompressed bytes must have.

    Returns:
      A read-only array (see `parse_idx`). Never partial data: any problem raises.

    Raises:
      DataError: unreadable file, not gzip, corrupt gzip, any IDX violation (see
        `parse_idx`), checksum mismatch.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    raw = _gunzip(blob, str(path)) if path.name.endswith(".gz") else blob
    arr = parse_idx(raw, str(path))
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256.lower():
            raise _sha256_error(str(path), got, expected_sha256.lower())
    return arr


def load_idx_pair(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    num_classes: int = 10,
    images_sha256: str | None = None,
    labels_sha256: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads matching image and label IDX files and checks them against each other.

    Args:
      images_path: IDX file of rank 3 (N, H, W).
      labels_path: IDX file of rank 1 (N,), integer dtype.
      num_classes: labels must lie in 0..num_classes-1.
      images_sha256, labels_sha256: optional expected checksums (see `read_idx`).

    Returns:
      (x_NHW, y_N), read-only.

    Raises:
      DataError: anything `read_idx` rejects, wrong ranks, count mismatch, labels out of range.
    """
    x_NHW = read_idx(images_path, expected_sha256=images_sha256)
    y_N = read_idx(labels_path, expected_sha256=labels_sha256)
    if x_NHW.ndim != 3:
        raise DataError(
            f"{images_path}: images must have 3 dimensions (N, H, W), found shape {x_NHW.shape}"
        )
    if y_N.ndim != 1:
        raise DataError(
            f"{labels_path}: labels must have 1 dimension (N,), found shape {y_N.shape}"
        )
    if not np.issubdtype(y_N.dtype, np.integer):
        raise DataError(f"{labels_path}: labels must be integers, found {y_N.dtype}")
    if len(x_NHW) != len(y_N):
        raise DataError(
            f"images/labels count mismatch: {images_path} holds {len(x_NHW)} images "
            f"but {labels_path} holds {len(y_N)} labels"
        )
    bad = np.flatnonzero((y_N < 0) | (y_N >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{labels_path}: {bad.size} labels outside 0..{num_classes - 1} (first: "
            f"{int(y_N[i])} at index {i})"
        )
    return x_NHW, y_N


# ---------------------------------------------------------------------------------------------
# Registry.

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One file of a data set: its role (see ROLES), name, sha256 of the decompressed bytes
    and the array shape it must decode to (uint8)."""

    role: str
    filename: str
    sha256: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its four files, download mirrors (base URLs), number of classes,
    subfolder names it may live under, and system folders that may hold it."""

    name: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    num_classes: int = 10
    folder_names: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()


def _mnist_like(name, sha256s, mirrors, folder_names, system_dirs=()) -> DatasetSpec:
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    shapes = ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    files = tuple(FileSpec(*f) for f in zip(ROLES, names, sha256s, shapes, strict=True))
    return DatasetSpec(name, files, tuple(mirrors), 10, tuple(folder_names), tuple(system_dirs))


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
    ),
}

# To tell the user which file they pointed us at by mistake (e.g. MNIST for Fashion-MNIST).
_KNOWN_SHA256 = {f.sha256: (s.name, f.role) for s in DATASETS.values() for f in s.files}


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


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders searched for data set `name`, in order, each with where it came from."""
    spec = get_spec(name)
    out: list[tuple[str, Path]] = []
    for origin, root in (
        ("data_dir argument", data_dir),
        ("$JAXLR_DATA_DIR", os.environ.get("JAXLR_DATA_DIR")),
    ):
        if root:
            root = Path(root).expanduser()
            out += [(origin, root / sub) for sub in spec.folder_names] + [(origin, root)]
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

    def show(done: int, final: bool = False) -> None:
        mb = f"{done / 1e6:.1f}" + (f" / {total / 1e6:.1f} MB" if total else " MB")
        pct = f"{100 * done // total:3d}% " if total else ""
        if tty:
            now = time.monotonic()
            if final or now - last[0] >= 0.5:
                last[0] = now
                sys.stderr.write(f"\r{label}: {pct}({mb})" + ("\n" if final else ""))
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
            raw = _gunzip(Path(f.name).read_bytes(), url)
            parse_idx(raw, url)
            got = hashlib.sha256(raw).hexdigest()
            if got != sha256:
                raise _sha256_error(url, got, sha256)


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
      data_dir: folder searched first (holding the files directly or in `<name>/`).
      download: if nothing is found, download into the user cache.

    Returns:
      {role: path} with the roles in ROLES.

    Raises:
      DataError: not found (and not downloaded); the message lists every folder searched,
        what was wrong with it, the download attempts, and how to provide the files.
    """
    spec = get_spec(name)
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
    if download:
        try:
            return download_dataset(spec.name)
        except DataError as e:
            download_note = f"Download into {cache_dir(spec.name)} failed: {e}"
    else:
        download_note = "Download was not attempted (download=False)."
    names = ", ".join(f.filename for f in spec.files)
    sub = spec.folder_names[0] if spec.folder_names else spec.name
    raise DataError(
        f"data set {spec.name!r} not found. Looked in, in this order:\n"
        + "\n".join(looked)
        + f"\n{download_note}\nTo provide the files, put the four files ({names}) in one of: "
        f"a folder passed as data_dir (or --data_dir); $JAXLR_DATA_DIR/{sub}/ "
        f"(set JAXLR_DATA_DIR); or {cache_dir(spec.name)}. Or allow the download (mirrors: "
        f"{', '.join(mirrors_for(spec.name))}; override with JAXLR_MIRRORS)."
    )


# ---------------------------------------------------------------------------------------------
# Loading.


class Dataset(NamedTuple):
    """A whole data set as read-only numpy arrays."""

    x_train: np.ndarray  # uint8 [N_train, H, W]
    y_train: np.ndarray  # uint8 [N_train]
    x_test: np.ndarray  # uint8 [N_test, H, W]
    y_test: np.ndarray  # uint8 [N_test]


def _load_files(spec: DatasetSpec, paths: dict[str, Path]) -> Dataset:
    files = {f.role: f for f in spec.files}
    arrays = {}
    for split in ("train", "test"):
        fx, fy = files[f"{split}_images"], files[f"{split}_labels"]
        x, y = load_idx_pair(
            paths[fx.role],
            paths[fy.role],
            num_classes=spec.num_classes,
            images_sha256=fx.sha256,
            labels_sha256=fy.sha256,
        )
        for f, a in ((fx, x), (fy, y)):
            if a.dtype != np.uint8 or a.shape != tuple(f.shape):
                raise DataError(
                    f"{paths[f.role]}: expected uint8 of shape {tuple(f.shape)}, "
                    f"found {a.dtype} of shape {a.shape}"
                )
        arrays[fx.role], arrays[fy.role] = x, y
    return Dataset(
        arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]
    )


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DatasetSpec, key: tuple) -> Dataset:
    paths = {role: Path(p) for role, p, _, _ in key}
    return _load_files(spec, paths)


def load_dataset(
    name: str = "mnist", data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """Finds, validates and decodes a registered data set; repeated calls are instant.

    Args:
      name: "mnist" or "fashion_mnist" (see DATASETS).
      data_dir: folder searched first (see the module docstring for the full order).
      download: download into the user cache when the files are found nowhere.

    Returns:
      Dataset of read-only arrays (copy before writing in place).

    Raises:
      DataError: unknown name, files not found, or any file invalid (the message names it).
    """
    spec = get_spec(name)
    paths = find_dataset_files(spec.name, data_dir, download=download)
    key = []
    for role in ROLES:
        p = paths[role].resolve()
        st = p.stat()
        # Size and mtime in the key: a file replaced on disk is re-read and re-verified.
        key.append((role, str(p), st.st_size, st.st_mtime_ns))
    return _load_cached(spec, tuple(key))


def clear_cache() -> None:
    """Drops the in-process cache of decoded data sets."""
    _load_cached.cache_clear()


# ---------------------------------------------------------------------------------------------
# Preprocessing: pure, numpy in -> numpy out, jax in -> jax out (jit-compatible).


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def flatten(x_NHW):
    """Flattens every example to a vector.

    Args:
      x_NHW: images [N, H, W] (any rank >= 2; all but the first axis are flattened).

    Returns:
      x_ND [N, H*W].
    """
    if x_NHW.ndim < 2:
        raise ValueError(f"flatten: need rank >= 2, got shape {x_NHW.shape}")
    return x_NHW.reshape(x_NHW.shape[0], -1)


SCALE_MODES = ("unit", "symmetric")


def scale_images(x, mode: str = "symmetric", dtype=np.float32):
    """Scales integer pixel values 0..255 to floats.

    Args:
      x: integer array of any shape (uint8 images).
      mode: "unit" -> x/255 in [0, 1]; "symmetric" -> x/127.5 - 1 in [-1, 1] (TDT4265).
      dtype: float dtype of the result.

    Returns:
      Float array of the same shape.
    """
    if not np.issubdtype(x.dtype, np.integer):
        # Guards against scaling twice.
        raise ValueError(f"scale_images: expected integer pixels 0..255, got dtype {x.dtype}")
    xf = x.astype(dtype)
    if mode == "unit":
        return xf / 255.0
    if mode == "symmetric":
        # = x/127.5 - 1, but one rounding instead of two (exact subtraction first), so pixel
        # 127 gives the float nearest -1/255 rather than a cancellation error.
        return (xf - 127.5) / 127.5
    raise ValueError(f"scale_images: mode must be one of {SCALE_MODES}, got {mode!r}")


def add_bias_feature(x_ND):
    """Appends a constant-1 feature (the bias trick): [N, D] -> [N, D+1], e.g. 784 -> 785.

    Args:
      x_ND: features [N, D] (any leading axes; the feature axis is the last).

    Returns:
      x_ND with a column of ones appended, same dtype.
    """
    xp = _xp(x_ND)
    return xp.concatenate([x_ND, xp.ones_like(x_ND[..., :1])], axis=-1)


def one_hot(y_N, num_classes: int, dtype=np.float32):
    """One-hot encodes integer labels.

    Args:
      y_N: integer labels [N] in 0..num_classes-1 (checked for numpy input; under jax an
        out-of-range label gives a row of zeros).
      num_classes: K.
      dtype: dtype of the result.

    Returns:
      Y_NK with Y_NK[n, y_N[n]] = 1 and zeros elsewhere.
    """
    xp = _xp(y_N)
    if xp is np:
        y_N = np.asarray(y_N)
        if y_N.size and (y_N.min() < 0 or y_N.max() >= num_classes):
            raise ValueError(
                f"one_hot: labels must lie in 0..{num_classes - 1}, found {y_N.min()}..{y_N.max()}"
            )
    return (y_N[..., None] == xp.arange(num_classes)).astype(dtype)


def preprocess(x_NHW, scale: str = "symmetric", bias: bool = True, dtype=np.float32):
    """Flattens, scales and (optionally) appends the bias feature.

    Args:
      x_NHW: uint8 images [N, H, W].
      scale: "unit" or "symmetric" (see `scale_images`).
      bias: append the constant-1 feature.
      dtype: float dtype of the result.

    Returns:
      x_ND [N, H*W (+1)].
    """
    x_ND = scale_images(flatten(x_NHW), scale, dtype)
    return add_bias_feature(x_ND) if bias else x_ND


def binary_subset(x, y_N, positive: int = 2, negative: int = 3):
    """Keeps the examples of two classes and relabels them positive -> 1, negative -> 0.

    Host side (the result size depends on the data). Order is preserved.

    Args:
      x: examples [N, ...].
      y_N: integer labels [N].
      positive: class that becomes label 1.
      negative: class that becomes label 0.

    Returns:
      (x_sub, y01) with y01 of y_N's dtype.
    """
    if positive == negative:
        raise ValueError(f"binary_subset: positive and negative are both {positive}")
    y_np = np.asarray(y_N)
    if len(x) != len(y_np):
        raise ValueError(f"binary_subset: {len(x)} examples but {len(y_np)} labels")
    keep = np.flatnonzero((y_np == positive) | (y_np == negative))
    if keep.size == 0:
        raise ValueError(f"binary_subset: no example has label {positive} or {negative}")
    y01 = (y_np[keep] == positive).astype(y_np.dtype)
    return x[keep], (jnp.asarray(y01) if isinstance(y_N, jax.Array) else y01)


# ---------------------------------------------------------------------------------------------
# Splits (host side).


class Split(NamedTuple):
    """Training and validation examples."""

    x_train: np.ndarray  # [N_train, ...]
    y_train: np.ndarray  # [N_train]
    x_val: np.ndarray  # [N_val, ...]
    y_val: np.ndarray  # [N_val]


def _check_xy(x, y) -> int:
    if len(x) != len(y):
        raise ValueError(f"{len(x)} examples but {len(y)} labels")
    return len(x)


def _check_count(what: str, n, low: int, high: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not low <= n <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, got {n!r}")
    return int(n)


def tdt4265_split(
    ds: Dataset, digits: tuple[int, int] | None = None, num_train: int = 20000
) -> Split:
    """The TDT4265 Assignment 1 protocol: the first `num_train` training images for training,
    the whole test set for validation; for a binary task the two digits are kept after slicing.

    Images are returned as they are (uint8 [N, H, W]): apply `preprocess` yourself.

    Args:
      ds: the data set.
      digits: (positive, negative), e.g. (2, 3): digit 2 -> label 1, digit 3 -> label 0;
        None keeps all classes.
      num_train: how many of the first training images to take.

    Returns:
      Split (for MNIST with digits=(2, 3): 4,005 training and 2,042 validation examples).
    """
    n = _check_xy(ds.x_train, ds.y_train)
    num_train = _check_count("num_train", num_train, 1, n)
    x_tr, y_tr = ds.x_train[:num_train], ds.y_train[:num_train]
    x_val, y_val = ds.x_test, ds.y_test
    if digits is not None:
        positive, negative = digits
        x_tr, y_tr = binary_subset(x_tr, y_tr, positive, negative)
        x_val, y_val = binary_subset(x_val, y_val, positive, negative)
    return Split(x_tr, y_tr, x_val, y_val)


def first_last_split(x, y, num_first: int, num_last: int) -> Split:
    """The first `num_first` examples for training, the last `num_last` for validation.

    Raises:
      ValueError: a size <= 0, or num_first + num_last > N (the parts would overlap).
    """
    n = _check_xy(x, y)
    num_first = _check_count("num_first", num_first, 1, n)
    num_last = _check_count("num_last", num_last, 1, n - num_first)
    return Split(x[:num_first], y[:num_first], x[n - num_last :], y[n - num_last :])


def random_split(x, y, num_val: int, seed: int) -> Split:
    """A seeded random split: `num_val` examples for validation, the rest for training.

    Both parts keep the original order of their examples (only membership is random).

    Raises:
      ValueError: num_val not in 1..N-1.
    """
    n = _check_xy(x, y)
    num_val = _check_count("num_val", num_val, 1, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:num_val]), np.sort(perm[num_val:])
    return Split(x[train], y[train], x[val], y[val])


# ---------------------------------------------------------------------------------------------
# Mini-batches (jax; inside jit the sizes must be static Python ints).


def num_batches(num_examples: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches in one epoch.

    Args:
      num_examples: N > 0.
      batch_size: B > 0.
      drop_last: drop the last partial batch (as the course code does); else count it.

    Returns:
      M = N // B, or ceil(N / B) when drop_last is False; always >= 1.

    Raises:
      ValueError: non-positive sizes, or no full batch with drop_last.
    """
    n = operator.index(num_examples)
    b = operator.index(batch_size)
    if n <= 0 or b <= 0:
        raise ValueError(f"num_examples and batch_size must be > 0, got {n} and {b}")
    m = n // b if drop_last else -(-n // b)
    if m == 0:
        raise ValueError(
            f"batch_size={b} > num_examples={n} with drop_last=True: an epoch "
            "would have no batch (use a smaller batch or drop_last=False)"
        )
    return m


def epoch_batches(
    key, num_examples: int, batch_size: int, *, shuffle: bool, drop_last: bool = True
):
    """Example indices of one epoch's mini-batches, for gathering inside `jit`.

    Without shuffling the order is 0..N-1 (the course code's order). Works under `jit`
    (sizes static) and `vmap` over keys.

    Args:
      key: jax PRNG key (ignored, may be None, when shuffle is False).
      num_examples: N, a static Python int.
      batch_size: B, a static Python int.
      shuffle: a fresh permutation from `key`.
      drop_last: drop the last partial batch; if False it is padded with index 0.

    Returns:
      (idx_MB int32 [M, B], mask_MB bool [M, B]); mask_MB is False exactly on padding.
    """
    m = num_batches(num_examples, batch_size, drop_last)
    total = m * batch_size
    if shuffle:
        if key is None:
            raise ValueError("epoch_batches: shuffle=True needs a PRNG key")
        order = jax.random.permutation(key, num_examples).astype(jnp.int32)
    else:
        order = jnp.arange(num_examples, dtype=jnp.int32)
    if total <= num_examples:
        idx = order[:total]
        mask = jnp.ones(total, dtype=bool)
    else:
        idx = jnp.concatenate([order, jnp.zeros(total - num_examples, dtype=jnp.int32)])
        mask = jnp.arange(total) < num_examples
    return idx.reshape(m, batch_size), mask.reshape(m, batch_size)
