"""`make demo`: the daily batch as a bank would run it, end to end, on embedded data."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pitstore.checks.parity import check_online
from pitstore.cli.common import fail
from pitstore.cli.training import print_credit_report
from pitstore.core.config import Settings
from pitstore.core.feast_store import apply
from pitstore.core.spec import CREDIT_V1, FEATURE_VIEWS, FRAUD_V1, split_feature_column
from pitstore.core.timeutil import to_us
from pitstore.landing.zone import MANIFEST_NAME, LandingManifest, read_manifest, write_landing
from pitstore.models.registry import promote, promoted_version
from pitstore.online.feast_read import read_online
from pitstore.online.materialize import materialize_view
from pitstore.synth.generate import CreditParams, GeneratorParams, generate
from pitstore.training.credit_model import CreditModelError
from pitstore.training.credit_pipeline import train_credit
from pitstore.training.frames import FrameError
from pitstore.training.labels import LabelError, LabelPolicy
from pitstore.training.pipeline import train_fraud
from pitstore.transform.dbt_engine import existing_runs, transform_dbt


def demo_params(
    settings: Settings,
    accounts: int,
    days: int,
    today: date,
    credit_history_days: int = CreditParams.history_days,
) -> GeneratorParams:
    """The demo's data: ``days`` days that end at today's midnight (UTC).

    Ending today is what makes the first scoring call work: a transaction
    stamped now finds features the last run (W = today 00:00) published, within
    every view's TTL. The data is deterministic per start date. A home that
    already holds a demo keeps its data (the landing zone is append-only).
    The credit datasets reach ``credit_history_days`` further back (0: none).
    """
    if (settings.landing / MANIFEST_NAME).exists():
        return GeneratorParams.from_dict(read_manifest(settings.landing).params)
    start = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days)
    credit = CreditParams(history_days=credit_history_days) if credit_history_days else None
    return GeneratorParams(
        accounts=accounts, merchants=max(20, accounts // 7), days=days, start=start, credit=credit
    )


def credit_history_watermarks(manifest: LandingManifest, params: GeneratorParams) -> list[datetime]:
    """Weekly W from the midnight after the first landed day to before the card feed."""
    first_day = min(p.ingest_date for p in manifest.partitions) + timedelta(days=1)
    first = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    weeks = max(0, (params.start - first).days // 7 + 1)
    return [w for w in (first + timedelta(days=7 * i) for i in range(weeks)) if w < params.start]


def run_demo(
    settings: Settings,
    accounts: int,
    days: int,
    console: Console,
    credit_history_days: int = CreditParams.history_days,
) -> None:
    started = time.perf_counter()
    try:
        params = demo_params(
            settings, accounts, days, datetime.now(UTC).date(), credit_history_days
        )
    except ValueError as exc:
        fail(str(exc))
    days = params.days
    console.rule("1. landing zone")
    if params.complete_through.date() != datetime.now(UTC).date():
        console.print(
            f"note: {settings.landing} holds demo data ending {params.complete_through.date()}; "
            "`make clean && make demo` makes data that ends today"
        )
    manifest = write_landing(generate(params), settings.landing)
    rows = sum(p.rows for p in manifest.partitions)
    console.print(
        f"{len(manifest.partitions)} parquet files, {rows} raw rows in {settings.landing}"
    )

    console.rule("2. Feast registry")
    names = apply(settings)
    console.print(f"applied {len(names)} definitions")

    done = set(existing_runs(settings))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if params.credit is not None:
        console.rule("3a. credit history: weekly runs over the ledger before the card feed")
        # A credit frame is as_known at each application's time: it can only see
        # what a run before that time published. A bank starting a store on old
        # data replays its history; weekly runs keep that affordable (training
        # features are then up to 7 days staler than a daily store's).
        history = credit_history_watermarks(manifest, params)
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("weekly runs", total=len(history))
            for w in history:
                progress.update(task, description=f"W={w.date()}")
                if to_us(w) not in done:
                    transform_dbt(settings, w)
                progress.advance(task)

    console.rule("3. daily batch: transform + materialize per day")
    watermarks = [params.start + timedelta(days=d) for d in range(1, days + 1)]
    restated = dict.fromkeys((v.name for v in FEATURE_VIEWS), 0)
    appended = dict.fromkeys((v.name for v in FEATURE_VIEWS), 0)
    quarantined = 0
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("daily runs", total=len(watermarks))
        for w in watermarks:
            progress.update(task, description=f"W={w.date()}")
            if to_us(w) in done and to_us(w) != max(done):
                progress.advance(task)  # already run: runs are idempotent, skip the cost
                continue
            summary = transform_dbt(settings, w)
            for view in FEATURE_VIEWS:
                materialize_view(settings, view, w)
                restated[view.name] += summary.rows_restated[view.name]
                appended[view.name] += summary.rows_appended[view.name]
            quarantined += sum(summary.quarantined_new.values())
            progress.advance(task)

    last = watermarks[-1]
    console.rule("4. online/offline parity at the last watermark")
    for service in (FRAUD_V1, CREDIT_V1) if params.credit is not None else (FRAUD_V1,):
        parity = check_online(settings, service, last)
        console.print(
            f"{service.name}: {parity.compared} values compared, "
            f"consistency {parity.consistency:.4%}, {'PASS' if parity.passed else 'FAIL'}"
        )

    console.rule("5. fraud model: as_known vs as_of frames")
    from pitstore.training.compact import compact_store

    with console.status("compacting the offline store (key-sorted copy for the joins)..."):
        compacted = compact_store(settings)
    console.print(
        "compacted: " + ", ".join(f"{s.view} {s.rows:,} rows" for s in compacted if s.compacted)
    )
    console.print("training (as_known, then as_of for comparison)...")
    policy = LabelPolicy(known_by=last, maturity=timedelta(days=14))
    try:
        report = train_fraud(settings, policy, FRAUD_V1.name, compare_modes=True)
    except (FrameError, LabelError, ValueError) as exc:
        # Too little mature, labelled data (e.g. --days under the 14-day maturity).
        fail(f"cannot train on this demo's data: {exc} (try more --days or --accounts)")
    before = promoted_version(settings)
    promote(settings, report.version)
    metrics = report.card["metrics"]
    if before and before != report.version:
        console.print(
            f"promoted {report.version} in place of {before} "
            f"(`pitstore models promote {before}` to roll back)"
        )
    console.print(
        f"model {report.version} promoted: PR-AUC {metrics['pr_auc']:.3f} "
        f"(base rate {metrics['baseline_pr_auc']:.4f}), ROC-AUC {metrics['roc_auc']:.3f}"
    )
    if report.comparison:
        compare = Table(title="out-of-time holdout scored with as_known features (as serving)")
        for col in ("trained on", "PR-AUC", "ROC-AUC", "Brier"):
            compare.add_column(col)
        for mode in ("as_known", "as_of"):
            m = report.comparison[mode]
            compare.add_row(mode, f"{m['pr_auc']:.4f}", f"{m['roc_auc']:.4f}", f"{m['brier']:.5f}")
        console.print(compare)
        changed = report.comparison["values_as_of_changes"]
        console.print(f"values as_of would have changed (leaked restatements): {changed}")

    if params.credit is not None:
        console.rule("6. credit model: PD on as_known frames, 12-month label maturity")
        credit_policy = LabelPolicy(known_by=last, maturity=timedelta(days=365))
        try:
            credit_report = train_credit(settings, credit_policy)
        except (FrameError, LabelError, CreditModelError, ValueError) as exc:
            fail(f"cannot train the credit model on this demo's data: {exc}")
        promote(settings, credit_report.version)
        print_credit_report(credit_report)
        console.print(f"promoted {credit_report.version} for credit_v1")

    console.rule("7. summary")
    table = Table(title="offline store")
    for col in ("view", "rows appended this demo", "of which restated", "TTL"):
        table.add_column(col)
    for view in FEATURE_VIEWS:
        table.add_row(view.name, str(appended[view.name]), str(restated[view.name]), str(view.ttl))
    console.print(table)
    console.print(f"bad raw events quarantined: {quarantined}")
    example = {"account_id": "A000001", "merchant_id": "M00001"}
    values = read_online(settings, "fraud_v1", example)
    shown = Table(title=f"online features (Redis via Feast) for {example}")
    shown.add_column("feature")
    shown.add_column("value")
    for name, value in values.items():
        if split_feature_column(name):
            shown.add_row(name, str(value))
    console.print(shown)
    console.print(
        f"demo finished in {time.perf_counter() - started:.0f} s; data under {settings.home}"
    )
    console.print(
        "next: score online with the promoted model (README, journey 2): `pitstore keys new "
        "--scope score` prints a key and its PITSTORE_API_KEYS entry, then `pitstore serve`"
    )
