"""`pitstore backfill`: replay the daily runs over a past period, in order.

A bank that adopts pitstore today still has years of landed history. Training
frames are `as_known`: a row at time t gets what a run with W <= t had
published. With only today's run, every past row would be empty; backfill
replays the daily runs a deployment *would* have made (W = each midnight UTC),
so the offline store answers for the past exactly as if pitstore had run then.

Each day is one ordinary transform run, so the rules of runs hold: a completed
run is skipped (resumable after a kill: rerun the same command), and a day
before the newest completed run that never ran is refused (runs move forward).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer

from pitstore.cli.common import console, err, fail, parse_day, step
from pitstore.core.config import get_settings
from pitstore.core.runs import completed_watermarks
from pitstore.core.timeutil import from_us, to_us


def daily_watermarks(first: date, last: date, every: int = 1) -> list[datetime]:
    """Midnight UTC of every ``every``-th day from ``first`` to ``last``; ``last`` always."""
    days = (last - first).days
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    offsets = [*range(0, days + 1, every)]
    if offsets[-1] != days:
        offsets.append(days)
    return [start + timedelta(days=i) for i in offsets]


def plan(watermarks: list[datetime], done_us: list[int]) -> tuple[list[datetime], list[datetime]]:
    """(to run, already done); raise ValueError for a day that would break run order."""
    done = set(done_us)
    todo = [w for w in watermarks if to_us(w) not in done]
    newest = max(done_us, default=-1)
    early = [w for w in todo if to_us(w) < newest]
    if early:
        raise ValueError(
            f"{len(early)} day(s) from {early[0].date()} are before the newest completed run "
            f"{from_us(newest).isoformat()} and never ran: runs move forward, so history can "
            "only be backfilled into an empty home (or from after the newest run)"
        )
    return todo, [w for w in watermarks if to_us(w) in done]


def backfill(
    from_: Annotated[
        str, typer.Option("--from", help="First day (YYYY-MM-DD): W = its midnight UTC.")
    ],
    to: Annotated[str, typer.Option("--to", help="Last day, inclusive (YYYY-MM-DD).")],
    engine: Annotated[str, typer.Option(help="dbt (DuckDB, one machine) or spark.")] = "dbt",
    master: Annotated[str | None, typer.Option(help="Spark master URL (spark only).")] = None,
    materialize: Annotated[
        bool, typer.Option(help="Afterwards, load the last day's values into Redis.")
    ] = False,
    every: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run every N days (and on --to). A training frame is as-known: it sees "
            "only what these runs knew, so a coarser history means staler training features.",
        ),
    ] = 1,
) -> None:
    """Replay the daily runs from --from to --to in order (idempotent, resumable)."""
    from pitstore.landing.zone import LandingError
    from pitstore.transform.dbt_engine import TransformError

    first, last = parse_day(from_, "--from"), parse_day(to, "--to")
    if last < first:
        fail(f"--to {last} is before --from {first}")
    if engine not in ("dbt", "spark"):
        fail(f"unknown engine {engine!r}: use dbt or spark")
    settings = get_settings()
    watermarks = daily_watermarks(first, last, every)
    if watermarks[-1] > datetime.now(UTC):
        fail(f"--to {last}: its midnight is in the future; events after now cannot be known")
    try:
        todo, done = plan(watermarks, completed_watermarks(settings))
    except ValueError as exc:
        fail(str(exc))
    step(f"backfill {first}..{last}: {len(todo)} run(s) to do, {len(done)} already complete")
    spark = None
    if engine == "spark" and todo:
        from pitstore.transform.spark.job import DEFAULT_MASTER, spark_session

        spark = spark_session(master or DEFAULT_MASTER)
    for i, w in enumerate(todo, 1):
        try:
            if engine == "dbt":
                from pitstore.transform.dbt_engine import transform_dbt

                summary = transform_dbt(settings, w)
            else:
                from pitstore.transform.spark.job import transform_spark

                summary = transform_spark(settings, w, spark=spark)
        except (LandingError, TransformError) as exc:
            fail(f"run W={w.isoformat()} ({i}/{len(todo)}): {exc}; rerun the command to resume", 1)
        appended = sum(summary.rows_appended.values())
        step(f"[{i}/{len(todo)}] W={w.isoformat()}: {appended} rows appended")
    if materialize:
        from pitstore.core.spec import FEATURE_VIEWS
        from pitstore.online.materialize import MaterializeError, materialize_view

        for view in FEATURE_VIEWS:
            try:
                result = materialize_view(settings, view, watermarks[-1])
            except MaterializeError as exc:
                fail(str(exc), 1)
            step(f"materialized {view.name}: {result.entities_written} entities")
    console.print(
        f"backfill complete: {len(todo)} run(s) made, {len(done)} skipped (already complete), "
        f"newest W {watermarks[-1].isoformat()}"
    )
    if not todo:
        err.print("nothing to do: every day in the range already ran", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)
