"""The dbt engine's ledger view equals the brute-force oracle; bad ledger rows are
quarantined with the oracle's reasons; the credit datasets are published."""

from __future__ import annotations

from datetime import timedelta

import pytest
from landing_factory import iso_with_offset, ledger_row, write_events
from spine_helpers import DAY, HOUR, START, offline_rows, random_events, random_ledger

from pitstore.core.config import Settings
from pitstore.core.spec import ACCOUNT_LEDGER_DAILY, FEATURE_VIEWS
from pitstore.core.timeutil import to_us
from pitstore.transform.dbt_engine import transform_dbt
from tests import reference, reference_ledger
from tests.reference_ledger import LedgerEvent

# Offsets the ledger's event_ts is written in: a day in UTC is not the local day.
OFFSETS = [0, 60, -300, 840, -720, 330]


def run_and_compare(
    settings: Settings, events, watermarks, views=FEATURE_VIEWS, labels=()
) -> dict[str, int]:
    stored: dict[str, list] = {v.name: [] for v in views}
    counts = dict.fromkeys(stored, 0)
    for w in watermarks:
        transform_dbt(settings, w)
        for view in views:
            expected = sorted(reference.run(view, events, labels, to_us(w), stored[view.name]))
            actual = offline_rows(settings.offline, view, w)
            assert actual == expected, f"{view.name} at {w}: engine != oracle"
            stored[view.name].extend(expected)
            counts[view.name] += len(expected)
    return counts


@pytest.mark.parametrize("seed", [11, 12])
def test_ledger_view_equals_oracle_on_adversarial_streams(settings: Settings, seed: int) -> None:
    tx, labels = random_events(seed, days=5, n=30)
    ledger = random_ledger(seed, days=5, n=150)
    write_events(settings.landing, START, 5, tx, labels, offsets=OFFSETS, ledger=ledger)
    watermarks = [START + timedelta(hours=h) for h in (30, 48, 60, 96, 120)]
    counts = run_and_compare(settings, [*tx, *ledger], watermarks, labels=labels)
    assert counts[ACCOUNT_LEDGER_DAILY.name] > 0, counts


def test_ledger_windows_empty_and_decay(settings: Settings) -> None:
    """A sparse ledger over 200 days: the 90d window empties (the zero row) while the
    180d one still counts missed payments; a single value has stddev 0.0."""
    tx, _ = random_events(3, days=2, n=5)
    ledger = random_ledger(5, days=15, n=40)  # the windows empty before day 200
    write_events(settings.landing, START, 200, tx, [], ledger=ledger)
    watermarks = [START + timedelta(days=d) for d in (60, 130, 200)]
    counts = run_and_compare(settings, [*tx, *ledger], watermarks, (ACCOUNT_LEDGER_DAILY,))
    rows = offline_rows(settings.offline, ACCOUNT_LEDGER_DAILY)
    zero = tuple(0 if f.dtype == "int64" else 0.0 for f in ACCOUNT_LEDGER_DAILY.features)
    assert any(tuple(r[3:]) == zero for r in rows), "no zero row"
    assert counts[ACCOUNT_LEDGER_DAILY.name] > 0


def test_stddev_of_huge_and_tiny_spreads(settings: Settings) -> None:
    """Balances at the staging's bound (+-1e15: x*x needs 31 digits) and a spread of 1
    around 1e7 (where s2/n - mean^2 cancels): both engines and the oracle agree."""
    t = to_us(START)
    ledger = [
        LedgerEvent("b1", "A1", "balance_snapshot", None, 10**15, t + 1 * HOUR, t + 2 * HOUR),
        LedgerEvent("b2", "A1", "balance_snapshot", None, -(10**15), t + DAY, t + DAY + 1),
        LedgerEvent("b3", "A1", "balance_snapshot", None, 10**15 - 1, t + 2 * DAY, t + 2 * DAY),
        LedgerEvent("c1", "A2", "balance_snapshot", None, 10**7, t + HOUR, t + HOUR),
        LedgerEvent("c2", "A2", "balance_snapshot", None, 10**7 + 1, t + DAY, t + DAY),
        LedgerEvent("c3", "A2", "balance_snapshot", None, 10**7 + 1, t + 2 * DAY, t + 2 * DAY),
        LedgerEvent("s1", "A3", "salary", 10**15, None, t + DAY - 1, t + DAY),
        LedgerEvent("s2", "A3", "salary", 10**15, None, t + DAY, t + DAY),
    ]
    tx, _ = random_events(1, days=3, n=3)
    write_events(settings.landing, START, 3, tx, [], ledger=ledger)
    counts = run_and_compare(
        settings, [*tx, *ledger], [START + timedelta(days=3)], (ACCOUNT_LEDGER_DAILY,)
    )
    assert counts[ACCOUNT_LEDGER_DAILY.name] > 0
    rows = offline_rows(settings.offline, ACCOUNT_LEDGER_DAILY)
    names = [f.name for f in ACCOUNT_LEDGER_DAILY.features]
    last = {r[0]: r for r in rows}
    assert last["A3"][3 + names.index("salary_days_90d")] == 2  # two UTC days
    assert last["A3"][3 + names.index("inflow_stddev_90d")] == 0.0


def bad_ledger_rows() -> list[tuple[int, int, dict[str, object]]]:
    """One raw row per ledger quarantine reason (and valid neighbours)."""
    t = to_us(START) + 3 * HOUR
    ing = t + HOUR
    ok = LedgerEvent("ok", "A1", "direct_debit", 500, None, t, ing)
    snap = LedgerEvent("snap", "A1", "balance_snapshot", None, -100, t, ing)
    ts = iso_with_offset(t, 60)
    cases = [
        ledger_row(ok, ts),
        ledger_row(snap, ts),
        ledger_row(ok, ts, ledger_event_id=None),
        ledger_row(ok, ts, account_id=None),
        ledger_row(ok, ts, event_type=None),
        ledger_row(ok, ts, event_type="refund"),
        ledger_row(snap, ts, amount=5.0),
        ledger_row(ok, ts, balance=5.0),
        ledger_row(snap, ts, balance=None),
        ledger_row(snap, ts, balance=float("nan")),
        ledger_row(snap, ts, balance=-1.5),
        ledger_row(snap, ts, balance=-2e15),
        ledger_row(ok, ts, amount=None),
        ledger_row(ok, ts, amount=float("inf")),
        ledger_row(ok, ts, amount=-3.0),
        ledger_row(ok, ts, amount=0.25),
        ledger_row(ok, ts, amount=1e16),
        ledger_row(ok, None),
        ledger_row(ok, "2026-03-27T03:00:00"),
        ledger_row(ok, "2026-03-27T03:00:00+99:99"),
        ledger_row(ok, "2026-02-30T03:00:00Z"),
        ledger_row(ok, iso_with_offset(ing + 1)),
    ]
    return [
        (ing, i, {**row, "ledger_event_id": row["ledger_event_id"] and f"r{i}"})
        for i, row in enumerate(cases)
    ]


def test_bad_ledger_rows_are_quarantined_with_the_oracles_reasons(settings: Settings) -> None:
    rows = bad_ledger_rows()
    tx, _ = random_events(2, days=2, n=5)
    write_events(settings.landing, START, 2, tx, [], ledger_rows=rows)
    w = START + timedelta(days=2)
    summary = transform_dbt(settings, w)
    expected: dict[str, int] = {}
    for _, _, row in rows:
        if (reason := reference_ledger.quarantine_reason(row)) is not None:
            expected[reason] = expected.get(reason, 0) + 1
    assert len(expected) == len(rows) - 2  # one reason per bad row
    tx_bad = reference.quarantined_new([], to_us(w), None)
    assert summary.quarantined_new == {**tx_bad, **expected}
    events = reference_ledger.landed_events(rows)
    assert [e.ledger_event_id for e in events] == ["r0", "r1"]
    expected_rows = sorted(reference.run(ACCOUNT_LEDGER_DAILY, events, [], to_us(w), []))
    assert offline_rows(settings.offline, ACCOUNT_LEDGER_DAILY, w) == expected_rows
