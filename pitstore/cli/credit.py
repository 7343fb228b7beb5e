"""CLI for the credit PD model: `pitstore credit validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pitstore.cli.common import console, step
from pitstore.cli.common import fail as _fail

credit_app = typer.Typer(help="The credit pre-screening PD model.", no_args_is_help=True)


def _fmt(cell: dict[str, float]) -> str:
    return f"{cell['mean']:.3f} ± {cell['sd']:.3f}"


@credit_app.command("validate")
def validate(
    data: Annotated[
        Path, typer.Option(help="The German Credit parquet (datasets/ in the repository).")
    ] = Path("datasets/german_credit.parquet"),
    seeds: Annotated[int, typer.Option(min=2, max=50, help="Random splits to average.")] = 5,
    out: Annotated[
        Path | None, typer.Option(help="Also write the full report as JSON here.")
    ] = None,
) -> None:
    """Run the PD pipeline on real public loan data (German Credit) and report
    discrimination and calibration, monotone against unconstrained."""
    from pitstore.checks.credit_validation import CreditDataError, validate_german_credit

    step(f"fitting {2 * seeds} models on {data}")
    try:
        report: dict[str, Any] = validate_german_credit(data, seeds=seeds)
    except CreditDataError as exc:
        _fail(str(exc))
    summary = report["summary"]
    table = Table(
        title=f"German Credit: {report['rows']} loans, {report['defaults']} bad; {report['split']}"
    )
    table.add_column("metric")
    for variant in summary:
        table.add_column(variant, justify="right")
    for key in summary["monotone"]:
        table.add_row(key, *(_fmt(summary[v][key]) for v in summary))
    console.print(table)
    cut = report["first_split"]["cutoffs"]
    shares = ", ".join(
        f"{name} {v['share']:.0%} (bad rate {v['default_rate'] or 0:.0%})"
        for name, v in cut["on_validation"].items()
    )
    console.print(
        f"cut-offs (seed 0, break-even PD {cut['economics']['break_even_pd']:.3f}): "
        f"pre-qualify PD < {cut['prequalify_below']:.3f}, decline PD >= {cut['decline_pd']:.3f}; "
        f"{shares}",
        highlight=False,
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
        console.print(f"report: {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(credit_app, name="credit")
