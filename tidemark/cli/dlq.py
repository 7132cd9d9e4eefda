"""``tidemark dlq``: dead letters of ingestion (list, show, replay)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tidemark.cli.ingest import (
    ContractsOpt,
    JsonOpt,
    NoContractsOpt,
    SourceOpt,
    databases,
    ingestion_errors,
    load_contract_set,
    pick_source,
)
from tidemark.cli.output import console, emit_json, emit_table

app = typer.Typer(help="Changes that broke their contract (tidemark.dead_letters).",
                  no_args_is_help=True)


@app.command("list")
def list_(source: SourceOpt = None,
          table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
          all_: Annotated[bool, typer.Option("--all", help="Include replayed letters.")] = False,
          json_out: JsonOpt = False) -> None:
    """List dead letters not yet replayed (oldest first)."""
    from ingestion.dead_letters import list_dead_letters

    with ingestion_errors():
        dbs = databases()
        source = pick_source(dbs, source).name
        letters = list_dead_letters(dbs.landing_app, source, table=table,
                                    include_replayed=all_)
    if json_out:
        emit_json(letters)
        return
    emit_table(f"dead letters of {source}", ["id", "table", "op", "lsn", "first seen", "reason"],
               [(d["id"], d["table_name"], d["op"], d["lsn"], d["first_seen_at"], d["reason"])
                for d in letters])


@app.command()
def show(letter_id: Annotated[int, typer.Argument(help="Dead letter id (from `dlq list`).")],
         json_out: JsonOpt = False) -> None:
    """Show one dead letter: reason, violations and the raw row."""
    from ingestion.dead_letters import show_dead_letter

    with ingestion_errors():
        letter = show_dead_letter(databases().landing_app, letter_id)
    if json_out:
        emit_json(letter)
        return
    console.print_json(json.dumps(letter, default=str))


@app.command()
def replay(source: SourceOpt = None,
           ids: Annotated[list[int] | None, typer.Argument(help="Ids (default: all).")] = None,
           table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
           since: Annotated[str | None, typer.Option(
               help="Only letters of changes committed within this window before now, e.g. "
                    "6h, 30m, 1d12h (a bad window: see the README's runbook).")] = None,
           contracts: ContractsOpt = None, no_contracts: NoContractsOpt = False,
           json_out: JsonOpt = False) -> None:
    """Re-validate against the current contract; apply unless a newer change for the key landed."""
    from contracts.fileformat import parse_duration
    from ingestion.dead_letters import replay as do_replay

    window = None
    if since is not None:
        try:
            window = parse_duration(since)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--since") from None
    with ingestion_errors():
        dbs = databases()
        counts = do_replay(dbs.landing_app, pick_source(dbs, source).name,
                           contracts=load_contract_set(contracts, no_contracts), ids=ids,
                           table=table, since=window)
    if json_out:
        emit_json(counts)
    else:
        console.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
