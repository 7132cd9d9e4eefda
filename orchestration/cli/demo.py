"""``tidemark demo``: the demo source "shop" (schema, seed, load)."""

from __future__ import annotations

import typer

from orchestration.cli.output import console
from orchestration.demo.schema import apply_schema
from orchestration.stack.databases import ensure_databases
from orchestration.stack.settings import load_settings

app = typer.Typer(help="The demo source 'shop': a grocery-delivery OLTP database.",
                  no_args_is_help=True)


@app.command()
def schema() -> None:
    """Create the demo tables in the source database (idempotent)."""
    dbs = ensure_databases(load_settings())
    apply_schema(dbs.source)
    console.print("Demo schema is in place.")
