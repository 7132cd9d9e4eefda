"""Entry point of the ``tidemark`` command: merges the command groups of every part."""

from __future__ import annotations

import sys

import typer

from tidemark.cli import db, demo, up
from tidemark.cli import dlq as dlq_cli
from tidemark.cli import ingest as ingest_cli
from tidemark.cli import status as status_cli
from tidemark.cli import views as views_cli
from tidemark.cli.output import fail
from tidemark.errors import TidemarkError

app = typer.Typer(
    name="tidemark",
    help="Live SQL views, daily truth rebuilt by dbt, and checks that prove the two agree.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(demo.app, name="demo")
app.add_typer(views_cli.app, name="views")
app.add_typer(ingest_cli.app, name="ingest")
app.add_typer(dlq_cli.app, name="dlq")
app.command("up")(up.up)
app.command("status")(status_cli.status)


def main() -> None:
    """Run the CLI; a :class:`TidemarkError` becomes a clear message and exit code 2."""
    try:
        app()
    except TidemarkError as exc:
        fail(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
