"""The scoring API's commands: `serve`, `keys new`, `explain` and `audit verify`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pitstore.cli.common import console, err

keys_app = typer.Typer(help="API keys for the scoring API.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the scoring API (FastAPI on uvicorn). Configure with PITSTORE_* variables;
    /v1 calls need an API key (`pitstore keys new`, then PITSTORE_API_KEYS)."""
    import uvicorn

    from pitstore.serving.app import create_app
    from pitstore.serving.auth import KeyConfigError
    from pitstore.serving.settings import ServingSettings

    settings = ServingSettings()
    try:
        app = create_app(settings)
    except KeyConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if not (settings.api_keys or settings.api_keys_file):
        err.print(
            "[yellow]no API keys configured: every /v1 request will get a 401. Make one "
            "with `pitstore keys new --scope score` and set PITSTORE_API_KEYS.[/]"
        )
    console.print(
        f"serving model {settings.model_version!r} on http://{host}:{port} "
        f"(budget {settings.budget_ms} ms, audit {settings.resolved_audit_dir})"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # idle keep-alive connections close after this; a stalled body is the
        # app's to cut (settings.body_timeout_s, serving.guard)
        timeout_keep_alive=5,
        # headers past 16 KiB are refused by h11 (httptools has its own cap)
        h11_max_incomplete_event_size=16 * 1024,
    )


@keys_app.command("new")
def new_key(
    scope: Annotated[
        list[str],
        typer.Option(help="A scope to grant (repeat): score, decisions:read."),
    ],
    name: Annotated[str, typer.Option(help="A name for logs and metrics (not secret).")] = "key",
) -> None:
    """Make an API key: prints the key once, and its entry for PITSTORE_API_KEYS.

    Give the key to the caller; the entry holds the key's SHA-256, never the key."""
    from pitstore.serving.auth import KeyConfigError, entry_for, new_key, parse_entries

    key = new_key()
    entry = entry_for(name, key, scope)
    try:
        parse_entries(entry, "--scope/--name")
    except KeyConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    # plain print: rich would wrap or colour what has to be copied exactly
    print(f"key (shown once, send as 'Authorization: Bearer <key>'): {key}")
    print(f"entry for PITSTORE_API_KEYS (';'-separated) or the keys file: {entry}")


def explain(
    decision_id: Annotated[
        str, typer.Argument(help="A decision_id from /v1/score or /v1/prescreen.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reload a decision's model version, recompute its score from the audit log."""
    from pitstore.serving.explain import ExplainError, UnverifiedRecord, replay
    from pitstore.serving.settings import ServingSettings

    try:
        result = replay(ServingSettings(), decision_id)
    except ExplainError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(1 if isinstance(exc, UnverifiedRecord) else 2) from exc
    logged = result.logged
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "decision_id": decision_id,
                    "matches": result.matches,
                    "mismatches": result.mismatches,
                    "kind": logged.get("kind", "score"),
                    "logged_score": logged.get("score", logged.get("pd")),
                    "recomputed_score": result.score,
                    "decision": result.decision,
                    "model_version": logged["model_version"],
                    "fallback": logged.get("fallback", logged.get("refer_reason")),
                    "reasons": result.reasons,
                }
            )
        )
    else:
        table = Table(title=f"decision {decision_id}")
        table.add_column("")
        table.add_column("logged")
        table.add_column("recomputed")
        table.add_row("decision", str(logged["decision"]), result.decision)
        name = "PD" if logged.get("kind") == "prescreen" else "score"
        table.add_row(name, repr(logged.get("score", logged.get("pd"))), repr(result.score))
        table.add_row("model version", str(logged["model_version"]), str(logged["model_version"]))
        if logged.get("kind") == "prescreen":
            rules = ", ".join(logged["rules_fired"]) or "none"
            table.add_row("rules fired", rules, rules)
            table.add_row("refer reason", str(logged["refer_reason"]), str(logged["refer_reason"]))
        else:
            table.add_row("fallback", str(logged["fallback"]), str(logged["fallback"]))
        console.print(table)
        for reason in result.reasons:
            console.print(f"  - {reason['text']}")
        verdict = "[green]matches the log[/]" if result.matches else "[red]DOES NOT MATCH[/]"
        console.print(verdict)
        for problem in result.mismatches:
            console.print(f"  [red]{problem}[/]")
    if not result.matches:
        raise typer.Exit(1)


audit_app = typer.Typer(help="The decision audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    day: Annotated[
        str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check every audit file's hash chain and signed checkpoints; exit 1 on any failure."""
    from datetime import date

    from pitstore.serving.audit_chain import AuditKeyError, audit_key
    from pitstore.serving.audit_verify import verify_tree
    from pitstore.serving.settings import ServingSettings

    if day is not None:
        try:
            date.fromisoformat(day)
        except ValueError:
            err.print(f"[bold red]error:[/] --day {day!r} is not a date (YYYY-MM-DD)")
            raise typer.Exit(2) from None
    settings = ServingSettings()
    root = settings.resolved_audit_dir
    try:
        key = audit_key(settings)
    except AuditKeyError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    reports = verify_tree(root, key, day)
    ok = all(r.ok for r in reports)
    if as_json:
        payload = {"audit_dir": str(root), "ok": ok, "files": [r.as_dict() for r in reports]}
        console.print_json(json.dumps(payload))
    else:
        for r in reports:
            mark = "[green]ok[/]" if r.ok else "[bold red]FAIL[/]"
            console.print(
                f"{mark} {r.file}: {r.records} records, {r.signed} signed"
                + (", closed" if r.closed else ""),
                soft_wrap=True,
            )
            for p in r.problems:
                where = f" (line {p.line})" if p.line is not None else ""
                console.print(f"    [red]{p.kind}{where}:[/] {p.message}", soft_wrap=True)
            for note in r.notes:
                console.print(f"    note: {note}", soft_wrap=True)
        bad = sum(not r.ok for r in reports)
        console.print(
            f"{len(reports)} files, {bad} failing" if reports else f"no audit files in {root}"
        )
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(explain)
    app.add_typer(keys_app, name="keys")
