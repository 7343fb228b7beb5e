"""The Spark engine equals the dbt engine equals the reference oracle, on adversarial data.

Differential testing: hypothesis builds landing zones full of the cases the
semantics are about (same-timestamp ties, events exactly on and one microsecond
off window boundaries, late events across watermarks, duplicates that differ,
empty windows, restatements, labels known late, extreme amounts, event_ts
written in DST and odd offsets, ``T24:00:00``), plus junk rows every engine must
quarantine (offsets no zone uses among them). Each example runs both engines over
several watermarks and checks every run's rows and quarantine counts against
``tests/reference.py``, which reads the raw rows itself.

Each example costs a few dbt runs (~3 s each) and Spark runs (~10 s each on
2 cores), so an example carries many entities, and the example count is modest:
raise it with PITSTORE_SPARK_EXAMPLES=15 for a longer soak.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from landing_factory import LABEL_SCHEMA, TX_SCHEMA, tx_row

from pitstore.checks.engine_parity import EngineSettings, compare_offline
from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS
from pitstore.core.timeutil import from_us, stamp, to_us
from pitstore.landing.zone import write_landing
from pitstore.synth.generate import GeneratorParams, LandingBatch
from pitstore.transform.dbt_engine import transform_dbt
from pitstore.transform.spark.job import Layout, run_job
from tests import reference
from tests.reference import Event, Label

pytestmark = pytest.mark.spark

START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 4
H = 3_600_000_000
D = 24 * H
START_US = to_us(START)
END_US = START_US + DAYS * D  # the landing zone's complete_through
EXAMPLES = int(os.environ.get("PITSTORE_SPARK_EXAMPLES", "2"))

# Offsets source systems write event_ts in: UTC, both sides of the EU and US DST
# changes, half and three-quarter hours, the extremes real zones use (-12:00 and
# +14:00), and offsets no zone uses, which every engine must quarantine rather than
# shift (DuckDB alone would read +99:99 as 100 h 39 min and land the event 4 days early).
OFFSETS = ["Z", "+01:00", "+02:00", "-05:00", "-04:00", "+05:30", "+05:45", "-09:30"]
OFFSETS += ["+14:00", "-12:00", "-00:00"]
BAD_OFFSETS = ["+18:30", "+99:99", "+01:60", "-30:00", "+14:01", "-12:01", "+00:99"]


@pytest.fixture(autouse=True, scope="module")
def small_data_conf(spark: Any) -> Iterator[None]:
    """These runs are tiny: one shuffle partition and no adaptive re-planning keep a
    run at seconds instead of a minute. Restored afterwards for other modules."""
    conf = {
        "spark.sql.shuffle.partitions": "1",
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.autoBroadcastJoinThreshold": "-1",
        "spark.sql.codegen.wholeStage": "false",
    }
    old = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    yield
    for k, v in old.items():
        if v is None:
            spark.conf.unset(k)
        else:
            spark.conf.set(k, v)


# --- Landing zones with hand-written raw strings -------------------------------


def offset_minutes(offset: str) -> int:
    """``Z`` or ``+HH:MM`` in minutes, read leniently: ``+99:99`` is 99 * 60 + 99."""
    if offset == "Z":
        return 0
    return (-1 if offset[0] == "-" else 1) * (int(offset[1:3]) * 60 + int(offset[4:6]))


def render_ts(micros: int, offset: str = "Z", midnight_as_24: bool = False) -> str:
    """The instant as a source system in ``offset`` writes it (local time = UTC + the
    offset read leniently, so a bad offset names the instant a lenient parser would
    land it on). Midnight as ``T24:00:00`` of the day before writes ``Z`` as ``+00:00``."""
    local = from_us(micros).replace(tzinfo=None) + timedelta(minutes=offset_minutes(offset))
    frac = local.microsecond
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if midnight_as_24 and local.time() == datetime.min.time():
        text = (local - timedelta(days=1)).strftime("%Y-%m-%dT24:00:00")
    elif frac:
        text += "." + f"{frac:06d}".rstrip("0")
    return text + ("+00:00" if offset == "Z" and midnight_as_24 else offset)


def land(root: Path, rows: list[tuple[int, int, dict[str, Any]]], labels: list[Label]) -> None:
    """Land raw transaction rows (ingested_us, source_order, row) and labels."""
    params = GeneratorParams(accounts=1, merchants=1, days=DAYS, seed=0, start=START, bad_rate=0)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ingested_us, _, row in sorted(rows, key=lambda r: (r[0], r[1])):
        by_day[from_us(ingested_us).date().isoformat()].append(row)
    label_days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for lab in sorted(labels, key=lambda x: (x.ingested_us, x.source_order)):
        label_days[from_us(lab.ingested_us).date().isoformat()].append(
            {
                "transaction_id": lab.transaction_id,
                "is_fraud": lab.is_fraud,
                "label_ts": from_us(lab.label_us),
                "ingested_at": from_us(lab.ingested_us),
            }
        )
    tables = {("transactions", d, 0): pa.Table.from_pylist(r, TX_SCHEMA) for d, r in by_day.items()}
    tables |= {
        ("labels", d, 0): pa.Table.from_pylist(r, LABEL_SCHEMA) for d, r in label_days.items()
    }
    write_landing(LandingBatch(params=params, tables=dict(sorted(tables.items()))), root)


def junk_rows(n: int) -> list[tuple[int, int, dict[str, Any]]]:
    """Rows every engine must quarantine, with the same reason."""
    ing = START_US + 2 * H
    base = Event(f"junk{n}", "J1", "M0", 100, "GB", "pos", START_US + H, ing)
    ok_ts = render_ts(base.event_us)
    cases: list[dict[str, Any]] = [
        tx_row(base, ok_ts, transaction_id=None),
        tx_row(base, ok_ts, account_id=None),
        tx_row(base, ok_ts, merchant_id=None),
        tx_row(base, ok_ts, amount=None),
        tx_row(base, ok_ts, amount=math.nan),
        tx_row(base, ok_ts, amount=math.inf),
        tx_row(base, ok_ts, amount=-5.0),
        tx_row(base, ok_ts, amount=12.5),
        tx_row(base, ok_ts, amount=1e300),
        tx_row(base, ok_ts, amount=1e15 + 2),
        tx_row(base, None),
        tx_row(base, "2026-01-05T01:00:00"),  # naive
        tx_row(base, "2026-01-05 01:00:00.5"),  # naive
        tx_row(base, "2026-02-30T01:00:00Z"),  # no such day
        tx_row(base, "2026-01-05T24:00:01Z"),  # only 24:00:00 is midnight
        tx_row(base, "2026-01-05T01:60:00Z"),
        tx_row(base, "2026-01-05T01:00:60Z"),  # no leap seconds
        tx_row(base, "2026-01-05T01:00:00.1234567Z"),  # 7 digits
        tx_row(base, "2026-01-05T01:00:00Z\n"),  # trailing newline
        tx_row(base, "2026-01-05T01:00:00+0100"),
        tx_row(base, "yesterday"),
        tx_row(base, render_ts(ing + 1)),  # event after ingestion
        *(tx_row(base, render_ts(base.event_us, off)) for off in BAD_OFFSETS),
        tx_row(base, "2026-02-30T01:00:00+99:99"),  # the offset is named first
        tx_row(base, "2026-01-05T01:00:00+1:00"),  # HH is two digits
        tx_row(base, "2026-01-05T01:00:00-00:00", amount=-1.0),  # the amount first
    ]
    return [
        (ing, 10_000 + i, {**row, "transaction_id": row["transaction_id"] and f"junk{n}-{i}"})
        for i, row in enumerate(cases)
    ]


# --- Adversarial event streams --------------------------------------------------

GRID = [START_US + k * H for k in range(DAYS * 24)]


@st.composite
def instants(draw: st.DrawFn) -> int:
    """Mostly on or next to a boundary: where window bounds go wrong."""
    base = draw(st.sampled_from(GRID))
    return base + draw(st.sampled_from([0, 0, -1, 1, 30 * 60_000_000, H - 1]))


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, int, dict[str, Any]]], list[Label], list[int]]:
    n_accounts = draw(st.integers(4, 10))
    watermarks = sorted(
        set(
            draw(
                st.lists(st.sampled_from(GRID[24:] + [END_US - 1, END_US]), min_size=1, max_size=1)
            )
        )
        | {END_US}
    )
    rows: list[tuple[int, int, dict[str, Any]]] = []
    labels: list[Label] = []
    order = 0
    for a in range(n_accounts):
        account = f"A{a}"
        for i in range(draw(st.integers(0, 8))):
            event_us = draw(instants())
            if event_us >= END_US:
                continue
            late = draw(st.sampled_from([0, 0, 1, H, D, 2 * D]))
            ingested = min(END_US, max(START_US, event_us + late))
            amount = draw(st.sampled_from([0, 1, 250, 999_999, 10**15, 12_345]))
            e = Event(
                transaction_id=f"{account}-t{i}",
                account_id=account,
                merchant_id=draw(st.sampled_from(["M0", "M1", "M2"])),
                amount=amount,
                country=draw(st.sampled_from(["GB", "FR", "US"])),
                channel=draw(st.sampled_from(["pos", "ecom"])),
                event_us=event_us,
                ingested_us=ingested,
                source_order=order,
            )
            order += 1
            offset = draw(st.sampled_from(OFFSETS + BAD_OFFSETS))
            as24 = draw(st.booleans())
            rows.append((ingested, e.source_order, tx_row(e, render_ts(event_us, offset, as24))))
            # A duplicate delivery, maybe at the same instant, maybe with other content:
            # only the first copy (ingested_us, file, row) may count.
            if draw(st.integers(0, 3)) == 0:
                dup_ing = min(END_US, ingested + draw(st.sampled_from([0, 1, H, D])))
                dup = Event(
                    e.transaction_id,
                    account,
                    "M9",
                    amount + 7,
                    "US",
                    "ecom",
                    event_us,
                    dup_ing,
                    order,
                )
                order += 1
                dup_ts = render_ts(event_us, draw(st.sampled_from(OFFSETS + BAD_OFFSETS)))
                rows.append((dup_ing, dup.source_order, tx_row(dup, dup_ts)))
            # A first copy that is junk: the valid copy after it wins.
            if draw(st.integers(0, 7)) == 0:
                rows.append((ingested, -1, tx_row(e, render_ts(event_us), amount=-1.0)))
            if draw(st.integers(0, 2)) == 0:
                label_us = min(END_US, event_us + draw(st.sampled_from([0, H, D, 2 * D])))
                label_ing = min(END_US, label_us + draw(st.sampled_from([0, 1, D])))
                labels.append(
                    Label(e.transaction_id, draw(st.booleans()), label_us, label_ing, len(labels))
                )
                if draw(st.booleans()):  # a second, later label: the first one wins
                    labels.append(
                        Label(
                            e.transaction_id,
                            not labels[-1].is_fraud,
                            label_us,
                            min(END_US, label_ing + H),
                            len(labels),
                        )
                    )
    return rows + junk_rows(0), labels, watermarks


# --- Running and reading ----------------------------------------------------------


def run_rows(offline: Path, view_name: str, w_us: int) -> list[tuple[Any, ...]]:
    path = offline / view_name / f"run-{stamp(from_us(w_us))}.parquet"
    table = pq.read_table(path)
    cols = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in table.columns]
    return sorted(zip(*(c.to_pylist() for c in cols), strict=True), key=str)


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) or isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-12, abs_tol=0.0):
                    return False
            elif u != v:
                return False
    return True


def engines_and_oracle(
    spark: Any,
    root: Path,
    rows: list[tuple[int, int, dict[str, Any]]],
    labels: list[Label],
    watermarks: list[int],
    rerun_spark: bool = False,
) -> None:
    """Both engines over the landed ``rows``, run by run, against the oracle, which
    reads the same raw rows (its own staging rules: reference.landed_events)."""
    events = reference.landed_events(rows)
    landing = root / "landing"
    homes = {n: root / n for n in ("dbt", "spark")}
    dbt_settings = EngineSettings(pitstore_home=homes["dbt"], landing_dir=landing)
    layout = Layout(str(landing), str(homes["spark"] / "offline"), str(homes["spark"] / "runs"))
    stored: dict[str, list[tuple[Any, ...]]] = {v.name: [] for v in FEATURE_VIEWS}
    previous = None
    for w_us in watermarks:
        w = from_us(w_us)
        dbt_summary = transform_dbt(dbt_settings, w)
        spark_summary = run_job(spark, layout, w)
        assert spark_summary.rows_appended == dbt_summary.rows_appended
        assert spark_summary.rows_restated == dbt_summary.rows_restated
        assert spark_summary.rows_total == dbt_summary.rows_total
        assert spark_summary.quarantined_new == dbt_summary.quarantined_new
        assert dbt_summary.quarantined_new == reference.quarantined_new(rows, w_us, previous)
        previous = w_us
        for view in FEATURE_VIEWS:
            expected = sorted(reference.run(view, events, labels, w_us, stored[view.name]), key=str)
            stored[view.name] += expected
            got_dbt = run_rows(dbt_settings.offline, view.name, w_us)
            got_spark = run_rows(homes["spark"] / "offline", view.name, w_us)
            assert same_rows(got_dbt, expected), (view.name, w, got_dbt, expected)
            assert same_rows(got_spark, expected), (view.name, w, got_spark, expected)
    report = compare_offline({"dbt": dbt_settings.offline, "spark": homes["spark"] / "offline"})
    assert report.ok, report
    if rerun_spark:
        w_us = watermarks[-1]
        before = {v.name: run_rows(homes["spark"] / "offline", v.name, w_us) for v in FEATURE_VIEWS}
        run_job(spark, layout, from_us(w_us))
        after = {v.name: run_rows(homes["spark"] / "offline", v.name, w_us) for v in FEATURE_VIEWS}
        assert after == before


# --- Tests ------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario())
def test_engines_agree_with_each_other_and_the_oracle(spark: Any, case: Any) -> None:
    rows, labels, watermarks = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        land(root / "landing", rows, labels)
        engines_and_oracle(spark, root, rows, labels, watermarks)


def test_fixed_edges_and_idempotent_rerun(spark: Any, tmp_path: Path) -> None:
    """The worked example of DESIGN.md plus parse edge cases, and a Spark re-run at W."""
    t = START_US + 10 * H
    m = 60_000_000
    e1 = Event("e1", "A", "M", 500, "GB", "pos", t + 15 * m, t + 16 * m, 0)
    e2 = Event("e2", "A", "M", 1000, "GB", "pos", t + 40 * m, t + 41 * m, 1)
    e1_again = Event("e1", "A", "M", 500, "GB", "pos", t + 15 * m, t + 2 * H, 2)
    e3 = Event("e3", "A", "M", 200, "GB", "pos", t + 50 * m, t + 3 * H + 5 * m, 3)
    # B: events at local midnight written as T24:00:00 of the day before, in the
    # extreme offsets (+14:00, -12:00), exactly on boundaries, and a zero amount;
    # b4 in +99:99, which no zone uses, is quarantined (its label finds no event).
    b1 = Event("b1", "B", "M", 0, "FR", "ecom", START_US + D, START_US + D + 1, 4)
    b2 = Event("b2", "B", "M", 7, "FR", "ecom", START_US + D + H, START_US + D + H, 5)
    b3 = Event("b3", "B", "M", 10**15, "GB", "pos", START_US + D + H - 1, START_US + 2 * D, 6)
    b4 = Event("b4", "B", "M", 9, "FR", "ecom", START_US + D + H, START_US + D + H, 7)
    rows = [
        (e1.ingested_us, 0, tx_row(e1, render_ts(e1.event_us, "+01:00"))),
        (e2.ingested_us, 1, tx_row(e2, render_ts(e2.event_us, "-05:00"))),
        (e1_again.ingested_us, 2, tx_row(e1_again, render_ts(e1.event_us))),
        (e3.ingested_us, 3, tx_row(e3, render_ts(e3.event_us, "+05:45"))),
        (b1.ingested_us, 4, tx_row(b1, render_ts(b1.event_us, midnight_as_24=True))),
        (b2.ingested_us, 5, tx_row(b2, render_ts(b2.event_us, "+14:00"))),
        (b3.ingested_us, 6, tx_row(b3, render_ts(b3.event_us, "-12:00"))),
        (b4.ingested_us, 7, tx_row(b4, render_ts(b4.event_us, "+99:99"))),
        *junk_rows(1),
    ]
    labels = [
        Label("b2", True, START_US + 2 * D, START_US + 2 * D + H, 0),
        Label("b4", True, START_US + 2 * D, START_US + 2 * D + H, 1),
    ]
    assert rows[4][2]["event_ts"] == "2026-01-05T24:00:00+00:00"
    assert rows[7][2]["event_ts"] == "2026-01-10T05:39:00+99:99"  # 4 days after the event
    land(tmp_path / "landing", rows, labels)
    assert reference.landed_events(rows) == [e1, e2, e1_again, e3, b1, b2, b3]
    watermarks = [t + 2 * H, t + 4 * H, END_US]
    engines_and_oracle(spark, tmp_path, rows, labels, watermarks, rerun_spark=True)
    # DESIGN's worked example, literally: the 14:00 run restates T=11:00.
    hourly = run_rows(tmp_path / "spark" / "offline", "account_hourly", t + 4 * H)
    assert (
        "A",
        t + H,
        t + 4 * H,
        3,
        3,
        1700,
        1700,
        1000,
        1000,
        1,
    ) in hourly


def test_run_order_and_full_refresh(spark: Any, tmp_path: Path) -> None:
    from pitstore.transform.dbt_engine import TransformError

    e = Event("x", "A", "M", 5, "GB", "pos", START_US + H, START_US + 2 * H, 0)
    land(tmp_path / "landing", [(e.ingested_us, 0, tx_row(e, render_ts(e.event_us)))], [])
    offline = tmp_path / "s" / "offline"
    layout = Layout(str(tmp_path / "landing"), str(offline), str(tmp_path / "s" / "runs"))
    run_job(spark, layout, from_us(START_US + 2 * D))
    with pytest.raises(TransformError, match="runs must move forward"):
        run_job(spark, layout, from_us(START_US + D))
    summary = run_job(spark, layout, from_us(START_US + 3 * D), full_refresh=True)
    files = sorted(p.name for p in (offline / "account_hourly").iterdir())
    assert files == [f"run-{stamp(from_us(START_US + 3 * D))}.parquet"]
    assert summary.previous_watermark is None
    assert [p.name for p in (offline / "_runs").iterdir()] == [
        f"run-{stamp(from_us(START_US + 3 * D))}.json"
    ]
    assert not any(p.name.startswith(".") for p in offline.rglob("*"))


def test_cli_settings_type() -> None:
    # EngineSettings keeps the landing zone outside the home (parity engines).
    s = EngineSettings(pitstore_home=Path("/tmp/h"), landing_dir=Path("/tmp/l"))
    assert s.landing == Path("/tmp/l") and s.offline == Path("/tmp/h/offline")
    assert isinstance(s, Settings)


def test_render_ts_examples() -> None:
    us = to_us(datetime(2026, 3, 29, 1, 30, tzinfo=UTC))
    assert render_ts(us, "+01:00") == "2026-03-29T02:30:00+01:00"
    assert render_ts(us, "+02:00") == "2026-03-29T03:30:00+02:00"
    assert render_ts(us + 500_000, "-05:00") == "2026-03-28T20:30:00.5-05:00"
    assert render_ts(us) == "2026-03-29T01:30:00Z"
    # The oracle reads valid offsets back to the instant, and quarantines the rest.
    for offset in OFFSETS:
        assert reference.event_ts_us(render_ts(us + 500_000, offset)) == us + 500_000, offset
    for offset in BAD_OFFSETS:
        assert reference.event_ts_us(render_ts(us, offset)) == "event_ts offset out of range"
    assert datetime.fromisoformat("2026-03-29T03:30:00+02:00") == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_crashed_run_leaves_state_a_later_run_ignores(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after writing its dedupe state but before its marker: the next run
    reads the state of completed runs only, and equals a store that never crashed."""
    from pitstore.transform.spark import job

    e1 = Event("e1", "A", "M", 500, "GB", "pos", START_US + H, START_US + H + 1, 0)
    dup = Event("e1", "A", "M", 900, "GB", "pos", START_US + H, START_US + D + 2 * H, 1)
    late = Event("e2", "A", "M", 70, "GB", "pos", START_US + 3 * H, START_US + 2 * D + H, 2)
    rows = [(e.ingested_us, e.source_order, tx_row(e, render_ts(e.event_us))) for e in (e1, dup)]
    rows += [(late.ingested_us, 2, tx_row(late, render_ts(late.event_us, "+01:00"))), *junk_rows(1)]
    land(tmp_path / "landing", rows, [Label("e1", True, START_US + D, START_US + 2 * D, 0)])
    w1, w2, w3 = (from_us(START_US + k * D) for k in (1, 2, 3))

    def layout(name: str) -> Layout:
        home = tmp_path / name
        return Layout(str(tmp_path / "landing"), str(home / "offline"), str(home / "runs"))

    run_job(spark, layout("crashed"), w1)

    def killed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the views")

    monkeypatch.setattr(job, "run_view", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_job(spark, layout("crashed"), w2)
    monkeypatch.undo()
    assert (tmp_path / "crashed" / "offline" / "_state" / "transactions").exists()
    healed = run_job(spark, layout("crashed"), w3)
    run_job(spark, layout("clean"), w1)
    clean = run_job(spark, layout("clean"), w3)
    for field in ("rows_appended", "rows_restated", "rows_total", "quarantined_new"):
        assert getattr(healed, field) == getattr(clean, field), field
    assert healed.quarantined_total == clean.quarantined_total
    for view in FEATURE_VIEWS:
        for w in (w1, w3):
            assert run_rows(tmp_path / "crashed" / "offline", view.name, to_us(w)) == run_rows(
                tmp_path / "clean" / "offline", view.name, to_us(w)
            )
