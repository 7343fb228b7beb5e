"""The dbt engine's offline rows equal the brute-force oracle, run after run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from landing_factory import TX_SCHEMA, tx_row, write_events
from spine_helpers import DAY, HOUR, START, offline_rows, random_events

from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_HOURLY, FEATURE_VIEWS
from pitstore.core.timeutil import from_us, to_us
from pitstore.transform.dbt_engine import transform_dbt
from tests import reference
from tests.reference import Event


def run_and_compare(settings: Settings, events, labels, watermarks) -> dict[str, int]:
    stored: dict[str, list] = {v.name: [] for v in FEATURE_VIEWS}
    counts = dict.fromkeys(stored, 0)
    for w in watermarks:
        transform_dbt(settings, w)
        for view in FEATURE_VIEWS:
            expected = sorted(reference.run(view, events, labels, to_us(w), stored[view.name]))
            actual = offline_rows(settings.offline, view, w)
            assert actual == expected, f"{view.name} at {w}: engine != oracle"
            stored[view.name].extend(expected)
            counts[view.name] += len(expected)
    return counts


@pytest.mark.parametrize("seed", [1, 2])
def test_dbt_equals_oracle_on_adversarial_streams(settings: Settings, seed: int) -> None:
    events, labels = random_events(seed, days=4, n=120)
    write_events(settings.landing, START, 4, events, labels, offsets=[0, 60, -300, 120])
    # Mid-day watermarks too: hourly rows restated by late events, labels mid-window.
    watermarks = [START + timedelta(hours=h) for h in (18, 24, 42, 48, 72, 96)]
    counts = run_and_compare(settings, events, labels, watermarks)
    # These streams hold no ledger: the ledger views are tested in test_ledger_dbt.py.
    fraud = {v.name for v in FEATURE_VIEWS if v.source == "transactions"}
    assert all(counts[name] > 0 for name in fraud), counts


def test_design_worked_example(settings: Settings) -> None:
    """DESIGN.md's account A: duplicate dropped, late e3 restates 11:00 and 12:00."""
    day = START
    t = to_us(day)

    def at(h: int, m: int) -> int:
        return t + h * HOUR + m * 60_000_000

    common = {"account_id": "A", "merchant_id": "M1", "country": "GB", "channel": "pos"}
    events = [
        Event("e1", amount=500, event_us=at(10, 15), ingested_us=at(10, 16), **common),
        Event("e2", amount=1000, event_us=at(10, 40), ingested_us=at(10, 41), **common),
        Event("e1", amount=500, event_us=at(10, 15), ingested_us=at(12, 0), **common),
        Event("e3", amount=200, event_us=at(10, 50), ingested_us=at(13, 5), **common),
    ]
    write_events(settings.landing, day, 2, events)
    names = [f.name for f in ACCOUNT_HOURLY.features]

    def picked(rows):
        keep = [names.index(n) for n in ("txn_count_1h", "amount_sum_1h", "txn_count_24h")]
        return [(r[1] - t) // HOUR for r in rows], [tuple(r[3 + i] for i in keep) for r in rows]

    transform_dbt(settings, day + timedelta(hours=12))
    rows = offline_rows(settings.offline, ACCOUNT_HOURLY, day + timedelta(hours=12))
    assert picked(rows) == ([11, 12], [(2, 1500, 2), (0, 0, 2)])
    transform_dbt(settings, day + timedelta(hours=13))
    assert offline_rows(settings.offline, ACCOUNT_HOURLY, day + timedelta(hours=13)) == []
    transform_dbt(settings, day + timedelta(hours=14))
    rows = offline_rows(settings.offline, ACCOUNT_HOURLY, day + timedelta(hours=14))
    assert picked(rows) == ([11, 12], [(3, 1700, 3), (0, 0, 3)])
    transform_dbt(settings, day + timedelta(hours=35))
    rows = offline_rows(settings.offline, ACCOUNT_HOURLY, day + timedelta(hours=35))
    assert picked(rows) == ([35], [(0, 0, 0)])  # the 24h window emptied: the zero row


def test_idempotent_and_catch_up_equals_daily(settings: Settings, tmp_path: Path) -> None:
    events, labels = random_events(7, days=3, n=80)
    write_events(settings.landing, START, 3, events, labels)
    days = [START + timedelta(days=d) for d in (1, 2, 3)]
    for w in days:
        transform_dbt(settings, w)
    before = {p: p.read_bytes() for p in settings.offline.rglob("*.parquet")}
    # Re-running the newest and an earlier watermark changes nothing, byte for byte.
    transform_dbt(settings, days[-1])
    transform_dbt(settings, days[0])
    after = {p: p.read_bytes() for p in settings.offline.rglob("*.parquet")}
    assert before == after

    catch_up = Settings(pitstore_home=tmp_path / "catch-up", redis_url=settings.redis_url)
    write_events(catch_up.landing, START, 3, events, labels)
    transform_dbt(catch_up, days[-1])
    for view in FEATURE_VIEWS:
        assert latest_values(offline_rows(settings.offline, view)) == latest_values(
            offline_rows(catch_up.offline, view)
        )


def latest_values(rows) -> dict:
    """ "As of now": per entity, the value at every boundary from the newest versions."""
    newest: dict = {}
    for key, boundary, created, *values in rows:
        if (key, boundary) not in newest or created > newest[(key, boundary)][0]:
            newest[(key, boundary)] = (created, tuple(values))
    by_key: dict = {}
    for (key, boundary), (_, values) in sorted(newest.items()):
        # Sparse rows: a boundary equal to the previous one carries no information.
        series = by_key.setdefault(key, [])
        if not series or series[-1][1] != values:
            series.append((boundary, values))
    return by_key


def test_quarantine_keeps_bad_events_out(settings: Settings) -> None:
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import GeneratorParams, generate

    params = GeneratorParams(accounts=40, merchants=10, days=6, seed=3, start=START, bad_rate=0.05)
    write_landing(generate(params), settings.landing)
    summary = transform_dbt(settings, START + timedelta(days=6))
    reasons = set(summary.quarantined_new)
    assert {
        "negative amount",
        "amount is NaN or infinite",
        "naive event_ts (no UTC offset)",
        "unparseable event_ts",
        "event_ts after ingested_at",
        "null account_id",
        "schema drift in landing file",
    } <= reasons, reasons
    assert summary.drifted_files
    # No quarantined transaction id reaches the clean table the aggregates read.
    import duckdb

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    leaked = con.execute(
        "select count(*) from int_transactions__deduped d join quarantine_events q "
        "using (transaction_id) where q.dataset = 'transactions'"
    ).fetchall()[0][0]
    con.close()
    assert leaked == 0
    assert DAY > 0


def test_crashed_run_never_counts_as_previous(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after dbt but before publishing leaves nothing a later run trusts."""
    import pitstore.transform.dbt_engine as transform

    events, labels = random_events(3, days=3, n=90)
    write_events(settings.landing, START, 3, events, labels)
    w1, w2, w3 = (START + timedelta(days=d) for d in (1, 2, 3))
    transform_dbt(settings, w1)

    def killed(*args: object, **kwargs: object) -> int:
        raise RuntimeError("killed while publishing")

    monkeypatch.setattr(transform, "export_view", killed)
    with pytest.raises(RuntimeError, match="killed"):
        transform_dbt(settings, w2)
    monkeypatch.undo()
    transform_dbt(settings, w3)  # W2 never completed: the previous run is W1

    for view in FEATURE_VIEWS:
        first = reference.run(view, events, labels, to_us(w1), [])
        third = reference.run(view, events, labels, to_us(w3), first)
        assert offline_rows(settings.offline, view) == sorted(first + third), view.name


def written_in(micros: int, offset: str) -> str:
    """``micros`` as local time in ``offset``, the offset read as ``sign * (HH * 60 + MM)``
    minutes (how DuckDB alone reads +99:99: it would land the event 4 days early)."""
    minutes = (-1 if offset[0] == "-" else 1) * (int(offset[1:3]) * 60 + int(offset[4:6]))
    local = from_us(micros).replace(tzinfo=None) + timedelta(minutes=minutes)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + offset


def test_offsets_no_zone_uses_are_quarantined_not_shifted(settings: Settings) -> None:
    """Offsets within -12:00..+14:00 with minutes 00-59 name an instant; any other
    row is quarantined with its reason. The oracle reads the same raw strings."""
    import pyarrow as pa

    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import GeneratorParams, LandingBatch

    valid = ["+00:00", "+14:00", "-12:00", "-00:00", "+05:45", "-09:30"]
    broken = ["+99:99", "+01:60", "-30:00", "+14:01", "-12:01", "+00:60", "+18:00"]
    t = to_us(START) + 10 * HOUR
    ingested = t + 3 * HOUR
    rows = []
    for i, offset in enumerate(valid + broken):
        e = Event(f"o{i}", f"A{i % 3}", "M1", 100 + i, "GB", "pos", t + i * 600_000_000, ingested)
        rows.append((ingested, i, tx_row(e, written_in(e.event_us, offset))))
    assert rows[6][2]["event_ts"] == "2026-03-31T15:39:00+99:99"  # the event: 03-27 11:00Z
    params = GeneratorParams(accounts=1, merchants=1, days=2, seed=0, start=START, bad_rate=0)
    day = from_us(ingested).date().isoformat()
    table = pa.Table.from_pylist([r for _, _, r in rows], schema=TX_SCHEMA)
    batch = LandingBatch(params=params, tables={("transactions", day, 0): table})
    write_landing(batch, settings.landing)

    events = reference.landed_events(rows)
    assert [e.transaction_id for e in events] == [f"o{i}" for i in range(len(valid))]
    w = START + timedelta(days=2)
    summary = transform_dbt(settings, w)
    expected_bad = reference.quarantined_new(rows, to_us(w), None)
    assert summary.quarantined_new == expected_bad == {"event_ts offset out of range": len(broken)}
    for view in FEATURE_VIEWS:
        expected = sorted(reference.run(view, events, [], to_us(w), []))
        assert offline_rows(settings.offline, view, w) == expected, view.name
