"""`pitstore monitor`: drift, calibration and segment performance of a deployed model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pitstore.cli.common import console, err, fail, parse_day, step
from pitstore.core.config import get_settings


def monitor(
    day_from: Annotated[str, typer.Option("--from", help="First day of the window (UTC).")],
    day_to: Annotated[str, typer.Option("--to", help="Last day of the window; the report date.")],
    model: Annotated[
        str, typer.Option(help='Model version, or "promoted" (for --service).')
    ] = "promoted",
    service: Annotated[
        str, typer.Option(help="The decision monitored: fraud_v1 (/v1/score) or credit_v1.")
    ] = "fraud_v1",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write monitor.json and alerts.json here.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Compare a window's logged decisions with the model's training reference.

    Exit 1 when any alert fires, 0 otherwise, 2 on a usage error. Thresholds:
    PITSTORE_MONITOR_* (docs/monitoring.md)."""
    from pydantic import ValidationError

    from pitstore.models.registry import ModelRegistryError, card_service, load_model
    from pitstore.monitor.credit import monitor_credit
    from pitstore.monitor.reference import ReferenceError, cache_path
    from pitstore.monitor.report import MonitorError, Window
    from pitstore.monitor.report import monitor as run
    from pitstore.monitor.settings import MonitorSettings
    from pitstore.serving.settings import ServingSettings
    from pitstore.training.credit_pipeline import CREDIT_SERVICE
    from pitstore.training.frames import FrameError
    from pitstore.training.labels import LabelError

    settings = get_settings()
    try:
        cfg = MonitorSettings()
        window = Window(parse_day(day_from, "--from"), parse_day(day_to, "--to"))
        loaded = load_model(settings, model, service=service)
        serves = card_service(loaded.card)
        if serves != service:
            raise MonitorError(f"model {loaded.version} serves {serves}: add --service {serves}")
        if not cache_path(settings, loaded.version).exists():
            step(f"building the reference of {loaded.version} (once; cached)")
        if serves == CREDIT_SERVICE:
            run = monitor_credit
        doc = run(settings, ServingSettings().resolved_audit_dir, loaded, window, cfg)
    except (MonitorError, ModelRegistryError, ReferenceError, LabelError, FrameError) as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"PITSTORE_MONITOR_* settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "monitor.json").write_text(json.dumps(doc, indent=2, default=str))
        (out / "alerts.json").write_text(json.dumps(doc["alerts"], indent=2))
    if html is not None:
        from pitstore.monitor.html import render

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render(doc))
    if as_json:
        console.print_json(json.dumps(doc, default=str))
    else:
        _print(doc)
    if doc["alerts"]:
        raise typer.Exit(1)


def _print(doc: dict[str, Any]) -> None:
    ref = doc["reference"]
    console.print(
        f"model {doc['model_version']}: {doc['decisions']} decisions "
        f"{doc['window']['from']} .. {doc['window']['to']}; reference {ref['rows']} rows"
        + ("" if ref["matches_card"] else " [red](frame fingerprint differs from the card)[/]")
    )
    perf = doc["performance"]
    if "credit" in doc:
        c = doc["credit"]
        mix = ", ".join(f"{k} {v:.1%}" for k, v in c["mix"].items())
        console.print(
            f"decisions: {mix}; rule declines {c['rule_decline_share']:.1%}, "
            f"referred for missing/stale features or model {c['refer_for_data_rate']:.1%}"
        )
    if "unavailable" in perf:
        console.print(f"performance: not judged ({perf['unavailable']})")
    elif "verdict" in perf:
        v = perf["verdict"]
        if v is None:
            console.print(f"performance: {perf['note']}")
        else:
            oe = v["observed_over_expected"]
            console.print(
                f"performance: {v['rows']} matured decisions, {v['defaults']} defaults, "
                f"observed/expected {'n/a' if oe is None else f'{oe:.2f}'}"
                + ("" if v["judged"] else f" ({v['note']})")
                + f"; {perf['pending_maturity']} not matured yet"
            )
    else:
        judged = [w for w in perf["weeks"] if w["judged"]]
        unjudged = len(perf["weeks"]) - len(judged)
        console.print(
            f"performance: {len(judged)} judged week(s)"
            + (f", {unjudged} with too few decisions or frauds" if unjudged else "")
            + f"; {perf['pending_maturity']} decisions "
            f"younger than the label maturity (before {perf['mature_before'][:10]}) not judged yet"
        )
    if not doc["alerts"]:
        console.print("[green]no alerts[/]")
        return
    table = Table(title=f"{len(doc['alerts'])} alert(s)")
    for col in ("day", "kind", "subject", "value", "threshold"):
        table.add_column(col)
    for a in doc["alerts"]:
        table.add_row(
            a["day"], a["kind"], a["subject"], f"{a['value']:.4g}", f"{a['threshold']:.4g}"
        )
    err.print(table)


def register(app: typer.Typer) -> None:
    app.command()(monitor)
