"""A whole table's HSET arguments (key, then field/value pairs per row) as one
RESP buffer, ready to be sliced into batches for ``materialize``'s write script.

Row by row in Python (``codec.encode_rows`` then RESP) costs ~10-20 µs per
entity of a 12-feature view; a full materialization of 100k entities spent
~80% of its time there (profiled). Here the columns go to one compiled pass
(``pitstore.online.resp_kernel``) writing every row into one buffer, with each
row's end offset. Small tables (a daily materialization touches a few thousand
entities) take the row-wise path instead: below ``KERNEL_MIN_ROWS`` it is
faster than importing numba and loading the kernel. docs/decisions/
0003-resp-encode-kernel.md has the measurement behind keeping the kernel.

Both paths give exactly the bytes of ``codec.encode_rows`` as RESP bulk strings
(tested on random tables with nulls, negatives, zeros, NaN and large values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pitstore.core.spec import FeatureView
from pitstore.online.codec import encode_rows, entity_key_parts, ts_field, view_fields
from pitstore.online.reader import resp_bulk

KERNEL_MIN_ROWS = 20_000


@dataclass(frozen=True)
class HsetRows:
    """``n`` rows of HSET arguments (``args_per_row`` RESP bulk strings each: the
    key, then field/value pairs) in one buffer; row ``i`` ends at ``ends[i]``."""

    payload: memoryview
    ends: np.ndarray
    n: int
    args_per_row: int

    def batch(self, start: int, stop: int) -> memoryview:
        """Rows ``start..stop-1`` as one slice of the payload (no copy)."""
        lo = 0 if start == 0 else int(self.ends[start - 1])
        return self.payload[lo : int(self.ends[stop - 1])]


def _flat(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _present(arr: pa.Array) -> np.ndarray:
    return ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def args_per_row(view: FeatureView) -> int:
    """The key, ``_ts:<view>`` and its value, then a field and value per feature."""
    return 3 + 2 * len(view.features)


def _row_wise(view: FeatureView, table: pa.Table) -> HsetRows:
    rows = [
        resp_bulk(key) + b"".join(resp_bulk(f) + resp_bulk(v) for f, v in mapping.items())
        for key, mapping in encode_rows(view, table)
    ]
    ends = np.cumsum([len(r) for r in rows], dtype=np.int64)
    return HsetRows(memoryview(b"".join(rows)), ends, len(rows), args_per_row(view))


def hset_rows(view: FeatureView, table: pa.Table) -> HsetRows:
    """Per row of ``table``: ``key _ts:<view> <ts> <field> <value> ...`` in RESP.

    ``table`` holds the view's join key, ``event_timestamp`` and every feature.
    """
    n = table.num_rows
    if n == 0:
        return HsetRows(memoryview(b""), np.zeros(0, dtype=np.int64), 0, args_per_row(view))
    if n < KERNEL_MIN_ROWS:
        return _row_wise(view, table)
    from pitstore.online.resp_kernel import DOUBLE, INT64, encode_hsets

    keys = _flat(table.column(view.entity.join_key)).cast(pa.large_binary())
    if keys.null_count:
        raise ValueError(f"{view.entity.join_key}: a null entity key cannot be written to Redis")
    key_offsets = np.frombuffer(
        keys.buffers()[1], dtype=np.int64, count=n + 1, offset=keys.offset * 8
    )
    key_data = np.frombuffer(keys.buffers()[2] or b"\0", dtype=np.uint8)
    prefix, suffix = entity_key_parts(view.entity.join_key)
    stamps = _flat(table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")))
    if stamps.null_count:
        raise ValueError("a null event_timestamp cannot be written to Redis")
    ts_us = np.ascontiguousarray(stamps.cast(pa.int64()).to_numpy())
    features = view.features
    kinds = np.array([INT64 if f.dtype == "int64" else DOUBLE for f in features], dtype=np.int8)
    values = np.empty((len(features), n), dtype=np.int64)
    valid = np.empty((len(features), n), dtype=np.bool_)
    for i, f in enumerate(features):
        col = _flat(table.column(f.name))
        if f.dtype == "int64":
            col = col.cast(pa.int64())
            values[i] = col.fill_null(0).to_numpy()
        else:
            col = col.cast(pa.float64())
            values[i] = np.ascontiguousarray(col.fill_null(0.0).to_numpy(), "<f8").view(np.int64)
        valid[i] = _present(col)
    fields = [resp_bulk(name) for name in view_fields(view)]
    field_offsets = np.cumsum([0] + [len(f) for f in fields]).astype(np.int64)
    head = b""  # rows are arguments of the batch's script call, not commands
    ts_bulk = resp_bulk(ts_field(view.name))
    # Upper bound per row: RESP lengths <= 20 digits, a Timestamp <= 17 bytes,
    # a Value <= 11 bytes.
    per_row = (
        len(head)
        + 25
        + len(prefix)
        + 4
        + len(suffix)
        + len(ts_bulk)
        + 25
        + 17
        + int(field_offsets[-1])
        + len(features) * (25 + 11)
    )
    out = np.empty(n * per_row + int(key_offsets[-1] - key_offsets[0]), dtype=np.uint8)
    ends = np.empty(n, dtype=np.int64)
    u8 = np.uint8
    size = encode_hsets(
        np.frombuffer(head, u8),
        key_offsets,
        key_data,
        np.frombuffer(prefix, u8),
        np.frombuffer(suffix, u8),
        np.frombuffer(ts_bulk, u8),
        ts_us,
        kinds,
        values,
        valid,
        np.frombuffer(b"".join(fields), u8),
        field_offsets,
        out,
        ends,
    )
    return HsetRows(memoryview(out[:size].data), ends, n, args_per_row(view))
