"""``tidemark dlq``: dead letters of ingestion (list, show, replay, purge)."""

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
    on_landing,
    parse_age,
    pick_source,
)
from tidemark.cli.output import console, emit_json, emit_table

app = typer.Typer(help="Changes that broke their contract (tidemark.dead_letters).",
                  no_args_is_help=True)


LIST_LIMIT = 100
"""Letters `tidemark dlq list` shows unless ``--limit`` says otherwise."""


def parse_limit(value: str) -> int | None:
    """``--limit``: a positive number of letters, or ``all`` (or 0) for every one (None)."""
    text = value.strip().lower()
    if text in ("all", "0"):
        return None
    if not text.isdigit():
        raise typer.BadParameter(f"expected a number of letters or 'all', got {value!r}",
                                 param_hint="--limit")
    return int(text)


@app.command("list")
def list_(source: SourceOpt = None,
          table: Annotated[str | None, typer.Option(help="Only this table.")] = None,
          all_: Annotated[bool, typer.Option("--all", help="Include replayed letters.")] = False,
          limit: Annotated[str, typer.Option(
              help="Show at most this many letters, the oldest; 'all' (or 0) shows every "
                   "one.")] = str(LIST_LIMIT),
          json_out: JsonOpt = False) -> None:
    """List dead letters not yet replayed, the 100 oldest first (--limit for more)."""
    from ingestion.dead_letters import count_dead_letters, list_dead_letters
    from tidemark.cli.status_sources import reader_databases
    from tidemark.settings import load_settings

    most = parse_limit(limit)
    with ingestion_errors():
        dbs = reader_databases(load_settings())
        source = pick_source(dbs, source).name
        letters = list_dead_letters(dbs.landing_app, source, table=table,
                                    include_replayed=all_, limit=most)
        total = len(letters)
        if most is not None and total >= most:
            total = count_dead_letters(dbs.landing_app, source, table=table,
                                       include_replayed=all_)
    if json_out:
        emit_json(letters)
        return
    emit_table(f"dead letters of {source}", ["id", "table", "op", "lsn", "first seen", "reason"],
               [(d["id"], d["table_name"], d["op"], d["lsn"], d["first_seen_at"], d["reason"])
                for d in letters])
    if total > len(letters):
        console.print(f"The {len(letters)} oldest of {total} dead letters; --limit N shows more "
                      f"(--limit all: every one).", highlight=False)


@app.command()
def purge(older_than: Annotated[str, typer.Option(
              "--older-than", help="Delete letters first seen longer ago than this, e.g. 30d, "
                                   "12h, 90m.")],
          source: SourceOpt = None,
          waiting: Annotated[bool, typer.Option(
              "--waiting", help="Also letters still waiting (never replayed, or still invalid):"
                                " their changes are lost for good.")] = False,
          json_out: JsonOpt = False) -> None:
    """Delete old dead letters: replayed ones (applied or superseded), --waiting also the rest."""
    from ingestion.dead_letters import purge_dead_letters

    age = parse_age(older_than, "--older-than")
    source, deleted = on_landing(source, lambda url, src: purge_dead_letters(
        url, src, age, waiting=waiting))
    if json_out:
        emit_json({"deleted": deleted})
    else:
        kind = "dead letters" if waiting else "replayed dead letters"
        console.print(f"Deleted {deleted} {kind} of {source} first seen more than "
                      f"{older_than} ago.", highlight=False)


@app.command()
def show(letter_id: Annotated[int, typer.Argument(help="Dead letter id (from `dlq list`).")],
         json_out: JsonOpt = False) -> None:
    """Show one dead letter: reason, violations and the raw row."""
    from ingestion.dead_letters import show_dead_letter
    from tidemark.cli.status_sources import reader_databases
    from tidemark.settings import load_settings

    with ingestion_errors():
        letter = show_dead_letter(reader_databases(load_settings()).landing_app, letter_id)
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
    from ingestion.dead_letters import replay as do_replay

    window = None if since is None else parse_age(since, "--since")
    with ingestion_errors():
        dbs = databases()
        counts = do_replay(dbs.landing_app, pick_source(dbs, source).name,
                           contracts=load_contract_set(contracts, no_contracts), ids=ids,
                           table=table, since=window)
    if json_out:
        emit_json(counts)
    else:
        console.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
