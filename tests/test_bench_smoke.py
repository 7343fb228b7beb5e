"""Smoke test of the benchmark harness (the benchmarks themselves stay out of the suite).

(The hand-written protobuf encoders are pinned in tests/test_codec.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
