"""`pitstore`: the one command-line entry point for users.

Data lives under PITSTORE_HOME (default ./data); Redis is REDIS_URL. Each
command group lives in its own module and registers itself here; nothing
imports this package.
"""

from __future__ import annotations

import typer

from pitstore.cli import backfill, batch, credit, monitor, parity, serving, training

app = typer.Typer(
    name="pitstore",
    help="Point-in-time feature store for bank fraud and credit scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

batch.register(app)
backfill.register(app)
serving.register(app)
app.add_typer(parity.parity_app, name="parity")
app.add_typer(serving.audit_app, name="audit")
training.register(app)
monitor.register(app)
credit.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
