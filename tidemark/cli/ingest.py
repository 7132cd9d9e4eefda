"""``tidemark ingest``: CDC of a source into landing (run, status, resync)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.errors import TidemarkError
from tidemark.settings import load_settings
from tidemark.stack.databases import Databases, ensure_databases

app = typer.Typer(help="CDC from the source's logical replication slot into landing.",
                  no_args_is_help=True)

SourceOpt = Annotated[str, typer.Option("--source", help="Source name (mirror schema, slot).")]
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


@app.command()
def run(source: SourceOpt = "shop", contracts: ContractsOpt = None,
        no_contracts: NoContractsOpt = False) -> None:
    """Stream the source into landing until SIGTERM or Ctrl-C (finishing the transaction in hand).

    The publication is created with the source's admin URL; the stream uses the ingestion role.
    """
    import ingestion

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with ingestion_errors():
        contract_set = load_contract_set(contracts, no_contracts)
        dbs = databases()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        ingestion.run(dbs.source_ingest, dbs.landing_app, source, contracts=contract_set,
                      stop=stop, setup_dsn=dbs.source)


@app.command()
def status(source: SourceOpt = "shop", json_out: JsonOpt = False) -> None:
    """Slot, confirmed LSN, retained WAL, lag, rows/s, dead letters and paused tables."""
    from ingestion.status import status as ingest_status

    with ingestion_errors():
        dbs = databases()
        payload = ingest_status(dbs.source, dbs.landing_app, source)
    if json_out:
        emit_json(payload)
        return
    rows = [(k, v) for k, v in payload.items() if k != "paused_tables"]
    emit_table(f"tidemark ingest status ({source})", ["what", "value"], rows)
    for item in payload["paused_tables"]:
        console.print(f"[bold yellow]paused[/] {item['table']}: {item['reason']}",
                      highlight=False)


@app.command()
def resync(
    table: Annotated[str | None, typer.Argument(help="Landing table name to rebuild.")] = None,
    all_tables: Annotated[bool, typer.Option("--all", help="Re-snapshot every table.")] = False,
    source: SourceOpt = "shop", contracts: ContractsOpt = None,
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
        result = do_resync(dbs.source_ingest, dbs.landing_app, source, table,
                           contracts=load_contract_set(contracts, no_contracts),
                           setup_dsn=dbs.source)
    console.print(result)
