"""``tidemark up``: the whole stack on one machine, in the foreground until Ctrl-C."""

from __future__ import annotations

from orchestration.cli.output import console
from orchestration.demo.schema import apply_schema
from orchestration.stack.databases import ensure_databases
from orchestration.stack.settings import load_settings


def up() -> None:
    """Start PostgreSQL, the demo source and its workload; print the psql URL."""
    settings = load_settings()
    dbs = ensure_databases(settings)
    apply_schema(dbs.source)
    console.print(f"psql {dbs.reader}")
