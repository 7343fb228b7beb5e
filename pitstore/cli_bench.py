"""`pitstore bench`: benchmarks against the baselines a user would pick instead (issue 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        size: Annotated[
            str, typer.Option(help="tiny (smoke), small (< 10 min on 2 cores) or medium.")
        ] = "small",
        out: Annotated[
            Path | None, typer.Option(help="JSON output (default bench/results/latest.json).")
        ] = None,
        keep: Annotated[bool, typer.Option(help="Keep the temporary data directory.")] = False,
        only: Annotated[
            list[str] | None,
            typer.Option(
                help="Run only these benchmarks (repeatable): materialize, online, "
                "score_http, frames, transform. E.g. --size medium --only frames."
            ),
        ] = None,
        idle_hold: Annotated[
            bool,
            typer.Option(
                help="Hold the cores' idle states off for the run, every contender alike "
                "(PM QoS; a VM's idle wake-up otherwise costs up to ms: bench/machine.py)."
            ),
        ] = True,
    ) -> None:
        """Build data, run every benchmark side by side with its baselines, print one table."""
        from bench.harness import SIZES
        from bench.run import ALL, run_all

        if size not in SIZES:
            raise typer.BadParameter(f"size must be one of {sorted(SIZES)}", param_hint="--size")
        unknown = sorted(set(only or ()) - set(ALL))
        if unknown:
            raise typer.BadParameter(
                f"unknown benchmark(s) {unknown}; use {list(ALL)}", param_hint="--only"
            )
        run_all(size, out, keep, tuple(only) if only else ALL, idle_hold)
