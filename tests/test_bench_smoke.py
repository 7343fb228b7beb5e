"""Smoke test of the benchmark harness (the benchmarks themselves stay out of the suite).

Also pins the hand-written protobuf encoders in pitstore.materialize to the
real messages: Feast must read exactly what ``SerializeToString`` would write.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from pitstore.online.materialize import (
    _key_prefix,
    encode_double,
    encode_int64,
    encode_timestamp_us,
    entity_redis_key,
)


def test_hand_encoded_protos_match_protobuf() -> None:
    rng = random.Random(7)
    ints = [0, 1, 127, 128, 16383, 16384, 0x1FFFFF, 0x200000, -1, 2**63 - 1, -(2**63)]
    ints += [rng.randint(-(2**63), 2**63 - 1) for _ in range(2000)]
    ints += [rng.randint(0, 10**7) for _ in range(2000)]
    for v in ints:
        assert encode_int64(v) == Value(int64_val=v).SerializeToString(), v
    for x in [0.0, -0.0, 1.5, 1e300, -3.25, *(rng.random() * 1e9 for _ in range(500))]:
        assert encode_double(x) == Value(double_val=x).SerializeToString(), x
    assert encode_int64(None) == Value(int64_val=None).SerializeToString()
    for us in [0, 1, 999_999, 1_000_000, 1_767_225_600_000_000, -1, -1_500_000]:
        ts = Timestamp()
        ts.FromMicroseconds(us)
        assert encode_timestamp_us(us) == ts.SerializeToString(), us
    for value in ["A000001", "M00001", "é", "x" * 300]:
        raw = value.encode()
        key = _key_prefix("account_id") + struct.pack("<I", len(raw)) + raw + b"pitstore"
        assert key == entity_redis_key("account_id", value)


@pytest.mark.slow
def test_bench_harness_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.run import render_table, run_all

    # run_all sets PITSTORE_HOME/REDIS_URL for its own temporary data and Redis.
    monkeypatch.setenv("PITSTORE_HOME", str(tmp_path / "unused"))
    out = tmp_path / "latest.json"
    report = run_all("tiny", out, only=("materialize", "online"))
    saved = json.loads(out.read_text())
    assert saved["size"] == "tiny"
    assert {"machine", "data", "benchmarks", "total_s"} <= saved.keys()
    assert saved["machine"]["versions"]["feast"].startswith("0.")
    benches = saved["benchmarks"]
    mat = benches["materialize"]
    assert mat["measurable"] and mat["verified"], mat
    assert mat["entities"] > 0
    assert {"pitstore", "feast", "raw"} <= mat["timing"].keys()
    for key in ("online_1", "online_100"):
        r = benches[key]
        if not r["measurable"]:  # pitstore/online_read.py not there: say why
            assert r["reason"]
            continue
        assert r["verified"] and r["values_compared"] > 0
        for name in ("pitstore", "feast", "raw"):
            assert r["timing"][name]["p99_ms"] >= r["timing"][name]["p50_ms"] > 0
        assert isinstance(r["goal"]["met"], bool)
    assert "| 4 |" in render_table(report)
