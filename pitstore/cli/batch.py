"""The daily batch commands: generate, transform, apply, materialize, online, codegen, demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pitstore.cli.common import console, fail
from pitstore.core.config import get_settings
from pitstore.core.timeutil import WatermarkError, parse_utc

WatermarkOpt = Annotated[
    str,
    typer.Option(
        "--watermark",
        "-w",
        help="Run watermark W, ISO-8601 with offset (e.g. 2026-01-10T00:00:00+00:00): "
        "the run sees exactly the events ingested at or before W.",
    ),
]


def watermark_arg(text: str) -> datetime:
    try:
        return parse_utc(text)
    except WatermarkError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers happy


def generate(
    accounts: Annotated[int, typer.Option(help="Number of accounts.")] = 2000,
    merchants: Annotated[int, typer.Option(help="Number of merchants.")] = 300,
    days: Annotated[int, typer.Option(help="Days of activity.")] = 45,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 7,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC).")] = "2026-01-05",
    bad_rate: Annotated[float, typer.Option(help="Share of deliberately bad raw events.")] = 0.002,
    credit_history_days: Annotated[
        int,
        typer.Option(
            help="Days of account-ledger history before --start, for the credit datasets "
            "(ledger, applications, credit_outcomes); 0: no credit datasets."
        ),
    ] = 900,
    out: Annotated[
        Path | None, typer.Option(help="Landing directory (default PITSTORE_HOME/landing).")
    ] = None,
) -> None:
    """Generate a deterministic, bank-like landing zone: card transactions and labels,
    and the credit datasets (account ledger, loan applications, outcomes)."""
    from pitstore.landing.zone import LandingError, write_landing
    from pitstore.synth.generate import CreditParams, GeneratorParams
    from pitstore.synth.generate import generate as make

    try:
        start_day = datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=UTC)
        credit = CreditParams(history_days=credit_history_days) if credit_history_days else None
        params = GeneratorParams(
            accounts=accounts,
            merchants=merchants,
            days=days,
            seed=seed,
            start=start_day,
            bad_rate=bad_rate,
            credit=credit,
        )
    except ValueError as exc:
        fail(str(exc))
    root = out or get_settings().landing
    with console.status("generating events..."):
        batch = make(params)
    try:
        manifest = write_landing(batch, root)
    except LandingError as exc:
        fail(str(exc))
    rows = sum(p.rows for p in manifest.partitions)
    console.print(
        f"landing zone [bold]{root}[/]: {len(manifest.partitions)} files, "
        f"{rows} rows, complete through {manifest.complete_through.isoformat()}"
    )


def transform(
    watermark: WatermarkOpt,
    engine: Annotated[str, typer.Option(help="dbt (DuckDB, one machine) or spark.")] = "dbt",
    full_refresh: Annotated[
        bool, typer.Option(help="Rebuild from scratch (one version at W; history is lost).")
    ] = False,
    master: Annotated[
        str | None, typer.Option(help="Spark master URL (spark engine only).")
    ] = None,
) -> None:
    """Compute every feature view's new rows for watermark W into the offline store.

    One run per home at a time (a second one fails at once, naming the holder).
    Exit 2: the request cannot be served as asked (watermark, landing zone);
    exit 1: the run failed (lock held, disk, damaged store or warehouse, dbt).
    """
    from pitstore.landing.zone import LandingError
    from pitstore.transform.dbt_engine import TransformError, transform_dbt

    w = watermark_arg(watermark)
    if engine not in ("dbt", "spark"):
        fail(f"unknown engine {engine!r}: use dbt or spark")
    settings = get_settings()
    try:
        if engine == "dbt":
            summary = transform_dbt(settings, w, full_refresh=full_refresh)
        else:
            from pitstore.transform.spark.job import transform_spark  # type: ignore[import-not-found]

            summary = transform_spark(settings, w, master=master, full_refresh=full_refresh)
    except LandingError as exc:
        fail(str(exc))
    except TransformError as exc:
        fail(str(exc), code=exc.exit_code)
    except OSError as exc:
        # Whatever the engines did not name themselves (a full disk while dbt logs,
        # a home that cannot be created): the system's reason and the path.
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"transform failed: {exc.strerror or exc}{where}", code=1)
    print_run_summary(summary)
    if summary.orphans_removed:
        console.print(
            f"moved {len(summary.orphans_removed)} files no completed run published "
            "(a killed run's) out of the store"
        )


def print_run_summary(summary: object) -> None:
    table = Table(title=f"transform W={summary.watermark}")  # type: ignore[attr-defined]
    for col in ("view", "appended", "restated", "total rows"):
        table.add_column(col)
    for view, n in summary.rows_appended.items():  # type: ignore[attr-defined]
        table.add_row(
            view,
            str(n),
            str(summary.rows_restated[view]),  # type: ignore[attr-defined]
            str(summary.rows_total[view]),  # type: ignore[attr-defined]
        )
    console.print(table)
    quarantined = summary.quarantined_new  # type: ignore[attr-defined]
    if quarantined:
        console.print(f"quarantined this run: {quarantined}")


def apply() -> None:
    """Register the Feast definitions (entities, views, services) in the registry."""
    from pitstore.core.feast_store import apply as feast_apply

    names = feast_apply(get_settings())
    console.print(f"applied {len(names)} objects: {', '.join(names)}")


def materialize(
    watermark: Annotated[
        str | None,
        typer.Option(
            "--watermark",
            "-w",
            help="Run watermark W (ISO-8601 with offset); W must have a completed transform run.",
        ),
    ] = None,
    view: Annotated[list[str] | None, typer.Option(help="Only these views.")] = None,
    full: Annotated[
        bool, typer.Option(help="Rewrite every entity, not only touched ones.")
    ] = False,
    reset_to: Annotated[
        str | None,
        typer.Option(
            "--reset-to",
            help="Repair a marker set by mistake: rewrite the views' hashes to the as-known "
            "state at this W and set the marker to it, even backwards.",
        ),
    ] = None,
) -> None:
    """Load the as-known values at W into Redis (restated rows included).

    Refuses a W without a completed transform run or in the future; never moves
    Redis back in time except through --reset-to.
    """
    from pitstore.core.spec import FEATURE_VIEWS
    from pitstore.online.materialize import (
        MaterializeError,
        WatermarkRefused,
        materialize_view,
        reset_view,
    )

    if (watermark is None) == (reset_to is None):
        fail("give exactly one of --watermark W or --reset-to W")
    w = watermark_arg(reset_to or watermark or "")
    settings = get_settings()
    known = {v.name: v for v in FEATURE_VIEWS}
    unknown = [v for v in view or [] if v not in known]
    if unknown:
        fail(f"unknown view(s) {', '.join(unknown)}: the views are {', '.join(known)}")
    views = [known[v] for v in view] if view else list(FEATURE_VIEWS)
    for fv in views:
        try:
            if reset_to:
                result = reset_view(settings, fv, w)
            else:
                result = materialize_view(settings, fv, w, full=full)
        except WatermarkRefused as exc:
            fail(str(exc))
        except MaterializeError as exc:
            fail(str(exc), code=1)
        note = f" ({result.note})" if result.note else ""
        console.print(f"{fv.name}: {result.entities_written} entities written{note}")


def online(
    entities: Annotated[list[str], typer.Argument(help="ENTITY=KEY, e.g. account_id=A000042")],
    service: Annotated[str, typer.Option(help="Feature service.")] = "fraud_v1",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the online feature values for some entities, read through Feast."""
    from pitstore.online.feast_read import OnlineReadError, read_online

    keys: dict[str, str] = {}
    for item in entities:
        name, sep, value = item.partition("=")
        if not sep or not value:
            fail(f"expected ENTITY=KEY, got {item!r}")
        keys[name] = value
    try:
        values = read_online(get_settings(), service, keys)
    except OnlineReadError as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(values, default=str))
        return
    table = Table(title=f"{service} {keys}")
    table.add_column("feature")
    table.add_column("value")
    for name, value in values.items():
        table.add_row(name, str(value))
    console.print(table)


def codegen(
    check: Annotated[bool, typer.Option(help="Fail if the generated files are stale.")] = False,
) -> None:
    """Regenerate the dbt SQL/YAML derived from pitstore/core/spec.py."""
    from pitstore.transform.codegen import stale_generated, write_generated

    if check:
        stale = stale_generated()
        if stale:
            fail(f"generated files are stale, run `pitstore codegen`: {stale}", code=1)
        console.print("generated files are up to date")
        return
    changed = write_generated()
    console.print(f"{len(changed)} files changed")


def demo(
    accounts: Annotated[int, typer.Option(help="Accounts in the demo data.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of daily runs.")] = 45,
    credit_history_days: Annotated[
        int,
        typer.Option(
            help="Days of account-ledger history before the first run's day; 0: no credit datasets."
        ),
    ] = 900,
) -> None:
    """Run the whole daily batch end to end on the embedded default dataset."""
    from pitstore.cli.demo import run_demo

    run_demo(
        get_settings(),
        accounts=accounts,
        days=days,
        console=console,
        credit_history_days=credit_history_days,
    )


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(transform)
    app.command()(apply)
    app.command()(materialize)
    app.command()(online)
    app.command()(codegen)
    app.command()(demo)
