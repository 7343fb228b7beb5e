"""The key-sorted copy (``training.compact``) answers exactly like the DuckDB path.

Every test builds a store of run files, joins it without the copy (the DuckDB
path), with a copy of every run, and with a copy of only the older runs (the
newer run files then go through the DuckDB path and the answers are merged),
and requires byte-identical tables, the same files read and the same unknown
entity counts.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_training_joins import (
    HOURLY_ROW,
    ONE_VIEW,
    START,
    oracle,
    random_requests,
    random_store,
    write_store,
)

import pitstore.training.joins
from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_DAILY, ACCOUNT_HOURLY, FRAUD_V1, FeatureService
from pitstore.training.compact import compact_root, compact_store, compact_view
from pitstore.training.joins import TS, JoinResult, StoreError, feature_columns, point_in_time_join
from pitstore.training.sorted_join import open_compact


def join(
    home: Path,
    requests: pd.DataFrame,
    service: FeatureService,
    mode: str,
    compacted: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> JoinResult:
    monkeypatch.setattr(pitstore.training.joins, "USE_COMPACT", compacted)
    req = pa.Table.from_pandas(requests, preserve_index=False)
    return point_in_time_join(Settings(pitstore_home=home), req, service, mode)


def assert_same(a: JoinResult, b: JoinResult) -> None:
    assert a.table.schema == b.table.schema
    for name in a.table.column_names:
        x, y = a.table.column(name), b.table.column(name)
        assert x.equals(y), name
    assert a.table.equals(b.table)
    assert a.files_read == b.files_read
    assert a.unknown_entities == b.unknown_entities


def requests_frame(rows: list[tuple[str, str, object]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["account_id", "merchant_id", TS])
    df[TS] = df[TS].astype("datetime64[us, UTC]")
    return df


def split_by_w(store: dict[str, list[dict]], cut: object) -> tuple[dict, dict]:
    old = {v: [r for r in rs if r["W"] <= cut] for v, rs in store.items()}
    new = {v: [r for r in rs if r["W"] > cut] for v, rs in store.items()}
    return old, new


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_compacted_equals_duckdb_path(tmp_path, monkeypatch, seed, mode):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    store = random_store(rng, FRAUD_V1.views, entities=6, runs=10, run_every=timedelta(hours=7))
    end = START + 10 * timedelta(hours=7)
    requests = random_requests(rng, store, 300, end)
    # Keys the store never saw (A5 may be absent too), and TTL edges.
    extra = [("A99", "M99", START + timedelta(hours=20)), ("A99", "M0", end)]
    for view in FRAUD_V1.views:
        for r in rng.sample(store[view.name], 5):
            a = r["key"] if view.entity.join_key == "account_id" else "A0"
            m = r["key"] if view.entity.join_key == "merchant_id" else "M0"
            for ts in (r["T"], r["T"] + view.ttl, r["T"] + view.ttl + timedelta(microseconds=1)):
                extra.append((a, m, ts))
            extra.append((a, m, r["T"] - timedelta(microseconds=1)))
    requests = pd.concat([requests, requests_frame(extra)], ignore_index=True)
    home = tmp_path / "h"
    cut = START + 6 * timedelta(hours=7)
    old, new = split_by_w(store, cut)
    write_store(home, old)
    settings = Settings(pitstore_home=home)
    assert all(s.compacted for s in compact_store(settings, FRAUD_V1.views))
    write_store(home, new)  # runs after the compaction
    for view in FRAUD_V1.views:
        c = open_compact(settings, view)
        assert c is not None and len(c.new_files) == 4
    plain = join(home, requests, FRAUD_V1, mode, False, monkeypatch)
    calls: list[str] = []
    real = pitstore.training.joins.join_view_sorted

    def counted(compact, newer, view, *args):  # type: ignore[no-untyped-def]
        got = real(compact, newer, view, *args)
        calls.append(view.name if got is not None else "fallback")
        return got

    monkeypatch.setattr(pitstore.training.joins, "join_view_sorted", counted)
    partly = join(home, requests, FRAUD_V1, mode, True, monkeypatch)
    assert sorted(calls) == sorted(v.name for v in FRAUD_V1.views)
    assert_same(partly, plain)
    assert all(s.compacted for s in compact_store(settings, FRAUD_V1.views))
    whole = join(home, requests, FRAUD_V1, mode, True, monkeypatch)
    assert_same(whole, plain)
    assert plain.unknown_entities["account_hourly"] > 0
    # And both equal the brute-force oracle.
    got = whole.table.to_pandas()
    want = oracle(store, requests, FRAUD_V1, mode)
    cols = feature_columns(FRAUD_V1)
    pd.testing.assert_frame_equal(
        got[cols].astype("float64"), want[cols].astype("float64"), check_dtype=False
    )


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_nulls_and_restatements(tmp_path, monkeypatch, mode):  # type: ignore[no-untyped-def]
    """Null feature values survive; a restatement with nulls replaces values."""
    h = timedelta(hours=1)
    feats = ACCOUNT_HOURLY.features

    def vals(x: int | None) -> dict:
        def one(i: int, dtype: str) -> float | None:
            if x is None and i % 2:
                return None
            return (x or 0) * (1 if dtype == "int64" else 0.5)

        return {f.name: one(i, f.dtype) for i, f in enumerate(feats)}

    rows = [
        {"key": "A0", "T": START + 2 * h, "W": START + 3 * h, "values": vals(1)},
        {"key": "A0", "T": START + 2 * h, "W": START + 5 * h, "values": vals(None)},
        {"key": "A0", "T": START + 3 * h, "W": START + 3 * h, "values": vals(2)},
        {"key": "A1", "T": START + 1 * h, "W": START + 4 * h, "values": vals(None)},
        {"key": "A1", "T": START + 4 * h, "W": START + 4 * h, "values": vals(3)},
    ]
    home = tmp_path / "h"
    write_store(home, {ACCOUNT_HOURLY.name: rows})
    reqs = requests_frame(
        [
            (a, "M0", START + timedelta(minutes=m))
            for a in ("A0", "A1", "A2")
            for m in range(0, 60 * 30, 37)
        ]
    )
    plain = join(home, reqs, ONE_VIEW, mode, False, monkeypatch)
    assert compact_view(Settings(pitstore_home=home), ACCOUNT_HOURLY).compacted
    compacted = join(home, reqs, ONE_VIEW, mode, True, monkeypatch)
    assert_same(compacted, plain)
    assert compacted.table.column(f"{ACCOUNT_HOURLY.name}__{feats[1].name}").null_count > 0


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
@pytest.mark.parametrize("where", ["copy", "newer", "across"])
def test_duplicate_versions_raise(tmp_path, monkeypatch, mode, where):  # type: ignore[no-untyped-def]
    values = {f.name: 1 if f.dtype == "int64" else 0.5 for f in ACCOUNT_HOURLY.features}
    w = START + timedelta(hours=5)
    row = {"key": "A0", "T": START + timedelta(hours=3), "W": w, "values": values}
    dup = {**row, "values": {**values, "txn_count_1h": 2}}
    home = tmp_path / "h"
    settings = Settings(pitstore_home=home)
    out = home / "offline" / ACCOUNT_HOURLY.name
    if where == "copy":
        write_store(home, {ACCOUNT_HOURLY.name: [row, dup]})
        summary = compact_view(settings, ACCOUNT_HOURLY)
        assert not summary.compacted and "two rows" in summary.reason
        assert open_compact(settings, ACCOUNT_HOURLY) is None
    else:
        write_store(home, {ACCOUNT_HOURLY.name: [row]})
        assert compact_view(settings, ACCOUNT_HOURLY).compacted
        extra = out / "late.parquet"
        late = [dup] if where == "across" else [row, dup]
        write_store(tmp_path / "x", {ACCOUNT_HOURLY.name: late})
        shutil.copy(next((tmp_path / "x" / "offline" / ACCOUNT_HOURLY.name).glob("*")), extra)
        assert open_compact(settings, ACCOUNT_HOURLY) is not None
    reqs = requests_frame([("A0", "M0", w + timedelta(hours=2))])
    with pytest.raises(StoreError, match="same"):
        join(home, reqs, ONE_VIEW, mode, True, monkeypatch)


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_event_after_created_is_not_compacted(tmp_path, monkeypatch, mode):  # type: ignore[no-untyped-def]
    values = {f.name: 1 if f.dtype == "int64" else 0.5 for f in ACCOUNT_HOURLY.features}
    w = START + timedelta(hours=5)
    rows = [
        {"key": "A0", "T": START + timedelta(hours=3), "W": w, "values": values},
        {"key": "A0", "T": w + timedelta(hours=1), "W": w, "values": values},
    ]
    home = tmp_path / "h"
    write_store(home, {ACCOUNT_HOURLY.name: rows})
    summary = compact_view(Settings(pitstore_home=home), ACCOUNT_HOURLY)
    assert not summary.compacted and "event after created" in summary.reason
    reqs = requests_frame([("A0", "M0", w + timedelta(hours=2))])
    with pytest.raises(StoreError, match="T <= W"):
        join(home, reqs, ONE_VIEW, mode, True, monkeypatch)


@pytest.mark.parametrize("mode", ["as_known", "as_of"])
def test_unsorted_newer_file_takes_the_duckdb_path(tmp_path, monkeypatch, mode):  # type: ignore[no-untyped-def]
    rng = random.Random(9)
    store = random_store(rng, (ACCOUNT_HOURLY,), entities=5, runs=6, run_every=timedelta(hours=5))
    old, new = split_by_w(store, START + timedelta(hours=20))
    home = tmp_path / "h"
    write_store(home, old)
    settings = Settings(pitstore_home=home)
    assert compact_view(settings, ACCOUNT_HOURLY).compacted
    write_store(home, new)
    for path in open_compact(settings, ACCOUNT_HOURLY).new_files:  # type: ignore[union-attr]
        table = pq.read_table(path)
        pq.write_table(table.take(list(range(table.num_rows))[::-1]), path)  # reversed
    reqs = random_requests(rng, store, 200, START + timedelta(hours=30))
    plain = join(home, reqs, ONE_VIEW, mode, False, monkeypatch)
    compacted = join(home, reqs, ONE_VIEW, mode, True, monkeypatch)
    assert_same(compacted, plain)


def test_changed_run_file_invalidates_the_copy(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    store = random_store(rng, (ACCOUNT_DAILY,), entities=4, runs=4, run_every=timedelta(days=1))
    home = tmp_path / "h"
    write_store(home, store)
    settings = Settings(pitstore_home=home)
    assert compact_view(settings, ACCOUNT_DAILY).compacted
    assert open_compact(settings, ACCOUNT_DAILY) is not None
    files = sorted((home / "offline" / ACCOUNT_DAILY.name).glob("*.parquet"))
    # A rewritten run file (another size): the copy no longer covers the store.
    table = pq.read_table(files[0])
    pq.write_table(table.slice(0, max(table.num_rows - 1, 0)), files[0])
    assert open_compact(settings, ACCOUNT_DAILY) is None
    service = FeatureService("daily_only", (ACCOUNT_DAILY,), "test")
    reqs = requests_frame([(f"A{i}", "M0", START + timedelta(days=3, hours=i)) for i in range(4)])
    plain = join(home, reqs, service, "as_of", False, monkeypatch)
    fallback = join(home, reqs, service, "as_of", True, monkeypatch)
    assert_same(fallback, plain)
    # Recompacting covers it again; a deleted run file invalidates it too.
    assert compact_view(settings, ACCOUNT_DAILY).compacted
    assert_same(join(home, reqs, service, "as_of", True, monkeypatch), plain)
    files[0].unlink()
    assert open_compact(settings, ACCOUNT_DAILY) is None
    # Only one published version is kept.
    assert len([p for p in compact_root(settings, ACCOUNT_DAILY).iterdir() if p.is_dir()]) == 1


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(HOURLY_ROW, min_size=1, max_size=40),
    req=st.lists(
        st.tuples(st.integers(0, 3), st.integers(-3_600, 80 * 3_600)),
        min_size=1,
        max_size=25,
        unique=True,
    ),
    cut=st.integers(0, 70),
)
def test_property_compacted_equals_duckdb(rows, req, cut):  # type: ignore[no-untyped-def]
    """rows: (account, T hour, W - T in hours, value); copy of the runs up to ``cut``."""
    store, seen = {"account_hourly": []}, set()
    for acct, t_h, lag, val in rows:
        t = START + timedelta(hours=t_h)
        w = t + timedelta(hours=lag)
        if (acct, t, w) in seen:
            continue
        seen.add((acct, t, w))
        values = {f.name: (val if f.dtype == "int64" else val / 2) for f in ACCOUNT_HOURLY.features}
        store["account_hourly"].append({"key": f"A{acct}", "T": t, "W": w, "values": values})
    requests = requests_frame([(f"A{a}", "M0", START + timedelta(seconds=s)) for a, s in req])
    old, new = split_by_w(store, START + timedelta(hours=cut))
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        home = Path(tmp)
        write_store(home, old)
        compact_view(Settings(pitstore_home=home), ACCOUNT_HOURLY)
        write_store(home, new)
        for mode in ("as_known", "as_of"):
            plain = join(home, requests, ONE_VIEW, mode, False, mp)
            compacted = join(home, requests, ONE_VIEW, mode, True, mp)
            assert_same(compacted, plain)


def test_command_line_compacts_every_view(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from pitstore.cli.app import app

    rng = random.Random(3)
    write_store(tmp_path, random_store(rng, FRAUD_V1.views, 3, 3, timedelta(hours=9)))
    monkeypatch.setenv("PITSTORE_HOME", str(tmp_path))
    bad = CliRunner().invoke(app, ["compact", "no_such_view"])
    assert bad.exit_code == 2 and "no_such_view" in bad.output
    settings = Settings(pitstore_home=tmp_path)
    assert all(open_compact(settings, v) is None for v in FRAUD_V1.views)
    out = CliRunner().invoke(app, ["compact"])
    assert out.exit_code == 0, out.output
    assert all(v.name in out.output for v in FRAUD_V1.views)
    assert all(open_compact(settings, v) is not None for v in FRAUD_V1.views)
