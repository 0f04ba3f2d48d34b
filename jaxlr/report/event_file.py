"""TensorBoard event-file records, encoded many at once with numpy (no TensorFlow, no protobuf).

An event file is a sequence of TFRecords, each one serialized `Event` protobuf:

    uint64 length | masked crc32c(those 8 bytes) | data | masked crc32c(data)

(little-endian; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32). `scalar_events`
hand-encodes the `Event`s of scalars, byte for byte as protobuf serializes them: fields in
number order, proto3 leaving out a step of 0:

    Event   {wall_time = 1: double, step = 2: int64 varint, summary = 5: Summary}
    Summary {value = 1: repeated Value}
    Value   {tag = 1: string, simple_value = 2: float}

All events of a call (a chunk of a run's history) are built in one pass of array operations:
each event is a row of fixed-width pieces with a mask of the bytes it uses (the step's varint,
the tags present), and the masked bytes, read row by row, are the records. `scalar_events_many`
does the same for many files at once (a chunk of every point of a sweep: a constant number of
array operations however many points) and cuts the bytes per file. `frame_records` and
`frame_record_groups` frame events serialized elsewhere (text and hparams summaries, built with
tensorboardX's protos).

CRC32C (Castagnoli): the `crc32c` C package where it is importable; else `crc32c_many`, a
table-driven CRC of many strings at once in numpy, a few array operations per call however many
strings and bytes. A CRC is linear over GF(2): the CRC (from register 0) of a string is the XOR
of one term per byte, the CRC of that byte followed by d zero bytes (a table, `_SHIFT_WV`), d
its distance to the string's end. With d < W every term is one gather and each string one XOR
reduction; longer strings are cut into blocks of W bytes from their ends and combined by Horner's
rule (a block's register shifted by W zero bytes is again 4 table entries). The initial register
0xffffffff is 0xff XORed into a string's first 4 bytes.

Dimension legend: E events (records, strings), R files (runs), G tags (values an event can
hold), L bytes of a record, K bytes of a varint, Q blocks of a string, W bytes of a CRC block,
V = 256 byte values.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence

import numpy as np

__all__ = [
    "crc32c",
    "crc32c_many",
    "file_version_event",
    "frame_record_groups",
    "frame_records",
    "masked_crc32c",
    "scalar_events",
    "scalar_events_many",
]

try:
    # As tensorboardX does: the package's software fallback where the CPU has no CRC32C
    # instruction, rather than an import error.
    os.environ.setdefault("CRC32C_SW_MODE", "auto")
    from crc32c import crc32c as _native
except ImportError:
    _native = None

_POLY = 0x82F63B78  # Castagnoli, bit-reflected
_BLOCK = 128  # W: bytes per step of the numpy CRC (a table of W x 256 uint32, 128 KiB)
_FILE_VERSION = b"brain.Event:2"
_VARINT_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)  # a uint64 has <= 10 groups
_VARINT_LIMITS = np.uint64(1) << _VARINT_SHIFTS[1:]  # the least value of 2, 3, ... bytes


def _byte_table() -> np.ndarray:
    """The CRC of each single byte from register 0 (the classic 256-entry table)."""
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(_POLY), crc >> 1)
    return crc.astype(np.uint32)


def _shift_table(table_V: np.ndarray) -> np.ndarray:
    """[W * V], flat: the CRC (register 0, no final XOR) of byte v followed by d zero bytes
    at d * 256 + v."""
    rows = [table_V]
    for _ in range(_BLOCK - 1):
        rows.append(table_V[rows[-1] & 0xFF] ^ (rows[-1] >> 8))  # one more zero byte
    return np.stack(rows).ravel()


def _zero_crcs(table_V: np.ndarray, n: int) -> np.ndarray:
    """crc32c of 0, 1, ..., n - 1 zero bytes."""
    reg, out = 0xFFFFFFFF, [0]
    for _ in range(n - 1):
        reg = int(table_V[reg & 0xFF]) ^ (reg >> 8)
        out.append(reg ^ 0xFFFFFFFF)
    return np.asarray(out, np.uint32)


_SHIFT_WV = _shift_table(_byte_table())
# Entries of distances W - 1 ... W - 4: a register's 4 bytes followed by W - 4 zero bytes.
_SHIFT_OFFSETS_4 = (np.arange(_BLOCK - 1, _BLOCK - 5, -1) * 256)[None, :]
# What the initial register adds to the CRC of a string of under 4 bytes (its length's entry).
_SHORT_INIT = _zero_crcs(_byte_table(), 4)


def _shift_block(reg_E: np.ndarray) -> np.ndarray:
    """Registers after W more zero bytes: the CRC from register 0 of the register's 4
    (little-endian) bytes followed by W - 4 zeros."""
    bytes_E4 = reg_E.astype("<u4").view(np.uint8).reshape(-1, 4)
    return np.bitwise_xor.reduce(_SHIFT_WV[_SHIFT_OFFSETS_4 + bytes_E4], axis=1)


def _crc32c_numpy(data: np.ndarray, lengths_E: np.ndarray) -> np.ndarray:
    e = len(lengths_E)
    ends_E = np.cumsum(lengths_E)
    starts_E = ends_E - lengths_E
    # The initial register 0xffffffff is the same as 0xff XORed into a string's first 4 bytes
    # (strings of under 4 bytes get its effect from a table instead).
    long_E = lengths_E >= 4
    data = data.copy()
    data[starts_E[long_E, None] + np.arange(4)] ^= 0xFF
    init_E = np.where(long_E, np.uint32(0xFFFFFFFF), _SHORT_INIT[np.minimum(lengths_E, 3)])
    # A byte's distance to its string's end, d, and so its term, the table entry of (d, byte).
    # (int32 where it fits: half the memory traffic of int64, for the largest arrays here.)
    index = np.int32 if len(data) < 2**31 - 2**16 else np.int64
    dist = np.repeat((ends_E - 1).astype(index), lengths_E) - np.arange(len(data), dtype=index)
    blocks = -(-int(lengths_E.max(initial=0)) // _BLOCK)
    if blocks <= 1:
        terms = _SHIFT_WV.take((dist << 8) | data)
        some_E = lengths_E > 0
        if some_E.all():
            return np.bitwise_xor.reduceat(terms, starts_E) ^ init_E
        reg_E = np.zeros(e, np.uint32)
        reg_E[some_E] = np.bitwise_xor.reduceat(terms, starts_E[some_E])
        return reg_E ^ init_E
    # Longer strings: blocks of W bytes counted from the end, each block's XOR of terms (with
    # d within the block), then Horner's rule from the first block, shifting the register by
    # W zero bytes before adding the next. A shorter string's missing first blocks are 0.
    terms = _SHIFT_WV.take(((dist % _BLOCK) << 8) | data)
    acc_EQ = np.zeros((e, blocks), np.uint32)
    np.bitwise_xor.at(
        acc_EQ, (np.repeat(np.arange(e), lengths_E), blocks - 1 - dist // _BLOCK), terms
    )
    reg_E = acc_EQ[:, 0]
    for q in range(1, blocks):
        reg_E = _shift_block(reg_E) ^ acc_EQ[:, q]
    return reg_E ^ init_E


def crc32c_many(data: bytes | np.ndarray, lengths_E: Sequence[int] | np.ndarray) -> np.ndarray:
    """The CRC32C of many byte strings at once.

    Args:
      data: the strings one after the other (bytes, or a uint8 array).
      lengths_E: each string's length (they sum to the length of `data`).
    Returns:
      uint32 [E], the standard CRC32C of each (crc32c(b"123456789") == 0xe3069283).
    """
    data = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else np.asarray(data, np.uint8)
    lengths_E = np.asarray(lengths_E, np.int64).reshape(-1)
    if int(lengths_E.sum()) != len(data):
        raise ValueError(f"lengths sum to {int(lengths_E.sum())}, data has {len(data)} bytes")
    if _native is not None:
        raw, ends = data.tobytes(), np.cumsum(lengths_E).tolist()
        crcs = (_native(raw[b - n : b]) for b, n in zip(ends, lengths_E.tolist()))
        return np.fromiter(crcs, np.uint32, len(lengths_E))
    return _crc32c_numpy(data, lengths_E)


def crc32c(data: bytes) -> int:
    """The CRC32C of one byte string."""
    return int(crc32c_many(data, [len(data)])[0])


def masked_crc32c(crc: np.ndarray) -> np.ndarray:
    """TFRecord's mask of CRCs (uint32 in, uint32 out; wraps modulo 2^32)."""
    crc = np.asarray(crc, np.uint64)  # room for the shift and the sum; cut back to 32 bits
    return ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF).astype(np.uint32)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varints(u_E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: bytes [E, K] and which of them are used [E, K]."""
    u_E = np.asarray(u_E, np.uint64)
    count_E = 1 + np.searchsorted(_VARINT_LIMITS, u_E, side="right")
    k = int(count_E.max())
    if k == 1:
        return u_E.astype(np.uint8)[:, None], np.ones((len(u_E), 1), bool)
    used_EK = np.arange(k)[None, :] < count_E[:, None]
    more_EK = np.arange(1, k + 1)[None, :] < count_E[:, None]
    groups_EK = (u_E[:, None] >> _VARINT_SHIFTS[None, :k]) & np.uint64(0x7F)
    return (groups_EK | (more_EK * np.uint64(0x80))).astype(np.uint8), used_EK


@functools.lru_cache(maxsize=4096)
def _header(length: int) -> bytes:
    """A record's first 12 bytes: its data's length and the masked CRC of that (records of a
    kind have a few lengths only)."""
    header = struct.pack("<Q", length)
    return header + struct.pack("<I", int(masked_crc32c(crc32c(header))))


def _frame(record_EL: np.ndarray, used_EL: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The TFRecords of events laid out in `record_EL[:, 12:-4]` (their bytes where `used_EL`):
    fills in each record's length, its CRC and the data's CRC, and reads the used bytes.

    Returns:
      The records, concatenated, and each one's size in bytes [E].
    """
    e = record_EL.shape[0]
    data_used_EL = used_EL[:, 12:-4]
    lengths_E = data_used_EL.sum(axis=1)
    # Records of a kind have a few lengths only: a header per distinct length, then a gather.
    distinct, which_E = np.unique(lengths_E, return_inverse=True)
    headers = b"".join(map(_header, distinct.tolist()))
    record_EL[:, :12] = np.frombuffer(headers, np.uint8).reshape(-1, 12)[which_E.reshape(-1)]
    crcs = masked_crc32c(crc32c_many(record_EL[:, 12:-4][data_used_EL], lengths_E))
    record_EL[:, -4:] = crcs.astype("<u4").view(np.uint8).reshape(e, 4)
    return record_EL[used_EL].tobytes(), lengths_E + 16


def _split(records: bytes, sizes_E: np.ndarray, counts_R: np.ndarray) -> list[bytes]:
    """Consecutive records cut into R groups: the first counts_R[0] records, the next ..."""
    ends_E = np.concatenate([[0], np.cumsum(sizes_E)])
    bounds = ends_E[np.concatenate([[0], np.cumsum(counts_R)])].tolist()
    return [records[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@functools.lru_cache(maxsize=256)
def _summary_layout(tags: tuple[str, ...]) -> tuple:
    """The constant bytes of a Summary holding every tag, each Value's size, the columns of
    the values' 4 bytes and the tag of each column."""
    prefixes = []
    for tag in tags:
        name = tag.encode("utf-8")
        body = b"\x0a" + _varint(len(name)) + name + b"\x15"
        prefixes.append(b"\x0a" + _varint(len(body) + 4) + body)
    template = np.frombuffer(b"".join(p + b"\0\0\0\0" for p in prefixes), np.uint8)
    sizes_G = np.asarray([len(p) + 4 for p in prefixes], np.int64)
    value_cols = (np.cumsum(sizes_G)[:, None] - 4 + np.arange(4)[None, :]).ravel()
    col_tags = np.repeat(np.arange(len(tags)), sizes_G)
    return template, sizes_G, value_cols, col_tags


def scalar_events(
    wall_time: float,
    steps_E: np.ndarray,
    tags: Sequence[str],
    values_EG: np.ndarray,
    present_EG: np.ndarray | None = None,
) -> bytes:
    """TFRecords of scalar `Event`s, one per step, as tensorboardX would write them.

    Args:
      wall_time: the events' wall time (seconds since the epoch), the same for all.
      steps_E: each event's step (int64).
      tags: the G tags; an event holds its present tags in this order.
      values_EG: the values, stored as float32 (a float64 is rounded once, as protobuf does).
      present_EG: which tags each event holds (bool); None: all.
    Returns:
      The framed records, concatenated (empty for E = 0).
    """
    return _scalar_records(wall_time, steps_E, tags, values_EG, present_EG)[0]


def scalar_events_many(
    wall_time: float,
    counts_R: Sequence[int] | np.ndarray,
    steps_E: np.ndarray,
    tags: Sequence[str],
    values_EG: np.ndarray,
    present_EG: np.ndarray | None = None,
) -> list[bytes]:
    """`scalar_events` of R files at once (e.g. a chunk of every sweep point), in one pass.

    Args:
      wall_time: the events' wall time, the same for all.
      counts_R: events of each file: the first counts_R[0] events are file 0's, and so on
        (they sum to E; 0 gives that file b"").
      steps_E, tags, values_EG, present_EG: as `scalar_events` takes them, all files' events.
    Returns:
      R byte strings, file r's the bytes `scalar_events` gives for its events alone.
    """
    counts_R = np.asarray(counts_R, np.int64).reshape(-1)
    if int(counts_R.sum()) != np.size(steps_E):
        raise ValueError(
            f"counts sum to {int(counts_R.sum())}, there are {np.size(steps_E)} events"
        )
    records, sizes_E = _scalar_records(wall_time, steps_E, tags, values_EG, present_EG)
    return _split(records, sizes_E, counts_R)


def _scalar_records(wall_time, steps_E, tags, values_EG, present_EG) -> tuple[bytes, np.ndarray]:
    """`scalar_events`' records and each one's size in bytes [E]."""
    steps_E = np.asarray(steps_E, np.int64).reshape(-1)
    e = len(steps_E)
    if e == 0:
        return b"", np.zeros(0, np.int64)
    template, sizes_G, value_cols, col_tags = _summary_layout(tuple(tags))
    g = len(sizes_G)
    with np.errstate(over="ignore", invalid="ignore"):
        values_EG = np.asarray(values_EG, np.float32).reshape(e, g)
    if present_EG is None:
        present_EG = np.ones((e, g), bool)
    present_EG = np.asarray(present_EG, bool).reshape(e, g)
    step_bytes, step_used = _varints(steps_E.view(np.uint64))
    size_bytes, size_used = _varints(present_EG.astype(np.int64) @ sizes_G)
    k1, k2, v = step_bytes.shape[1], size_bytes.shape[1], len(template)
    # Columns: length, its CRC (12) | wall_time (9) | step key, varint (1 + k1) |
    # summary key, its size (1 + k2) | Values (v) | CRC (4).
    record_EL = np.empty((e, 12 + 9 + 1 + k1 + 1 + k2 + v + 4), np.uint8)
    used_EL = np.ones(record_EL.shape, bool)
    record_EL[:, 12:21] = np.frombuffer(b"\x09" + struct.pack("<d", wall_time), np.uint8)
    o = 21
    record_EL[:, o] = 0x10
    used_EL[:, o] = steps_E != 0  # proto3 leaves out a step of 0
    record_EL[:, o + 1 : o + 1 + k1] = step_bytes
    used_EL[:, o + 1 : o + 1 + k1] = step_used & used_EL[:, o : o + 1]
    o += 1 + k1
    record_EL[:, o] = 0x2A
    record_EL[:, o + 1 : o + 1 + k2] = size_bytes
    used_EL[:, o + 1 : o + 1 + k2] = size_used
    o += 1 + k2
    record_EL[:, o : o + v] = template
    record_EL[:, o + value_cols] = values_EG.astype("<f4").view(np.uint8).reshape(e, 4 * g)
    used_EL[:, o : o + v] = present_EG[:, col_tags]
    return _frame(record_EL, used_EL)


def frame_records(records: Sequence[bytes]) -> bytes:
    """TFRecords of serialized events (e.g. tensorboardX `Event.SerializeToString()`)."""
    return b"".join(frame_record_groups([records]))


def frame_record_groups(groups: Sequence[Sequence[bytes]]) -> list[bytes]:
    """`frame_records` of each group of serialized events, the CRCs of all in one call."""
    records = [r for group in groups for r in group]
    lengths = [len(r) for r in records]
    crcs = masked_crc32c(crc32c_many(b"".join(records), lengths)).tolist()
    out, k = [], 0
    for group in groups:
        parts = []
        for r in group:
            parts += [_header(lengths[k]), r, struct.pack("<I", crcs[k])]
            k += 1
        out.append(b"".join(parts))
    return out


def file_version_event(wall_time: float) -> bytes:
    """The TFRecord of an event file's first event: its wall time and "brain.Event:2"."""
    event = b"\x09" + struct.pack("<d", wall_time)
    event += b"\x1a" + _varint(len(_FILE_VERSION)) + _FILE_VERSION
    return frame_records([event])
