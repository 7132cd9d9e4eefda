"""``tidemark source``: register, list and remove the databases Tidemark replicates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tidemark.cli.ingest import JsonOpt, databases, ingestion_errors
from tidemark.cli.output import console, emit_json, emit_table

app = typer.Typer(help="The source databases Tidemark replicates (one slot and publication "
                       "each).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Source name: lower-case letters, digits, _ "
                                             "(landing schema, slot tidemark_NAME).")]


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@app.command()
def add(
    name: NameArg,
    url: Annotated[str | None, typer.Option(
        help="postgresql://USER@HOST:PORT/DBNAME of a role with REPLICATION and SELECT, "
             "without password (it comes from TIDEMARK_SOURCE_<NAME>_PASSWORD or ~/.pgpass).")
                   ] = None,
    url_env: Annotated[str | None, typer.Option(
        help="Instead of --url: an environment variable holding the whole URL.")] = None,
    admin_url: Annotated[str | None, typer.Option(
        help="URL of the tables' owner (or a superuser) to create the publication, without "
             "password (TIDEMARK_SOURCE_<NAME>_ADMIN_PASSWORD). Default: --url.")] = None,
    admin_url_env: Annotated[str | None, typer.Option(
        help="Instead of --admin-url: an environment variable holding it.")] = None,
    schemas: Annotated[str | None, typer.Option(
        help="Schemas to replicate, comma-separated (default: public); tables created later "
             "in them are picked up.")] = None,
    tables: Annotated[str | None, typer.Option(
        help="Instead of --schemas: tables to replicate, comma-separated schema.table.")
                      ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a source database, create its publication and register it.

    Only tables that can be published safely (a primary key, a replica identity index, or
    REPLICA IDENTITY FULL) are published; the others are listed with the statement that fixes
    them. Nothing is copied yet: `tidemark ingest run` takes the snapshot.
    """
    from ingestion.source_admin import add_source
    from ingestion.sources import SourceSpec

    with ingestion_errors():
        spec = SourceSpec(name, url=url, url_env=url_env, admin_url=admin_url,
                          admin_url_env=admin_url_env, schemas=tuple(_split(schemas) or ()) or
                          None, tables=tuple(_split(tables) or ()) or None)
        report = add_source(databases().landing_app, spec)
    pub = report.publication
    if json_out:
        emit_json({**spec.as_dict(), "published": pub.published,
                   "not_published": [{"table": t.qualified, "fix": t.advice()}
                                     for t in pub.unpublishable],
                   "publication_managed": pub.managed, "warnings": report.warnings,
                   "to_run_on_source": pub.pending})
        return
    console.print(f"Source [bold]{name}[/] registered ({spec.shown_url()}, "
                  f"{spec.selection.describe()}).", highlight=False)
    console.print(f"Publication {pub.publication}: {len(pub.published)} tables"
                  + (f" ({', '.join(pub.published)})" if pub.published else "") + ".",
                  highlight=False)
    if not pub.managed:
        console.print("It was made for all tables or whole schemas by someone else and is used "
                      "as it is.", highlight=False)
    for table in pub.unpublishable:
        console.print(f"[yellow]not replicated[/] {table.advice()}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)
    if pub.pending:
        console.print(f"[yellow]to run on the source[/] as the owner of the tables and of "
                      f"{pub.publication} (or a superuser); this role may not "
                      f"({escape(pub.denied)}):",
                      highlight=False)
        for statement in pub.pending:
            console.print(f"  {statement}", highlight=False, markup=False)
    console.print(f"Next: `tidemark contracts init {name}` (optional), then "
                  f"`tidemark ingest run --source {name}`; a running `tidemark up` (or "
                  f"`tidemark ingest run` of every source) streams it within 30 seconds by "
                  f"itself.", highlight=False)


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """Registered sources: URL (never a password), selection, slot, tables, last error."""
    from ingestion.source_admin import describe_sources

    with ingestion_errors():
        items = describe_sources(databases().landing_app)
    if json_out:
        emit_json(items)
        return
    emit_table("sources", ["name", "url", "replicates", "slot", "tables", "snapshot",
                           "last error"],
               [(i["name"], i["url"], i["selection"], i["slot"], i["tables"],
                 (i["snapshot"] or {}).get("state", "-"), i["last_error"] or "-")
                for i in items])


@app.command()
def remove(
    name: NameArg,
    drop_landing: Annotated[bool, typer.Option(
        help="Also drop its landing schema, changelogs and state rows (and what depends on "
             "them: views built on the mirror).")] = False,
    force: Annotated[bool, typer.Option(
        help="Unregister even if the source cannot be reached (prints what to drop there).")
                     ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Drop the source's replication slot and publication and unregister it.

    Stop `tidemark ingest run` for it first. Landing keeps its data unless --drop-landing.
    Dagster's catalog (the instance of `tidemark up` in TIDEMARK_HOME) forgets its tables.
    """
    from ingestion.source_admin import remove_source
    from tidemark.settings import load_settings
    from tidemark.stack.dagster_forget import forget_source_assets

    with ingestion_errors():
        report = remove_source(databases().landing_app, name, drop_landing=drop_landing,
                               force=force)
    try:
        forgotten = forget_source_assets(load_settings(), name)
    except Exception as exc:  # the source is removed already: say what is left to do
        forgotten = []
        console.print(f"[yellow]Dagster's catalog still lists {name}'s tables[/] (its storage "
                      f"said: {escape(str(exc))}); wipe them in the UI (Catalog, select, Wipe "
                      "materializations).", highlight=False, soft_wrap=True)
    if json_out:
        emit_json({**report.__dict__, "dagster_assets_wiped": forgotten})
        return
    console.print(f"Source [bold]{name}[/] removed.", highlight=False)
    for item in report.dropped:
        console.print(f"dropped on the source: {item}", highlight=False)
    for statement in report.pending:
        console.print(f"[yellow]run on the source[/]: {statement}", highlight=False)
    for item in report.landing_dropped:
        console.print(f"dropped from landing: {item}", highlight=False)
    if report.landing_left:
        console.print("Left in landing (drop with --drop-landing): "
                      + "; ".join(report.landing_left) + ".", highlight=False)
    if forgotten:
        console.print(f"wiped from Dagster's catalog: {len(forgotten)} assets of {name} "
                      f"({', '.join(forgotten)})", highlight=False, soft_wrap=True)
    kept = _contracts_left(name)
    if kept is not None:
        sources = _dbt_sources_left(kept, name)
        also = f" and {sources}" if sources is not None else ""
        console.print(f"[yellow]Remove {kept}{also} too[/] (`tidemark contracts init` wrote "
                      f"{'them' if also else 'it'}): Dagster still defines assets for the "
                      f"source's tables from the contracts, and warns on each that {name!r} is "
                      "not registered.", highlight=False, soft_wrap=True)


def _dbt_sources_left(contracts_dir: Path, name: str) -> Path | None:
    """The dbt sources file ``contracts init`` wrote beside the contracts, if it is there."""
    path = (contracts_dir.parent.parent / "dbt_project" / "models" / "staging"
            / f"_{name}__sources.yml")
    return path if path.is_file() else None


def _contracts_left(name: str) -> Path | None:
    """The contracts directory of a source (``contracts/<name>/``), if it is still there."""
    from contracts.loader import PACKAGE_ROOT

    folder = Path(PACKAGE_ROOT) / name
    return folder if folder.is_dir() and any(folder.glob("*.yml")) else None
