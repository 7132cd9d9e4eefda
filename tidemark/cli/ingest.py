"""``tidemark ingest``: CDC of the registered sources into landing (run, status, resync)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.errors import TidemarkError
from tidemark.settings import load_settings
from tidemark.stack.databases import Databases, ensure_databases

if TYPE_CHECKING:
    from ingestion.sources import SourceSpec

T = TypeVar("T")

app = typer.Typer(help="CDC from the registered sources' replication slots into landing.",
                  no_args_is_help=True)

SourceOpt = Annotated[str | None, typer.Option(
    "--source", help="A registered source (default: the only one registered; "
                     "`tidemark source list`).")]
SourcesOpt = Annotated[list[str] | None, typer.Option(
    "--source", help="Only this registered source (repeatable; default: every one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
ContractsOpt = Annotated[Path | None, typer.Option(
    "--contracts", help="Contracts folder (default: the shipped contracts/).")]
NoContractsOpt = Annotated[bool, typer.Option("--no-contracts",
                                              help="Apply without contract validation.")]


class IngestCommandError(TidemarkError):
    """An ingestion error reported by the CLI (the message says what to do)."""


@contextmanager
def ingestion_errors() -> Iterator[None]:
    """Turn ingestion and contract errors into a clear CLI message."""
    from contracts import ContractsError
    from ingestion.errors import IngestionError

    try:
        yield
    except (IngestionError, ContractsError, ValueError) as exc:
        raise IngestCommandError(str(exc)) from None


def databases() -> Databases:
    """The stack's databases (the embedded server is started if it is used)."""
    return ensure_databases(load_settings())


def load_contract_set(folder: Path | None, disabled: bool) -> Any:
    """The contract set to validate with, or None."""
    if disabled:
        return None
    from contracts import load_contracts

    return load_contracts(folder)


def pick_source(dbs: Databases, name: str | None) -> SourceSpec:
    """The registered source ``name``, or the only one when no name is given.

    Raises:
        UnknownSourceError: ``name`` is not registered.
        IngestCommandError: no name, and none or several sources are registered.
    """
    from ingestion.sources import get_source, list_sources

    if name is not None:
        return get_source(dbs.landing_app, name)
    specs = list_sources(dbs.landing_app)
    if len(specs) == 1:
        return specs[0]
    if not specs:
        raise IngestCommandError(
            "No source is registered. Register one with `tidemark source add NAME --url "
            "postgresql://USER@HOST:PORT/DBNAME` (or start the demo with `tidemark up`).")
    raise IngestCommandError(f"Several sources are registered ({', '.join(s.name for s in specs)}"
                             f"); choose one with --source NAME.")


def parse_age(value: str, option: str) -> timedelta:
    """A duration option (``30d``, ``12h``, ``90m``, ``1d12h``) as a timedelta."""
    from contracts.fileformat import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def on_landing(source: str | None, action: Callable[[str, str], T]) -> tuple[str, T]:
    """``action(landing_app_url, source_name)`` for a registered source (``source``, or the only
    one), ingestion errors as clear messages; returns the source name and the action's result."""
    with ingestion_errors():
        dbs = databases()
        name = pick_source(dbs, source).name
        return name, action(dbs.landing_app, name)


def _logging() -> None:
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(utc_formatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])


def utc_formatter() -> logging.Formatter:
    """The format of a log file (``logs/ingest.log``): each line stamped in UTC, ISO 8601 with
    its zone, like ``tick.log``, the server's log and every time ``tidemark status`` shows. In
    the writer's local time without a zone, a user east or west of UTC read hours that matched
    nothing else."""
    formatter = logging.Formatter("%(asctime)s.%(msecs)03d+00:00 %(levelname)s %(name)s: "
                                  "%(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    return formatter


@app.command()
def run(source: SourcesOpt = None, contracts: ContractsOpt = None,
        no_contracts: NoContractsOpt = False) -> None:
    """Stream every registered source (or those named) until SIGTERM or Ctrl-C.

    A first run copies each source's tables (progress shown), then streams. A source that fails
    for good (login refused, wal_level, ...) is reported once and the others go on; the command
    then exits with status 2. Changed contracts apply without a restart; without --source, a
    source registered meanwhile (`tidemark source add`) is streamed within 30 seconds.
    """
    from ingestion.runner import run_sources
    from ingestion.sources import get_source, list_sources
    from tidemark.cli.progress import snapshot_callback

    _logging()
    with ingestion_errors():
        contract_set = load_contract_set(contracts, no_contracts)
        dbs = databases()
        specs = [get_source(dbs.landing_app, n) for n in source] if source else \
            list_sources(dbs.landing_app)
        if not specs:
            pick_source(dbs, None)  # explains how to register one
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        display = snapshot_callback(console)
        logging.getLogger("tidemark.ingestion").info(
            "ingesting %s into landing", ", ".join(s.name for s in specs))
        try:
            errors = run_sources(specs, dbs.landing_app, contracts=contract_set, stop=stop,
                                 on_progress=display,
                                 discover=None if source else
                                 (lambda: list_sources(dbs.landing_app)),
                                 heartbeat_s=load_settings().heartbeat_s)
        finally:
            display.close()
    if errors:
        raise IngestCommandError("\n".join(errors.values()))


def _status_one(dbs: Databases, spec: SourceSpec) -> dict[str, Any]:
    from ingestion.sources import SourceError
    from ingestion.status import status as ingest_status

    try:
        payload = ingest_status(spec.dsn(), dbs.landing_app, spec.name)  # where the slot is
    except (SourceError, OSError) as exc:
        return {"source": spec.name, "error": str(exc)}
    except Exception as exc:  # psycopg errors: the source is unreachable, say why
        import psycopg

        if not isinstance(exc, psycopg.Error):
            raise
        from ingestion.failures import first_line

        return {"source": spec.name, "error": f"cannot read the source: {first_line(exc)}"}
    from contracts.errors import ContractsError
    from ingestion.watermarks import watermark_status

    try:
        payload["watermarks"] = watermark_status(dbs.landing_app, spec.name)
    except ContractsError as exc:  # the stream's own figures are still worth showing
        payload["watermarks"] = []
        payload["contracts_error"] = (f"a contract does not load, fix it: {exc} (a running "
                                      "ingestion keeps the contracts it had until then)")
    payload["selection"] = spec.selection.describe()
    payload["last_error"] = spec.last_error
    return payload


def _show_status(payload: dict[str, Any]) -> None:
    name = payload["source"]
    if "error" in payload:
        console.print(f"[bold red]{name}[/]: {payload['error']}", highlight=False)
        return
    snap = payload.get("snapshot")
    rows = [(k, v) for k, v in payload.items()
            if k not in ("paused_tables", "snapshot", "last_error", "watermarks",
                         "contracts_error", "lock_wait", "busy")]
    emit_table(f"tidemark ingest status ({name})", ["what", "value"], rows)
    marks = payload.get("watermarks") or []
    if marks:
        columns = ["table", "watermark", "delay_s", "state", "late_rows"]
        emit_table(f"watermarks ({name})", columns, [[m[c] for c in columns] for m in marks])
    if snap is not None:
        eta = f", copy ETA {snap['eta_s']:.0f} s" if snap.get("eta_s") is not None else ""
        if snap.get("finishing") and snap.get("eta_s") is None:
            eta = f", finishing (checks, indexes) {', '.join(snap['finishing'])}"
        estimate = f" of ~{snap['rows_estimate']:,}" if snap.get("rows_estimate") else ""
        console.print(f"snapshot {snap['state']}: {snap['tables_done']}/{snap['tables_total']} "
                      f"tables, {snap['rows']:,}{estimate} rows, {snap['rows_per_s']:,.0f} "
                      f"rows/s{eta}", highlight=False)
    if payload.get("lock_wait"):
        console.print(f"[bold yellow]stalled[/] {escape(payload['lock_wait']['message'])}",
                      highlight=False)
    if payload.get("busy"):
        console.print(f"[yellow]{escape(payload['busy']['message'])}[/]", highlight=False)
    for item in payload["paused_tables"]:
        label = "resyncing by itself" if item.get("automatic") else "paused"
        console.print(f"[bold yellow]{label}[/] {escape(item['table'])}: "
                      f"{escape(item['reason'])}", highlight=False)
    if payload.get("last_error"):
        console.print(f"[bold red]last error[/]: {payload['last_error']}", highlight=False)
    if payload.get("contracts_error"):
        console.print(f"[bold red]contracts[/]: {escape(payload['contracts_error'])}",
                      highlight=False)


@app.command()
def status(source: SourceOpt = None, json_out: JsonOpt = False) -> None:
    """Per source: slot, confirmed LSN, retained WAL, lag, rows/s, snapshot progress (rows,
    tables, rows/s, ETA), dead letters, paused tables, and a lock the stream waits for (who
    holds it, what to do)."""
    from ingestion.sources import get_source, list_sources
    from tidemark.cli.status_sources import reader_databases

    with ingestion_errors():
        dbs = reader_databases(load_settings())
        specs = [get_source(dbs.landing_app, source)] if source else \
            list_sources(dbs.landing_app)
        if not specs:
            pick_source(dbs, None)
        payloads = [_status_one(dbs, spec) for spec in specs]
    if json_out:
        emit_json(payloads[0] if source else payloads)
        return
    for payload in payloads:
        _show_status(payload)


@app.command()
def resync(
    table: Annotated[str | None, typer.Argument(
        help="Table to rebuild: its landing name (sales__orders) or its source name "
             "(sales.orders).")] = None,
    all_tables: Annotated[bool, typer.Option("--all", help="Re-snapshot every table.")] = False,
    source: SourceOpt = None, contracts: ContractsOpt = None,
    no_contracts: NoContractsOpt = False,
) -> None:
    """Rebuild a paused (or any) table from a fresh snapshot; changes kept while paused land too.

    With --all: drop the slot, take a new initial snapshot of every table (after a lost slot).
    """
    from ingestion.resync import resync as do_resync

    if (table is None) == (not all_tables):
        raise IngestCommandError("Name one TABLE to resync, or pass --all (not both).")
    with ingestion_errors():
        dbs = databases()
        spec = pick_source(dbs, source)
        result = do_resync(spec.dsn(), dbs.landing_app, spec.name, table,
                           contracts=load_contract_set(contracts, no_contracts),
                           setup_dsn=spec.admin_dsn())
    console.print(result)


@app.command()
def prune(older_than: Annotated[str, typer.Option(
              "--older-than", help="Delete changelog rows landed longer ago than this, e.g. "
                                   "90d, 12h, 90m.")],
          table: Annotated[str | None, typer.Option(help="Only this table's changelog.")] = None,
          source: SourceOpt = None, json_out: JsonOpt = False) -> None:
    """Delete old changelog rows (cdc.<source>__<table>) in batches of 50,000.

    Rows after a waiting dead letter stay (replay needs them to tell a superseded letter).
    """
    from ingestion.retention import prune_changelog

    age = parse_age(older_than, "--older-than")
    name, result = on_landing(source, lambda url, src: prune_changelog(url, src, age,
                                                                       table=table))
    if json_out:
        emit_json(result)
        return
    total = sum(r["deleted"] for r in result.values())
    console.print(f"Deleted {total} changelog rows of {name} landed more than {older_than} ago"
                  f" ({len(result)} tables).", highlight=False)
    for table_name, item in result.items():
        if item["kept_for"]:
            console.print(f"{escape(table_name)}: kept the rows from {item['kept_for']} on; "
                          f"replay or purge it (`tidemark dlq`) to prune further.",
                          highlight=False)
        if item.get("stopped"):
            console.print(f"{escape(table_name)}: not pruned further: {item['stopped']}.",
                          highlight=False)
