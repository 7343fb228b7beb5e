"""`python -m pitstore.cli ...` runs the same CLI as the `pitstore` command."""

from pitstore.cli.app import app

app()
