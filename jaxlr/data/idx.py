"""The IDX file format (MNIST's): checked parsing and reading, encoding and writing.

Dimension legend: N examples, H image height, W image width.

IDX: magic = two zero bytes, a dtype code, the number of dimensions; then one big-endian
uint32 size per dimension; then the data, big-endian, in C order. Files are usually
gzip-compressed (`.gz`).

Trust: `read_idx` checks everything before returning any of it: gzip stream, magic, dtype
code, number of dimensions, declared sizes against the byte count, and (if given) the sha256
of the decompressed bytes. Any violation raises `DataError` naming the file and what is
wrong. This module knows nothing of data-set registries or downloads
(`jaxlr.data.registry`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxlr.host import io


class DataError(ValueError):
    """A data file is missing, corrupt or not the expected one; the message says which and why."""


class ChecksumError(DataError):
    """A file's decompressed bytes do not have the expected sha256 (`got`, `expected`)."""

    def __init__(self, source: str, got: str, expected: str, advice: str = "Delete or replace it."):
        super().__init__(
            f"{source}: sha256 of the decompressed bytes is {got}, expected {expected}: the file "
            f"is corrupt or not the registry's version, and was not used. {advice}"
        )
        self.source, self.got, self.expected = source, got, expected


# ---------------------------------------------------------------------------------------------
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


def gunzip(blob: bytes, source: str) -> bytes:
    """Decompresses gzip bytes; `DataError` (naming `source`) if they are not valid gzip."""
    if blob[:2] != b"\x1f\x8b":
        raise DataError(
            f"{source}: not a gzip file (it starts with 0x{blob[:4].hex()}, gzip starts with "
            "0x1f8b); the data files must be the original .gz files"
        )
    try:
        return gzip.decompress(blob)
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{source}: corrupt or truncated gzip data: {e}") from None


def read_idx(path: str | os.PathLike, *, expected_sha256: str | None = None) -> np.ndarray:
    """Reads and fully validates one IDX file (gzip-compressed when the name ends in `.gz`).

    Args:
      path: the file.
      expected_sha256: if given, the sha256 (hex) that the decompressed bytes must have.

    Returns:
      A read-only array (see `parse_idx`). Never partial data: any problem raises.

    Raises:
      DataError: unreadable file, not gzip, corrupt gzip, any IDX violation (see
        `parse_idx`); ChecksumError (a DataError) on a checksum mismatch.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    raw = gunzip(blob, str(path)) if path.name.endswith(".gz") else blob
    arr = parse_idx(raw, str(path))
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256.lower():
            raise ChecksumError(str(path), got, expected_sha256.lower())
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
