"""pitstore.online.codec against the real thing: protobuf's own serializer,
Feast's public entity-key serializer, and Feast's reader on a real Redis."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from pitstore.core.config import Settings
from pitstore.core.feast_store import FEAST_PROJECT, apply, get_store
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.online import codec


def feast_entity_key(join_key: str, value: str) -> bytes:
    """Feast's Redis key, built from Feast's own serializer (version 3) + project."""
    proto = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
    return serialize_entity_key(proto, entity_key_serialization_version=3) + FEAST_PROJECT.encode()


def test_values_match_protobuf() -> None:
    rng = random.Random(7)
    ints = [0, 1, 127, 128, 16383, 16384, 0x1FFFFF, 0x200000, -1, 2**63 - 1, -(2**63)]
    ints += [rng.randint(-(2**63), 2**63 - 1) for _ in range(2000)]
    ints += [rng.randint(0, 10**7) for _ in range(2000)]
    for v in ints:
        raw = codec.encode_int64(v)
        assert raw == Value(int64_val=v).SerializeToString(), v
        assert codec.decode_value(raw, is_float=False) == v
    floats = [0.0, -0.0, 1.5, 1e300, -3.25, float("inf")]
    for x in [*floats, *(rng.random() * 1e9 for _ in range(500))]:
        raw = codec.encode_double(x)
        assert raw == Value(double_val=x).SerializeToString(), x
        assert codec.decode_value(raw, is_float=True) == x
    assert codec.encode_int64(None) == codec.encode_double(None) == Value().SerializeToString()
    assert codec.decode_value(b"", is_float=False) is None
    for us in [0, 1, 999_999, 1_000_000, 1_767_225_600_000_000, -1, -1_500_000]:
        ts = Timestamp()
        ts.FromMicroseconds(us)
        assert codec.encode_timestamp_us(us) == ts.SerializeToString(), us
        assert codec.decode_timestamp_us(ts.SerializeToString()) == us


def test_entity_keys_match_feast_serializer() -> None:
    for value in ["A000001", "M00001", "", "é", "Ünïcode-ключ", "x" * 300]:
        for join_key in ("account_id", "merchant_id"):
            key = codec.entity_key(join_key, value)
            assert key == feast_entity_key(join_key, value), (join_key, value)
            assert codec.entity_value(join_key, key) == value
    other = codec.entity_key("merchant_id", "M1")
    assert codec.entity_value("account_id", other) is None
    assert codec.entity_value("merchant_id", other + b"x") is None


def random_view_table(rng: random.Random, view, keys: list[str], at: datetime) -> pa.Table:  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        view.entity.join_key: keys,
        "event_timestamp": [at - timedelta(microseconds=rng.randrange(10**10)) for _ in keys],
    }
    for f in view.features:
        if f.dtype == "int64":
            pool = [None, 0, 1, 200, 16384, -5, 2**40, -(2**63)]
            data[f.name] = pa.array([rng.choice(pool) for _ in keys], pa.int64())
        else:
            pool = [None, 0.0, -0.0, 1.5, 1e300, -2.25]
            data[f.name] = pa.array([rng.choice(pool) for _ in keys], pa.float64())
    return pa.table(data)


def test_feast_reads_what_the_codec_writes(settings: Settings) -> None:
    """Write every view with the codec (plain HSETs), read with Feast's
    get_online_features: every value, null and type as written."""
    apply(settings)
    store = get_store(settings)
    client = redis.Redis.from_url(settings.redis_url)
    rng = random.Random(3)
    at = datetime(2026, 1, 10, tzinfo=UTC)
    for view in FEATURE_VIEWS:
        prefix = "A" if view.entity.join_key == "account_id" else "M"
        keys = [f"{prefix}{i:05d}" for i in range(40)] + ["Ünï-ключ"]
        table = random_view_table(rng, view, keys, at)
        for key, mapping in codec.encode_rows(view, table):
            client.hset(key, mapping=mapping)  # type: ignore[arg-type]
        got = store.get_online_features(
            features=[f"{view.name}:{f.name}" for f in view.features],
            entity_rows=[{view.entity.join_key: k} for k in keys + ["absent"]],
            full_feature_names=True,
        ).to_dict()
        for f in view.features:
            want = table.column(f.name).to_pylist() + [None]
            assert got[f"{view.name}__{f.name}"] == want, (view.name, f.name)
