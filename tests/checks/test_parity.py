"""Online / offline parity on a real Redis: the simulation, the worked example,
broken paths that the check must catch, and a crash halfway through materialize."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from landing_factory import write_events

import pitstore.online.materialize as mat
from pitstore.checks.parity import ParityReport, check_online
from pitstore.checks.simulate import SimParams, run_simulation
from pitstore.core.config import Settings
from pitstore.core.feast_store import apply, get_store
from pitstore.core.spec import ACCOUNT_HOURLY, FEATURE_VIEWS, FRAUD_V1
from pitstore.core.timeutil import to_us
from pitstore.landing.zone import write_landing
from pitstore.online.codec import encode_rows
from pitstore.online.reader import OnlineReader, read_features
from pitstore.synth.generate import GeneratorParams, generate
from pitstore.transform.dbt_engine import transform_dbt
from tests.reference import Event

DAY0 = datetime(2026, 1, 5, tzinfo=UTC)
HOUR_US = 3_600_000_000


def client_for(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def materialize_all(settings: Settings, w: datetime) -> None:
    for view in FEATURE_VIEWS:
        mat.materialize_view(settings, view, w)


def feast_rule_materialize(settings: Settings, w: datetime) -> int:
    """A materializer with Feast 0.67's writer rule: skip a row whose event timestamp
    is not newer than the stored one. It loses restatements of the newest boundary."""
    client = mat.redis_client(settings)
    written = 0
    for view in FEATURE_VIEWS:
        marker = mat.MARKER.format(view=view.name)
        prev = client.get(marker)
        table = mat.as_known_rows(
            settings.offline_view_dir(view.name),
            view,
            to_us(w),
            None if prev is None else int(prev),
        )
        ts_field = f"_ts:{view.name}".encode()
        for key, mapping in encode_rows(view, table):
            stored = client.hget(key, ts_field)
            if stored is not None and Timestamp.FromString(stored).ToMicroseconds() >= (
                Timestamp.FromString(mapping[ts_field]).ToMicroseconds()
            ):
                continue
            client.hset(key, mapping=mapping)  # type: ignore[arg-type]
            written += 1
        client.set(marker, to_us(w))
    return written


# --- the simulation ------------------------------------------------------------------


def test_simulation_full_parity_every_run_and_broken_paths_fail(settings: Settings) -> None:
    params = SimParams(accounts=200, merchants=40, days=10)
    result = run_simulation(settings, params, days=6)
    assert len(result.runs) == 6
    for run in result.runs:
        p = run.parity
        assert p.passed, (run.watermark, p.failures, p.mismatches[:3])
        assert p.consistency == 1.0
    assert result.runs[-1].parity.entities == {"account_id": 200, "merchant_id": 40}
    # The world has a ledger too: credit_v1 is proven after every run as well.
    for run in result.runs:
        c = run.credit_parity
        assert c is not None and c.passed and c.compared > 0, (run.watermark, c)
    # The data really exercises the traps: restatements, of the newest boundary too.
    assert sum(r.rows_restated for r in result.runs) > 0
    assert sum(r.newest_restated for r in result.runs) > 0

    # (b) a serving-side TTL that differs from the spec: the check fails, clearly.
    last_w = datetime.fromisoformat(result.runs[-1].watermark)
    short = OnlineReader(FRAUD_V1, ttls={"account_hourly": timedelta(hours=6)})
    broken = check_online(settings, FRAUD_V1, last_w, reader=short)
    assert not broken.passed
    hourly = next(v for v in broken.views if v.view == "account_hourly")
    assert hourly.online_stale > hourly.offline_stale
    assert all(f.offline_only > 0 and f.mismatches == 0 for f in hourly.features)
    assert {m.kind for m in broken.mismatches} == {"offline_only"}
    md = ParityReport("parity", [broken]).to_markdown()
    assert "FAILED" in md and "offline_only" in md and "account_hourly" in md

    # (a) replay materialization with a writer that skips same-timestamp rows:
    # some run must fail, on a value mismatch with equal event timestamps.
    client_for(settings).flushdb()
    failed = []
    for run in result.runs:
        w = datetime.fromisoformat(run.watermark)
        feast_rule_materialize(settings, w)
        check = check_online(settings, FRAUD_V1, w)
        if not check.passed:
            failed.append(check)
    assert failed, "a materializer that drops newest-boundary restatements went unnoticed"
    m = failed[0].mismatches[0]
    assert m.kind == "value"
    assert m.online_event_timestamp == m.offline_event_timestamp
    assert m.offline_created_timestamp is not None
    assert m.offline_created_timestamp > m.offline_event_timestamp


# --- the DESIGN worked example, end to end ----------------------------------------


def worked_example_events() -> list[Event]:
    t = to_us(DAY0)

    def at(h: int, m: int) -> int:
        return t + h * HOUR_US + m * 60_000_000

    common = {"account_id": "A", "merchant_id": "M1", "country": "GB", "channel": "pos"}
    return [
        Event("e1", amount=500, event_us=at(10, 15), ingested_us=at(10, 16), **common),
        Event("e2", amount=1000, event_us=at(10, 40), ingested_us=at(10, 41), **common),
        Event("e1", amount=500, event_us=at(10, 15), ingested_us=at(12, 0), **common),
        Event("e3", amount=200, event_us=at(10, 50), ingested_us=at(13, 5), **common),
    ]


def hourly_triple(settings: Settings, at: datetime) -> tuple[tuple[object, ...], datetime | None]:
    row = read_features(
        client_for(settings), FRAUD_V1, [{"account_id": "A", "merchant_id": "M1"}], at
    )[0]
    names = ("txn_count_1h", "amount_sum_1h", "txn_count_24h")
    values = tuple(row.values[f"account_hourly__{n}"] for n in names)
    return values, row.views["account_hourly"].event_timestamp


def fresh_feast(settings: Settings):  # type: ignore[no-untyped-def]
    apply(settings)
    return get_store(settings)


def test_design_worked_example_against_real_redis(settings: Settings) -> None:
    write_events(settings.landing, DAY0, 2, worked_example_events())
    runs = [DAY0 + timedelta(hours=h) for h in (12, 13, 14)]
    t12 = DAY0 + timedelta(hours=12)
    expected = {12: (0, 0, 2), 13: (0, 0, 2), 14: (0, 0, 3)}
    # The same runs materialized by Feast's own `materialize`, into Redis database 1.
    feast_side = settings.model_copy(update={"redis_url": settings.redis_url[:-1] + "1"})
    store = fresh_feast(feast_side)
    client_for(feast_side).flushdb()
    previous = DAY0
    for w in runs:
        transform_dbt(settings, w)
        materialize_all(settings, w)
        values, ts = hourly_triple(settings, w)
        assert (values, ts) == (expected[w.hour], t12), w
        parity = check_online(settings, FRAUD_V1, w)
        assert parity.passed, parity.mismatches
        assert parity.entities["account_id"] == 1
        store.materialize(start_date=previous, end_date=w)
        previous = w

    # Feast's reader sees what pitstore wrote: (0, 0, 3) for T=12:00 after the 14:00 run.
    store = get_store(settings)
    refs = [f"account_hourly:{n}" for n in ("txn_count_1h", "amount_sum_1h", "txn_count_24h")]
    got = store.get_online_features(
        features=refs, entity_rows=[{"account_id": "A"}], full_feature_names=True
    ).to_dict()
    assert (
        got["account_hourly__txn_count_1h"][0],
        got["account_hourly__amount_sum_1h"][0],
        got["account_hourly__txn_count_24h"][0],
    ) == (0, 0, 3)

    # (a) Feast's own materialize: the 14:00 restatement of the newest boundary
    # (T=12:00, same event timestamp) never landed, and the parity check says so.
    values, ts = hourly_triple(feast_side, runs[-1])
    assert (values, ts) == ((0, 0, 2), t12)
    broken = check_online(feast_side, FRAUD_V1, runs[-1])
    assert not broken.passed
    bad = {m.feature: m for m in broken.mismatches if m.view == "account_hourly"}
    m = bad["txn_count_24h"]
    assert (m.kind, m.entity, m.online_value, m.offline_value) == (
        "value",
        {"account_id": "A"},
        2,
        3,
    )
    assert m.online_event_timestamp == m.offline_event_timestamp == t12.isoformat()
    assert m.offline_created_timestamp == runs[-1].isoformat()
    assert "amount_sum_1h" not in bad  # unchanged by the restatement: 0 both sides


# --- crash halfway, rerun heals; the fast reader equals Feast's reader -------------


class Crash(RuntimeError):
    pass


def test_crash_halfway_leaves_old_marker_and_rerun_heals(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = GeneratorParams(accounts=60, merchants=10, days=3, seed=11, start=DAY0)
    write_landing(generate(params), settings.landing)
    w1, w2 = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)
    transform_dbt(settings, w1)
    materialize_all(settings, w1)
    assert check_online(settings, FRAUD_V1, w1).passed
    transform_dbt(settings, w2)

    real_write = mat._write_batch
    calls = {"n": 0}

    def write_then_die(client, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise Crash("killed after the first batch")
        return real_write(client, batch)

    monkeypatch.setattr(mat, "BATCH", 5)
    monkeypatch.setattr(mat, "_write_batch", write_then_die)
    with pytest.raises(Crash):
        mat.materialize_view(settings, ACCOUNT_HOURLY, w2)
    assert calls["n"] == 2
    assert mat.materialized_watermark(settings, ACCOUNT_HOURLY) == w1
    half = check_online(settings, FRAUD_V1, w2)
    assert not half.passed  # the half-written state is not "done" and parity sees it
    hourly = next(v for v in half.views if v.view == "account_hourly")
    assert hourly.materialized_watermark == w1.isoformat()

    monkeypatch.undo()
    materialize_all(settings, w2)
    assert mat.materialized_watermark(settings, ACCOUNT_HOURLY) == w2
    healed = check_online(settings, FRAUD_V1, w2)
    assert healed.passed and healed.consistency == 1.0
    materialize_all(settings, w2)  # idempotent: a second run changes nothing
    assert check_online(settings, FRAUD_V1, w2).passed

    # The fast read path returns exactly what Feast's get_online_features returns.
    store = fresh_feast(settings)
    client = client_for(settings)
    rows = [{"account_id": f"A{i:06d}", "merchant_id": f"M{i % 12:05d}"} for i in range(64)]
    rows.append({"account_id": "nobody", "merchant_id": "nothing"})
    refs = [f"{v.name}:{f.name}" for v in FRAUD_V1.views for f in v.features]
    feast = store.get_online_features(
        features=refs, entity_rows=rows, full_feature_names=True
    ).to_dict()
    ours = read_features(client, FRAUD_V1, rows, w2, apply_ttl=False)
    present = 0
    for i, row in enumerate(ours):
        assert set(row.values) == set(feast) - {"account_id", "merchant_id"}
        for name, value in row.values.items():
            assert value == feast[name][i] and type(value) is type(feast[name][i]), (i, name)
            present += value is not None
    assert present > 0
    assert all(v is None for v in ours[-1].values.values())
    # TTL: long after the last run every value is stale, hence missing.
    late = read_features(client, FRAUD_V1, rows[:3], w2 + timedelta(days=60))
    for row in late:
        assert all(v is None for v in row.values.values())
        assert all(r.stale or r.event_timestamp is None for r in row.views.values())
    assert any(r.stale and r.age and r.age > timedelta(days=60) for r in late[1].views.values())


def test_credit_service_parity_after_ledger_runs(settings: Settings) -> None:
    """The ledger view is materialized and checked like any other: credit_v1's
    features online equal offline as_known after each run (restatements included)."""
    from spine_helpers import START, random_events, random_ledger

    from pitstore.core.spec import ACCOUNT_LEDGER_DAILY, CREDIT_V1

    tx, labels = random_events(4, days=4, n=40)
    ledger = random_ledger(4, days=4, n=120)
    write_events(settings.landing, START, 4, tx, labels, ledger=ledger)
    apply(settings)
    for days in (2, 3, 4):
        w = START + timedelta(days=days)
        transform_dbt(settings, w)
        materialize_all(settings, w)
        check = check_online(settings, CREDIT_V1, w)
        assert check.passed, check
        compared = {v.view: sum(f.compared for f in v.features) for v in check.views}
        assert compared[ACCOUNT_LEDGER_DAILY.name] > 0, compared
