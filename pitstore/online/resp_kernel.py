"""The compiled (numba) loop behind ``pitstore.online.resp_encode``: one pass that
writes every row's HSET arguments (key, fields, values) of a table into one buffer.

The bytes are those of ``pitstore.online.codec`` (keys and field names come in
precomputed from it, the protobuf tags are its constants); ``tests/
test_resp_encode.py`` compares the output with the codec's row-wise encoding.

Kept apart so numba is imported only by the materializer, and compiled once per
installation (``cache=True`` keeps the machine code in ``__pycache__``; where
that is not writable numba warns and compiles per process, ~1 s).
"""

from __future__ import annotations

import numba
import numpy as np

from pitstore.online.codec import DOUBLE_TAG, INT64_TAG, TS_NANOS_TAG, TS_SECONDS_TAG

# The protobuf tags come from the codec (numba freezes module globals at compile time).
INT64, DOUBLE = 0, 1


@numba.njit(cache=True, nogil=True)
def _put(out, pos, data):  # type: ignore[no-untyped-def]
    for i in range(data.shape[0]):
        out[pos + i] = data[i]
    return pos + data.shape[0]


@numba.njit(cache=True, nogil=True)
def _varint_len(u):  # type: ignore[no-untyped-def]
    n = 1
    while u > 0x7F:
        u >>= 7
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _put_varint(out, pos, u):  # type: ignore[no-untyped-def]
    while u > 0x7F:
        out[pos] = (u & 0x7F) | 0x80
        u >>= 7
        pos += 1
    out[pos] = u
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _put_decimal(out, pos, v):  # type: ignore[no-untyped-def]
    """``v >= 0`` as ASCII digits (RESP lengths)."""
    digits = 1
    t = v
    while t >= 10:
        t //= 10
        digits += 1
    for i in range(digits - 1, -1, -1):
        out[pos + i] = 48 + v % 10
        v //= 10
    return pos + digits


@numba.njit(cache=True, nogil=True)
def _put_bulk_head(out, pos, length):  # type: ignore[no-untyped-def]
    out[pos] = 36  # "$"
    pos = _put_decimal(out, pos + 1, length)
    out[pos] = 13
    out[pos + 1] = 10
    return pos + 2


@numba.njit(cache=True, nogil=True)
def _put_crlf(out, pos):  # type: ignore[no-untyped-def]
    out[pos] = 13
    out[pos + 1] = 10
    return pos + 2


@numba.njit(cache=True, nogil=True)
def encode_hsets(  # type: ignore[no-untyped-def]
    head,
    key_offsets,
    key_data,
    key_prefix,
    key_suffix,
    ts_field,
    ts_us,
    kinds,
    values,
    valid,
    field_data,
    field_offsets,
    out,
    ends,
):
    """Write row ``r``'s RESP arguments into ``out`` and its end offset into
    ``ends[r]``; returns the bytes written. ``out`` must hold the caller's upper bound.

    Per row: ``head`` (may be empty); the key as a bulk string
    (``key_prefix``, the value's length as little-endian uint32, the value,
    ``key_suffix``); ``ts_field`` (a bulk string) and the protobuf Timestamp
    (field 1 seconds, field 2 nanos, each only when non-zero); then per feature
    its bulk field name and its protobuf Value: ``INT64_TAG`` + varint for int64,
    ``DOUBLE_TAG`` + 8 little-endian bytes for a double (``values`` holds the bits),
    nothing for a null.
    """
    pos = 0
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    for r in range(ts_us.shape[0]):
        pos = _put(out, pos, head)
        lo, hi = key_offsets[r], key_offsets[r + 1]
        klen = hi - lo
        pos = _put_bulk_head(out, pos, key_prefix.shape[0] + 4 + klen + key_suffix.shape[0])
        pos = _put(out, pos, key_prefix)
        for b in range(4):
            out[pos + b] = (klen >> (8 * b)) & 0xFF
        pos += 4
        for i in range(klen):
            out[pos + i] = key_data[lo + i]
        pos += klen
        pos = _put(out, pos, key_suffix)
        pos = _put_crlf(out, pos)

        pos = _put(out, pos, ts_field)
        seconds = ts_us[r] // 1_000_000  # floor, as Python's divmod
        nanos = (ts_us[r] - seconds * 1_000_000) * 1000
        useconds = np.uint64(seconds) & mask
        unanos = np.uint64(nanos)
        size = 0
        if seconds != 0:
            size += 1 + _varint_len(useconds)
        if nanos != 0:
            size += 1 + _varint_len(unanos)
        pos = _put_bulk_head(out, pos, size)
        if seconds != 0:
            out[pos] = TS_SECONDS_TAG
            pos = _put_varint(out, pos + 1, useconds)
        if nanos != 0:
            out[pos] = TS_NANOS_TAG
            pos = _put_varint(out, pos + 1, unanos)
        pos = _put_crlf(out, pos)

        for f in range(kinds.shape[0]):
            pos = _put(out, pos, field_data[field_offsets[f] : field_offsets[f + 1]])
            if not valid[f, r]:
                pos = _put_bulk_head(out, pos, 0)
            elif kinds[f] == 0:
                u = np.uint64(values[f, r]) & mask
                pos = _put_bulk_head(out, pos, 1 + _varint_len(u))
                out[pos] = INT64_TAG
                pos = _put_varint(out, pos + 1, u)
            else:
                pos = _put_bulk_head(out, pos, 9)
                out[pos] = DOUBLE_TAG
                bits = np.uint64(values[f, r]) & mask
                for b in range(8):
                    out[pos + 1 + b] = (bits >> np.uint64(8 * b)) & np.uint64(0xFF)
                pos += 9
            pos = _put_crlf(out, pos)
        ends[r] = pos
    return pos
