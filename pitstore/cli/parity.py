"""`pitstore parity ...`: prove online == offline (and dbt == Spark)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pitstore.cli.common import console, err, step
from pitstore.cli.common import fail as _fail

if TYPE_CHECKING:
    from pitstore.core.config import Settings
    from pitstore.core.spec import FeatureService

parity_app = typer.Typer(help="Prove online == offline and dbt == Spark.", no_args_is_help=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4%}"


def print_online_parity(result: object) -> None:
    from pitstore.checks.parity import OnlineParity

    assert isinstance(result, OnlineParity)
    table = Table(title=f"online parity {result.service} W={result.watermark}")
    for col in (
        "view",
        "feature",
        "compared",
        "exact",
        "both missing",
        "mismatch",
        "online-only",
        "offline-only",
        "SMAPE %",
        "consistency",
    ):
        table.add_column(col, justify="left" if col in ("view", "feature") else "right")
    for v in result.views:
        for f in v.features:
            bad = f.failures > 0
            table.add_row(
                v.view,
                f.feature,
                str(f.compared),
                str(f.matches),
                str(f.both_missing),
                str(f.mismatches),
                str(f.online_only),
                str(f.offline_only),
                "-" if f.smape_pct is None else f"{f.smape_pct:.4f}",
                f"[red]{_pct(f.consistency)}[/]" if bad else _pct(f.consistency),
            )
    console.print(table)
    for v in result.views:
        if v.timestamp_mismatches:
            console.print(f"[red]{v.view}: {v.timestamp_mismatches} event timestamp mismatches[/]")
    for m in result.mismatches:
        console.print(
            f"  [red]{m.kind}[/] {m.view}.{m.feature} {m.entity}: online={m.online_value!r} "
            f"(ts {m.online_event_timestamp}) offline={m.offline_value!r} "
            f"(ts {m.offline_event_timestamp}, created {m.offline_created_timestamp})"
        )
    verdict = "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
    console.print(
        f"{verdict}: {result.compared} values compared over {result.entities}, "
        f"{result.failures} failures, consistency {_pct(result.consistency)} "
        f"({result.seconds} s)"
    )


@parity_app.command("online")
def online(
    watermark: Annotated[
        str | None,
        typer.Option(
            "--watermark",
            "-w",
            help="W, ISO-8601 with offset: compare at ts = W (default: the W Redis holds).",
        ),
    ] = None,
    service: Annotated[str, typer.Option(help="Feature service.")] = "fraud_v1",
    sample: Annotated[
        int | None, typer.Option(help="Compare a deterministic sample of N entities per type.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Compare every entity (the default).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the --sample draw.")] = 0,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the JSON + Markdown report (default PITSTORE_HOME/reports/parity)."
        ),
    ] = None,
    section: Annotated[
        list[Path] | None,
        typer.Option(help="Add a section from a JSON file (e.g. engine parity results)."),
    ] = None,
    max_mismatches: Annotated[int, typer.Option(help="Mismatches listed in the report.")] = 20,
) -> None:
    """Online values (Redis, at W) vs offline as_known at ts = W. Exit 1 on any mismatch."""
    from pitstore.checks.parity import (
        ExternalSection,
        ParityError,
        ParityReport,
        check_online,
        report_stem,
    )
    from pitstore.core.config import get_settings
    from pitstore.core.spec import service_by_name
    from pitstore.core.timeutil import WatermarkError, parse_utc

    if all_ and sample is not None:
        _fail("give either --sample N or --all, not both")
    if sample is not None and sample < 1:
        _fail("--sample must be >= 1")
    try:
        svc = service_by_name(service)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    settings = get_settings()
    held = _redis_watermarks(settings, svc)
    try:
        w = parse_utc(watermark) if watermark else _one_watermark(held)
    except WatermarkError as exc:
        _fail(str(exc))
    others = sorted({h.isoformat() for h in held.values() if h is not None and h != w})
    if others or None in held.values():
        shown = ", ".join(f"{v}={h.isoformat() if h else 'none'}" for v, h in held.items())
        err.print(f"note: comparing at W={w.isoformat()}; Redis holds {shown}", highlight=False)
    try:
        extra = [ExternalSection.load(p) for p in section or []]
        result = check_online(
            settings, svc, w, sample=sample, seed=seed, max_mismatches=max_mismatches
        )
    except (ParityError, OSError, ValueError) as exc:
        _fail(str(exc))
        raise
    print_online_parity(result)
    report = ParityReport(f"pitstore parity: {svc.name} at {w.isoformat()}", [result, *extra])
    out = report_dir or settings.home / "reports" / "parity"
    json_path, md_path = report.write(out, report_stem(svc.name, w))
    console.print(f"report: {json_path} and {md_path}")
    if not report.passed:
        raise typer.Exit(1)


def _redis_watermarks(settings: Settings, service: FeatureService) -> dict[str, datetime | None]:
    """The W each of the service's views was last materialized at in Redis (None: never)."""
    from redis.exceptions import RedisError

    from pitstore.online.materialize import materialized_watermark

    try:
        return {v.name: materialized_watermark(settings, v) for v in service.views}
    except RedisError as exc:
        _fail(f"cannot read Redis at {settings.redis_url}: {exc}", code=1)


def _one_watermark(held: dict[str, datetime | None]) -> datetime:
    marks = [h for h in held.values() if h is not None]
    if not marks:
        _fail("Redis holds no materialized watermark: run `pitstore materialize -w W` or give -w")
    # The oldest: a view behind the others is what a scorer would read stale.
    return min(marks)


@parity_app.command("simulate")
def simulate(
    accounts: Annotated[int, typer.Option(help="Accounts in the generated data.")] = 200,
    merchants: Annotated[int, typer.Option(help="Merchants in the generated data.")] = 40,
    days: Annotated[int, typer.Option(help="Daily runs (and days of data).")] = 10,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    home: Annotated[
        Path | None,
        typer.Option(help="Simulation home, wiped first (default PITSTORE_HOME/simulation)."),
    ] = None,
    redis_db: Annotated[
        int, typer.Option(help="Redis database of REDIS_URL's server to use; it is FLUSHED.")
    ] = 15,
    materializer: Annotated[
        str, typer.Option(help="pitstore, or feast (Feast's own materialize: shows the trap).")
    ] = "pitstore",
) -> None:
    """Daily transform + materialize with late events, duplicates and restatements;
    full online parity after every run must be 100%."""
    from urllib.parse import urlparse, urlunparse

    from pitstore.checks.simulate import SimParams, SimRun, run_simulation
    from pitstore.core.config import Settings, get_settings

    if materializer not in ("pitstore", "feast"):
        _fail("--materializer must be pitstore or feast")
    base = get_settings()
    url = urlparse(base.redis_url)
    if url.path.lstrip("/") == str(redis_db):
        _fail(f"--redis-db {redis_db} is REDIS_URL's own database: pick another one")
    sim_settings = Settings(
        pitstore_home=home or base.home / "simulation",
        redis_url=urlunparse(url._replace(path=f"/{redis_db}")),
    )
    params = SimParams(
        accounts=accounts,
        merchants=merchants,
        days=days,
        seed=seed,
        materializer=materializer,  # type: ignore[arg-type]
    )
    table = Table(title=f"parity simulation: {accounts} accounts x {days} days ({materializer})")
    for col in (
        "run W",
        "appended",
        "restated",
        "newest restated",
        "compared",
        "failures",
        "consistency",
        "transform s",
        "materialize s",
        "parity s",
    ):
        table.add_column(col, justify="left" if col == "run W" else "right")

    def on_run(run: SimRun) -> None:
        p = run.parity
        table.add_row(
            run.watermark,
            str(run.rows_appended),
            str(run.rows_restated),
            str(run.newest_restated),
            str(p.compared),
            str(p.failures),
            _pct(p.consistency) if p.passed else f"[red]{_pct(p.consistency)}[/]",
            f"{run.transform_s:.2f}",
            f"{run.materialize_s:.2f}",
            f"{p.seconds:.2f}",
        )
        mark = "ok" if p.passed else "FAIL"
        line = f"  {run.watermark}: {p.service} {mark} ({p.failures} failures)"
        if (c := run.credit_parity) is not None:
            credit_mark = "ok" if c.passed else "FAIL"
            line += f"; {c.service} {credit_mark} ({c.compared} values, {c.failures} failures)"
        console.print(line)

    try:
        result = run_simulation(sim_settings, params, on_run=on_run)
    except RuntimeError as exc:
        _fail(str(exc))
        raise
    console.print(table, width=max(console.width, 150))
    for run in result.runs:
        checked = [run.parity, *([run.credit_parity] if run.credit_parity else [])]
        for m in (m for p in checked for m in p.mismatches[:5]):
            console.print(
                f"  [red]{run.watermark} {m.kind}[/] {m.view}.{m.feature} {m.entity}: "
                f"online={m.online_value!r} offline={m.offline_value!r}"
            )
    verdict = (
        "[green]PASS[/]: 100% parity after every run (fraud_v1 and credit_v1)"
        if result.passed
        else "[bold red]FAIL[/]"
    )
    console.print(f"{verdict} ({len(result.runs)} runs, {result.seconds} s)")
    if not result.passed:
        raise typer.Exit(1)


@parity_app.command("engines")
def engines(
    watermark: Annotated[
        list[str],
        typer.Option(
            "--watermark",
            "-w",
            help="Run watermark W, ISO-8601 with offset; repeat for several runs (run in order).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Both engines' homes go here (default PITSTORE_HOME/parity/engines)."),
    ] = None,
    master: Annotated[str, typer.Option(help="Spark master URL.")] = "local[*]",
    fresh: Annotated[bool, typer.Option(help="Start both engines from an empty store.")] = False,
    rel_tol: Annotated[float, typer.Option(help="Relative tolerance for float features.")] = 1e-12,
    section_out: Annotated[
        Path | None,
        typer.Option(help="Also write the result as a JSON section for `parity online --section`."),
    ] = None,
) -> None:
    """Run dbt and Spark on the same landing zone; compare every view, feature by feature.

    Both offline stores are compared whole (every version of every run so far): rows
    only in one engine, and per feature the rows whose values differ (integers
    exactly, floats within --rel-tol). Exit 1 on any difference.
    """
    import json

    from pitstore.checks.engine_parity import report_markdown, run_engines
    from pitstore.core.config import get_settings
    from pitstore.core.timeutil import WatermarkError, parse_utc
    from pitstore.landing.zone import LandingError
    from pitstore.transform.dbt_engine import TransformError

    try:
        ws = [parse_utc(w) for w in watermark]
    except WatermarkError as exc:
        _fail(str(exc))
        raise
    settings = get_settings()
    target = out or settings.home / "parity" / "engines"
    step(f"running dbt and Spark on {len(ws)} watermark(s) into {target}, then comparing")
    try:
        report = run_engines(settings, ws, target, master=master, fresh=fresh, rel_tol=rel_tol)
    except (LandingError, TransformError) as exc:
        _fail(str(exc))
        raise
    a, b = report.engines
    summary = Table(title=f"engine parity: {a} vs {b} (floats within rel tol {rel_tol:g})")
    for col in ("view", f"rows {a}", f"rows {b}", f"only in {a}", f"only in {b}", "status"):
        summary.add_column(col, justify="left" if col in ("view", "status") else "right")
    for v in report.views:
        summary.add_row(
            v.view,
            str(v.rows[a]),
            str(v.rows[b]),
            str(v.only_in[a]),
            str(v.only_in[b]),
            "[green]same[/]" if v.ok else "[bold red]DIFFERENT[/]",
        )
    console.print(summary)
    features = Table(title="per feature: rows whose values differ")
    for col in ("view", "feature", "type", "differing", "examples (key, T µs, created µs, a, b)"):
        features.add_column(col, justify="right" if col == "differing" else "left")
    for v in report.views:
        for f in v.features:
            examples = "; ".join(map(str, f.examples))
            features.add_row(v.view, f.feature, f.dtype, str(f.differing), examples)
    console.print(features)
    for v in report.views:
        if v.schema_difference:
            err.print(f"[bold red]{v.view}: schemas differ:[/] {v.schema_difference}")
        for engine, rows in v.only_examples.items():
            if rows:
                err.print(f"[red]{v.view}: rows only in {engine}[/], e.g. {rows}")
    if section_out is not None:
        section_out.parent.mkdir(parents=True, exist_ok=True)
        section = {
            "name": "engine_parity",
            "title": f"Engine parity: {a} vs {b}",
            "passed": report.ok,
            "rel_tol": rel_tol,
            "views": report.to_dict(),
            "markdown": report_markdown(report),
        }
        section_out.write_text(json.dumps(section, indent=2, default=str) + "\n")
        console.print(f"section: {section_out}")
    if not report.ok:
        err.print("[bold red]FAIL[/]: the engines disagree")
        raise typer.Exit(1)
    console.print("[green]PASS[/]: dbt and Spark wrote the same rows")
