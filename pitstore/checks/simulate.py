"""A multi-day simulation that certifies online / offline parity after every run.

On a generated landing zone (late events, duplicate deliveries, bad rows; late
events restate earlier boundaries, sometimes the newest one), every day at
midnight: ``transform`` (dbt) with watermark ``W``, materialize into Redis,
then the full online parity check over every entity at ``ts = W``. Every run
must be 100% consistent.

``materializer="feast"`` swaps pitstore's materializer for Feast's own
``materialize_incremental``: the simulation then shows the trap the design
warns about (Feast 0.67 skips a restated row whose event timestamp is not newer
than the stored one).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import duckdb
import redis

from pitstore.checks.parity import OnlineParity, check_online
from pitstore.core.config import Settings
from pitstore.core.spec import FEATURE_VIEWS, FeatureService, FeatureView
from pitstore.core.timeutil import from_us, to_us

SIM_MARKER = ".pitstore-simulation"
Materializer = Callable[[Settings, datetime], int]


@dataclass(frozen=True)
class SimParams:
    accounts: int = 200
    merchants: int = 40
    days: int = 10
    seed: int = 7
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    bad_rate: float = 0.002
    materializer: Literal["pitstore", "feast"] = "pitstore"
    # Account-ledger history before ``start`` (0: card data only). With it, every
    # run also proves credit_v1's parity: a second source, its own late events.
    credit_history_days: int = 120


@dataclass
class SimRun:
    watermark: str
    rows_appended: int
    rows_restated: int
    newest_restated: int  # entities whose value at W is a restatement of its newest boundary
    entities_written: int
    parity: OnlineParity
    transform_s: float
    materialize_s: float
    credit_parity: OnlineParity | None = None  # credit_v1, when the world has a ledger

    @property
    def consistency(self) -> float | None:
        return self.parity.consistency


@dataclass
class SimResult:
    params: SimParams
    runs: list[SimRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.runs) and all(
            r.parity.passed and (r.credit_parity is None or r.credit_parity.passed)
            for r in self.runs
        )


def pitstore_materialize(settings: Settings, watermark: datetime) -> int:
    from pitstore.online.materialize import materialize_view

    return sum(materialize_view(settings, v, watermark).entities_written for v in FEATURE_VIEWS)


FEAST_LAST = "pitstore:simulation:feast-materialized"


def feast_materialize(settings: Settings, watermark: datetime) -> int:
    """Feast's own path: ``materialize(previous W, W)`` after each run (the broken one)."""
    from pitstore.core.feast_store import apply, get_store

    client = redis.Redis.from_url(settings.redis_url)
    last = client.get(FEAST_LAST)
    if last is None:
        apply(settings)
        start = watermark - max(v.ttl for v in FEATURE_VIEWS)
    else:
        start = from_us(int(last))  # type: ignore[arg-type]
    get_store(settings).materialize(start_date=start, end_date=watermark)
    client.set(FEAST_LAST, to_us(watermark))
    return -1  # Feast does not say


def newest_restated(settings: Settings, view: FeatureView, watermark: datetime) -> int:
    """Entities whose as_known row at W was restated by run W at its newest boundary."""
    w = to_us(watermark)
    key = view.entity.join_key
    glob = str(settings.offline_view_dir(view.name) / "run-*.parquet")
    con = duckdb.connect()
    try:
        return con.execute(
            f"""
            with known as (
                select {key} as k, epoch_us(event_timestamp) as e, epoch_us(created_timestamp) as c
                from read_parquet('{glob}') where epoch_us(created_timestamp) <= {w}
            ), newest as (
                select k, max(e) as e from known group by k
            )
            select count(*) from newest n
            where exists (select 1 from known x where x.k = n.k and x.e = n.e and x.c = {w})
              and exists (select 1 from known x where x.k = n.k and x.e = n.e and x.c < {w})
            """
        ).fetchall()[0][0]
    finally:
        con.close()


def prepare(settings: Settings, params: SimParams) -> None:
    """Fresh simulation home with a generated landing zone; empty Redis database."""
    from pitstore.landing.zone import write_landing
    from pitstore.synth.generate import CreditParams, GeneratorParams, generate

    home = settings.home
    if home.exists() and any(home.iterdir()):
        if not (home / SIM_MARKER).exists():
            raise RuntimeError(
                f"{home} is not empty and is not a simulation home ({SIM_MARKER} missing): "
                "refusing to delete it"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / SIM_MARKER).write_text("created by pitstore.simulate; deleted on the next run\n")
    gen = GeneratorParams(
        accounts=params.accounts,
        merchants=params.merchants,
        days=params.days,
        seed=params.seed,
        start=params.start,
        bad_rate=params.bad_rate,
        credit=(
            CreditParams(history_days=params.credit_history_days)
            if params.credit_history_days
            else None
        ),
    )
    write_landing(generate(gen), settings.landing)
    redis.Redis.from_url(settings.redis_url).flushdb()


def run_simulation(
    settings: Settings,
    params: SimParams,
    service: FeatureService | None = None,
    materialize: Materializer | None = None,
    on_run: Callable[[SimRun], None] | None = None,
    days: int | None = None,
) -> SimResult:
    """Prepare, then for each day: transform, materialize, full parity at W.

    ``days`` limits the number of daily runs (default: all of ``params.days``).
    ``materialize`` replaces the materializer (tests inject broken ones).
    """
    from pitstore.core.spec import CREDIT_V1, FRAUD_V1
    from pitstore.transform.dbt_engine import transform_dbt

    service = service or FRAUD_V1
    if materialize is None:
        materialize = feast_materialize if params.materializer == "feast" else pitstore_materialize
    started = time.perf_counter()
    prepare(settings, params)
    result = SimResult(params)
    for day in range(1, (days or params.days) + 1):
        w = params.start + timedelta(days=day)
        t0 = time.perf_counter()
        summary = transform_dbt(settings, w)
        t1 = time.perf_counter()
        written = materialize(settings, w)
        t2 = time.perf_counter()
        parity = check_online(settings, service, w)
        credit = (
            check_online(settings, CREDIT_V1, w)
            if params.credit_history_days and service is not CREDIT_V1
            else None
        )
        run = SimRun(
            watermark=w.isoformat(),
            rows_appended=sum(summary.rows_appended.values()),
            rows_restated=sum(summary.rows_restated.values()),
            newest_restated=sum(newest_restated(settings, v, w) for v in service.views),
            entities_written=written,
            parity=parity,
            transform_s=round(t1 - t0, 2),
            materialize_s=round(t2 - t1, 2),
            credit_parity=credit,
        )
        result.runs.append(run)
        if on_run:
            on_run(run)
    result.seconds = round(time.perf_counter() - started, 2)
    return result
