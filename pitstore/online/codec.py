"""Feast's Redis online-store format, in one place: keys, hash fields, values.

Feast documents the layout ("Feast Online Store Format", docs/specs/
online_store_format.md): one Redis hash per (project, entity key); per feature
a field named by the little-endian bytes of ``Murmur3_32("<view>:<feature>")``
holding a serialized ``feast.types.Value``; and a field ``_ts:<view>`` holding
the row's event timestamp as a serialized ``google.protobuf.Timestamp``.

The key is where the document lags the code: it still describes a
``RedisKeyV2`` proto, while Feast's Python SDK (0.67, what we run) keys a hash
by ``serialize_entity_key(..., version 3)`` followed by the project's UTF-8
bytes. We follow the SDK; ``tests/test_codec.py`` writes with this module and
reads with ``FeatureStore.get_online_features`` so a drift in either shows up.

Serialization v3 of one string join key ``k`` with value ``v``::

    <u32 1 (key count)> <u32 2 (STRING)> <u32 len(k)> k <u32 2 (STRING)> <u32 len(v)> v

all little-endian. Values are protobufs encoded by hand (byte-identical to
``SerializeToString``, pinned by tests): per-row protobuf objects cost more than
the rest of a materialization. Everything here is pure; Redis I/O lives in
``reader`` / ``materialize``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from typing import Any

import mmh3
import pyarrow as pa
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from pitstore.core.feast_store import FEAST_PROJECT
from pitstore.core.spec import FeatureView

STRING_TYPE = 2  # feast ValueType.STRING, the type of every pitstore join key
# Protobuf tags (field number << 3 | wire type) of the encodings we write.
INT64_TAG = 0x20  # Value.int64_val = 4, varint
DOUBLE_TAG = 0x29  # Value.double_val = 5, fixed64
TS_SECONDS_TAG = 0x08  # Timestamp.seconds = 1, varint
TS_NANOS_TAG = 0x10  # Timestamp.nanos = 2, varint

_u32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_unpack_double = struct.Struct("<d").unpack_from
_SMALL_INT64 = tuple(bytes((INT64_TAG, i)) for i in range(128))


# --- keys ---------------------------------------------------------------------


@functools.cache  # on the read path per row: build each join key's parts once
def entity_key_parts(join_key: str) -> tuple[bytes, bytes]:
    """The Redis key of a single string join key around its value: the bytes
    before the value's little-endian u32 length, and the bytes after the value."""
    k = join_key.encode()
    prefix = _u32(1) + _u32(STRING_TYPE) + _u32(len(k)) + k + _u32(STRING_TYPE)
    return prefix, FEAST_PROJECT.encode()


def entity_key(join_key: str, value: str) -> bytes:
    """The Redis key of the hash holding ``join_key = value``'s features."""
    prefix, suffix = entity_key_parts(join_key)
    v = value.encode()
    return prefix + _u32(len(v)) + v + suffix


def entity_value(join_key: str, key: bytes) -> str | None:
    """The inverse of ``entity_key``: the entity value, or None for a key of
    another join key / project (a SCAN finds those too)."""
    prefix, suffix = entity_key_parts(join_key)
    start = len(prefix) + 4
    if not key.startswith(prefix) or len(key) < start + len(suffix):
        return None
    n = int.from_bytes(key[len(prefix) : start], "little")
    if start + n + len(suffix) != len(key) or not key.endswith(suffix):
        return None
    return key[start : start + n].decode()


# --- hash fields --------------------------------------------------------------


def feature_field(view_name: str, feature_name: str) -> bytes:
    """The hash field of one feature: murmur3_32 (seed 0, unsigned) of
    ``"<view>:<feature>"``, as 4 little-endian bytes."""
    return _u32(mmh3.hash(f"{view_name}:{feature_name}", signed=False))


def ts_field(view_name: str) -> bytes:
    """The hash field holding the view's event timestamp."""
    return f"_ts:{view_name}".encode()


def view_fields(view: FeatureView) -> list[bytes]:
    """The feature fields of ``view``, in feature order."""
    return [feature_field(view.name, f.name) for f in view.features]


# --- values -------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a 64-bit integer (negatives as two's complement)."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_int64(value: int | None) -> bytes:
    """``Value(int64_val=value)``; None is the unset Value (empty bytes)."""
    if value is None:
        return b""
    if 0 <= value < 0x80:
        return _SMALL_INT64[value]
    if 0 < value < 0x4000:  # two-byte varint, the common case for counts and amounts
        return bytes((INT64_TAG, (value & 0x7F) | 0x80, value >> 7))
    return bytes((INT64_TAG,)) + varint(value)


def encode_double(value: float | None) -> bytes:
    """``Value(double_val=value)``; None is the unset Value."""
    if value is None:
        return b""
    return bytes((DOUBLE_TAG,)) + _pack_double(value)


def encode_timestamp_us(micros: int) -> bytes:
    """``Timestamp`` of epoch microseconds (seconds floored, nanos >= 0; zero
    fields omitted, as protobuf does)."""
    seconds, rest = divmod(micros, 1_000_000)
    out = bytes((TS_SECONDS_TAG,)) + varint(seconds) if seconds else b""
    return out + bytes((TS_NANOS_TAG,)) + varint(rest * 1000) if rest else out


def decode_timestamp_us(raw: bytes) -> int:
    t = Timestamp.FromString(raw)
    return int(t.seconds) * 1_000_000 + int(t.nanos) // 1000


def decode_value(raw: bytes, is_float: bool) -> Any:
    """A stored Value as Python (what Feast returns): fast paths for a fixed64
    double and a 1-3 byte int64 varint, the protobuf parser for the rest."""
    n = len(raw)
    if is_float:
        if n == 9 and raw[0] == DOUBLE_TAG:
            return _unpack_double(raw, 1)[0]
    elif n and raw[0] == INT64_TAG and n <= 4:
        if n == 2:
            return raw[1]
        if n == 3 and raw[1] & 0x80:
            return (raw[1] & 0x7F) | raw[2] << 7
        if n == 4 and raw[1] & raw[2] & 0x80:
            return (raw[1] & 0x7F) | (raw[2] & 0x7F) << 7 | raw[3] << 14
    proto = Value.FromString(raw)
    kind = proto.WhichOneof("val")
    return None if kind is None else getattr(proto, kind)


# --- whole rows ---------------------------------------------------------------


def encode_rows(view: FeatureView, table: pa.Table) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Each row's Redis key and hash: ``_ts:<view>`` then one field per feature.

    ``table`` holds the view's join key, ``event_timestamp`` and every feature.
    """
    join_key = view.entity.join_key
    if table.column(join_key).null_count:
        raise ValueError(f"{join_key}: a null entity key cannot be written to Redis")
    stamps_col = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC"))
    if stamps_col.null_count:
        raise ValueError("a null event_timestamp cannot be written to Redis")
    stamps = stamps_col.cast(pa.int64()).to_pylist()
    ts = ts_field(view.name)
    encoders = [encode_int64 if f.dtype == "int64" else encode_double for f in view.features]
    plan = list(
        zip(
            view_fields(view),
            encoders,
            [table.column(f.name).to_pylist() for f in view.features],
            strict=True,
        )
    )
    prefix, suffix = entity_key_parts(join_key)
    for i, entity in enumerate(table.column(join_key).to_pylist()):
        v = entity.encode()
        mapping = {ts: encode_timestamp_us(stamps[i])}
        for field, encode, column in plan:
            mapping[field] = encode(column[i])
        yield prefix + _u32(len(v)) + v + suffix, mapping
