"""What every command shares: the consoles, and how a command fails.

On a terminal, rich sizes output to the window. In CI logs (no TTY) rich would
assume 80 columns and cut tables (model versions that `models promote` needs);
there the width is wide enough for any table, and colours are off.
"""

from __future__ import annotations

import sys
from datetime import date
from typing import NoReturn

import typer
from rich.console import Console

# Wide enough for every table pitstore prints (the widest is ~180 columns).
LOG_WIDTH = 240


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH, no_color=True, soft_wrap=True)


console = _console(stderr=False)
err = _console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, no traceback. Exit 2: usage or input error; 1: a failed check."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def step(message: str) -> None:
    """A progress line on stderr for long work (keeps CI logs from going silent)."""
    err.print(f"[dim]…[/] {message}", highlight=False)


def parse_day(text: str, what: str) -> date:
    """A ``YYYY-MM-DD`` option, or one clear line and exit 2."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{what} must be a day, YYYY-MM-DD, not {text!r}")
