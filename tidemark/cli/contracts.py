"""``tidemark contracts``: scaffold contracts for a registered source from its catalog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tidemark.cli.ingest import (
    ContractsOpt,
    IngestCommandError,
    JsonOpt,
    databases,
    ingestion_errors,
    pick_source,
)
from tidemark.cli.output import console, emit_json, emit_table

if TYPE_CHECKING:
    from contracts import ContractSet

app = typer.Typer(help="Data contracts (contracts/<source>/<table>.yml).", no_args_is_help=True)


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="A registered source.")],
    contracts: ContractsOpt = None,
    force: Annotated[bool, typer.Option(help="Overwrite contract files that exist.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a contract per replicated table from the source catalog, for you to tighten.

    Keys, columns, types and nullability come from the source; existing files are kept (unless
    --force). The result is loaded once to prove it is valid. Tables without a contract land
    anyway; a running ingestion picks new or changed contracts up within seconds. The dbt
    sources of the source (NAME and NAME_cdc) are written beside, in
    dbt_project/models/staging/_NAME__sources.yml.
    """
    import psycopg

    from contracts import load_contracts
    from contracts.loader import PACKAGE_ROOT
    from contracts.scaffold import write_contracts
    from ingestion.failures import first_line
    from ingestion.names import publication_name
    from ingestion.shapes import table_shapes

    root = Path(contracts) if contracts is not None else PACKAGE_ROOT
    with ingestion_errors():
        spec = pick_source(databases(), name)
        try:
            with psycopg.connect(spec.dsn(), autocommit=True, connect_timeout=10) as conn:
                shapes, left_out = table_shapes(conn, spec.selection,
                                                publication_name(spec.name))
        except psycopg.Error as exc:
            raise IngestCommandError(f"Cannot read the catalog of source {name!r}: "
                                     f"{first_line(exc)}") from None
        written, skipped = write_contracts(root, spec.name, shapes, overwrite=force)
        loaded = load_contracts(root)
        dbt_sources = write_dbt_sources(root, spec.name, loaded)
    skipped = left_out + skipped
    if json_out:
        emit_json({"written": [str(p) for p in written],
                   "skipped": [{"table": t, "why": w} for t, w in skipped],
                   "tables_with_contracts": len([c for c in loaded if c.source == spec.name]),
                   "dbt_sources": str(dbt_sources) if dbt_sources else None})
        return
    emit_table(f"contracts of {spec.name} ({root / spec.name})", ["file", "table"],
               [(str(p.relative_to(root)), p.stem) for p in written])
    for table, why in skipped:
        console.print(f"[yellow]skipped[/] {escape(f'{table}: {why}')}", highlight=False,
                      soft_wrap=True)  # "set primary_key: [id]": text, not markup
    console.print(f"{len(written)} contracts written; all contracts under {root} load. Tighten "
                  f"them (allowed_values, min/max, pattern, rules, event_time, freshness).",
                  highlight=False)
    if dbt_sources is not None:
        console.print(f"dbt sources {spec.name!r} (mirror) and {spec.name + '_cdc'!r} (changelog)"
                      f" written to {dbt_sources}: read them in your models with "
                      f"{{{{ source('{spec.name}', '<table>') }}}} (tables with a contract only); "
                      "after changing a contract run python dbt_project/scripts/"
                      f"generate_sources.py --source {spec.name}.", highlight=False,
                      soft_wrap=True)


GENERATOR = Path("dbt_project") / "scripts" / "generate_sources.py"


def write_dbt_sources(root: Path, source: str, loaded: ContractSet) -> Path | None:
    """Write the dbt sources file of ``source`` from its contracts, as
    ``dbt_project/scripts/generate_sources.py --source`` does.

    Args:
        root: the contracts directory; the dbt project is looked for beside it (a clone's
            ``contracts/`` and ``dbt_project/``).
        source: the source name.
        loaded: the contracts loaded from ``root``.

    Returns:
        The file written, or None when there is no dbt project beside ``root`` or the source
        has no table contract.
    """
    import importlib.util

    script = root.resolve().parent / GENERATOR
    if not script.is_file() or not any(table.source == source for table in loaded):
        return None
    spec = importlib.util.spec_from_file_location("tidemark_generate_sources", script)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    path = generator.sources_file(source)
    path.write_text(generator.render(source, loaded))
    return path
