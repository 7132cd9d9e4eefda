"""Generate ``models/staging/_<source>__sources.yml`` from the contracts (contracts/<source>/*.yml).

One file per source with contracts: the demo's ``shop`` (committed) and every source of your own
(``tidemark contracts init mydb`` → ``_mydb__sources.yml``, sources ``mydb`` and ``mydb_cdc``), so a
model of yours reads ``{{ source('mydb', 'orders') }}`` and Dagster draws it downstream of the
ingestion asset ``mydb/orders``. Every table ``contracts init`` scaffolds is in it, keyless ones
(``primary_key: []``, e.g. ``pgbench_history``) too; a table without a contract file is not: only
contracts are read, never a database.

The mirror source ``<source>`` (``shop`` below) is exactly :func:`contracts.to_dbt_source_yaml`
(columns, types, not_null / unique / accepted_values tests, ``loaded_at_field`` and freshness),
plus the tests dbt core lacks, built from the contract metadata it carries:

- ``min`` / ``max`` of a column -> ``accepted_range`` (tests/generic/accepted_range.sql);
- ``pattern`` of a column -> ``matches_pattern`` (tests/generic/matches_pattern.sql);
- the primary key -> ``primary_key_constraint`` on the table (tests/generic/
  primary_key_constraint.sql), in place of the key columns' ``unique`` / ``not_null`` and a
  composite key's ``unique_combination_of_columns``: the mirror has that primary key, so those
  tests could never fail and read every row (4.1 s for ``app_events`` at 10 times the demo's
  history); the catalog check fails when the key is gone or differs from the contract's. A
  keyless table, a bag, gets no key test of any kind.

The changelog source ``shop_cdc`` (schema ``cdc``, tables ``shop__<table>``) lists the same
columns plus the change metadata, with the contract's freshness thresholds (null where the
contract has no loaded-at column). A change column landing declares NOT NULL
(``ingestion.tables.CHANGE_COLUMNS``) gets ``not_null_constraint`` (tests/generic/
not_null_constraint.sql, a catalog check) instead of ``not_null`` (a scan of the changelog).

Freshness reads the changelog's newest changes, never a whole table: the contract's
``loaded_at_field`` becomes a ``loaded_at_query`` (dbt 1.10+) that takes the largest loaded-at
value among the newest 1,000 inserted, updated or snapshot rows of ``cdc.shop__<table>`` (a
backward scan of its unique ``(_commit_lsn, _seq)`` index: 1,000 rows at any history), and
the changelog's own freshness the largest ``_ingested_at`` of its newest 1,000 changes.
``max(loaded_at_field)`` over a mirror was a full scan every 15 minutes (3.4 s for
``app_events`` at 100 times the demo's week). Changes land in commit order, so this is the
loaded-at of the newest changes landed: the mirror's maximum whenever the application stamps
the column as it writes (``updated_at = now()``).

Usage (from the repository root)::

    python dbt_project/scripts/generate_sources.py                 # every source's file
    python dbt_project/scripts/generate_sources.py --source mydb   # one source's
    python dbt_project/scripts/generate_sources.py --check         # exit 1 if one is out of date

``tests/dbt_project/test_project.py`` fails when the committed file is out of date.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from psycopg import sql

# Run as a script from a clone: make the repository's own packages importable first.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contracts import ContractSet, load_contracts, to_dbt_source_yaml
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name
from ingestion.tables import CHANGE_COLUMNS

SOURCE = "shop"
STAGING = Path(__file__).resolve().parents[1] / "models" / "staging"


def sources_file(source: str) -> Path:
    """The generated sources file of ``source``: ``models/staging/_<source>__sources.yml``."""
    return STAGING / f"_{source}__sources.yml"


SOURCES_FILE = sources_file(SOURCE)


def header(source: str) -> str:
    """The generated file's first lines: where it comes from, how to change it."""
    return (f"# GENERATED from contracts/{source}/*.yml by dbt_project/scripts/"
            "generate_sources.py.\n"
            "# Do not edit: change the contract and run the script again.\n")

CDC_COLUMNS: list[dict[str, Any]] = [
    {"name": "_op", "data_type": "char(1)",
     "description": "Change kind: r snapshot read, c insert, u update, b old row of an update"
                    " that moved it (key change, keyless table), d delete, t truncate.",
     "data_tests": ["not_null", {"accepted_values": {"arguments": {
         "values": ["r", "c", "u", "b", "d", "t"]}}}]},
    {"name": "_lsn", "data_type": "pg_lsn", "description": "LSN of the change.",
     "data_tests": ["not_null"]},
    {"name": "_commit_lsn", "data_type": "pg_lsn",
     "description": "LSN of the commit of its source transaction.", "data_tests": ["not_null"]},
    {"name": "_commit_at", "data_type": "timestamptz",
     "description": "Commit time of its source transaction (UTC).", "data_tests": ["not_null"]},
    {"name": "_txid", "data_type": "bigint", "description": "Source transaction id."},
    {"name": "_ingested_at", "data_type": "timestamptz",
     "description": "When ingestion wrote the change to landing (UTC).",
     "data_tests": ["not_null"]},
]
for _column in CDC_COLUMNS:  # declared NOT NULL by landing: checked in the catalog, O(1)
    if "not null" in dict(CHANGE_COLUMNS)[_column["name"]]:
        _column["data_tests"] = ["not_null_constraint" if test == "not_null" else test
                                 for test in _column["data_tests"]]


def _add_contract_tests(table: dict[str, Any]) -> None:
    """Add range, pattern and compound-key tests from the contract meta, in place."""
    for column in table["columns"]:
        rules = column.get("config", {}).get("meta", {}).get("contract", {})
        tests = column.setdefault("data_tests", [])
        bounds = {f"{key}_value": rules[key] for key in ("min", "max") if key in rules}
        if bounds:
            tests.append({"accepted_range": {"arguments": bounds}})
        if "pattern" in rules:
            arguments = {"pattern": rules["pattern"]}
            if column["data_type"].endswith("[]"):
                arguments["is_array"] = True
            tests.append({"matches_pattern": {"arguments": arguments}})
        if not tests:
            del column["data_tests"]

KEY_TESTS = ("unique", "not_null")
"""The column tests a mirror's primary key guarantees for its key columns."""


def _key_constraint_test(table: dict[str, Any]) -> None:
    """Check a keyed table's key on the mirror's primary key in the catalog, in place: drop its
    key columns' ``unique`` / ``not_null`` (full scans that cannot fail while the key exists)
    and add the table test ``primary_key_constraint``. A keyless table is left as it is."""
    key = table["config"]["meta"]["contract"]["primary_key"]
    if not key:
        return
    for column in table["columns"]:
        if column["name"] in key and "data_tests" in column:
            column["data_tests"] = [t for t in column["data_tests"] if t not in KEY_TESTS]
            if not column["data_tests"]:
                del column["data_tests"]
    table["data_tests"] = [{"primary_key_constraint": {"arguments": {"columns": list(key)}}}]


NEWEST_CHANGES = 1000


def newest_change_query(table: str, column: str, rows_only: bool = True,
                        source: str = SOURCE) -> str:
    """dbt's ``loaded_at_query``: the largest ``column`` among the newest
    :data:`NEWEST_CHANGES` changes of ``table``'s changelog (a backward scan of its
    ``(_commit_lsn, _seq)`` index that stops there, at any history).

    Args:
        table: the source table.
        column: the loaded-at column.
        rows_only: only inserted, updated or snapshot rows with a value count (a delete
            carries only the key), else every change.
        source: the source the table belongs to.
    """
    changelog = sql.Identifier(CHANGELOG_SCHEMA, changelog_table_name(source, table))
    rows = sql.SQL(" where _op in ('r', 'c', 'u') and {c} is not null" if rows_only else ""
                   ).format(c=sql.Identifier(column))
    return sql.SQL(
        "select max({c}) from (select {c} from {t}{rows} order by _commit_lsn desc, _seq desc"
        " limit {n}) newest").format(c=sql.Identifier(column), t=changelog, rows=rows,
                                     n=sql.Literal(NEWEST_CHANGES)).as_string()


def _mirror_freshness(mirror_table: dict[str, Any], source: str) -> None:
    """Measure the mirror's freshness on its changelog's newest change, in place."""
    config = mirror_table["config"]
    column = config.pop("loaded_at_field", None)
    if column is not None:
        config["loaded_at_query"] = newest_change_query(mirror_table["name"], column,
                                                        source=source)


def _changelog_table(mirror_table: dict[str, Any], source: str) -> dict[str, Any]:
    """The changelog ``cdc.<source>__<table>`` of one mirror table."""
    freshness = mirror_table["config"]["freshness"]
    config: dict[str, Any] = {"freshness": copy.deepcopy(freshness)}
    if freshness is not None:
        config["loaded_at_query"] = newest_change_query(mirror_table["name"], "_ingested_at",
                                                       rows_only=False, source=source)
    columns = [{"name": c["name"], "data_type": c["data_type"],
                "description": c.get("description", "")} for c in mirror_table["columns"]]
    name = f"{source}__{mirror_table['name']}"
    table = {
        "name": name,
        "description": f"Changelog of {source}.{mirror_table['name']}: every change, "
                       "append-only, with the change metadata.",
        "config": config,
        "columns": columns + copy.deepcopy(CDC_COLUMNS),
    }
    if changelog_table_name(source, mirror_table["name"]) != name:  # cut to 63 bytes in landing
        table["identifier"] = changelog_table_name(source, mirror_table["name"])
    return table


def build_sources(source: str = SOURCE, contracts: ContractSet | None = None
                  ) -> dict[str, Any]:
    """Return one source's sources file content (mirror and changelog) as a dict.

    Args:
        source: the source (a directory of ``contracts/``).
        contracts: the loaded contracts (default: the repository's).
    """
    document = to_dbt_source_yaml(contracts or load_contracts(), source)
    mirror = document["sources"][0]
    changelog = {
        "name": f"{source}_cdc",
        "schema": CHANGELOG_SCHEMA,
        "description": f"Landing changelog of the {source!r} source (cdc.{source}__<table>).",
        "tables": [_changelog_table(table, source) for table in mirror["tables"]],
    }
    for table in mirror["tables"]:
        _add_contract_tests(table)
        _key_constraint_test(table)
        _mirror_freshness(table, source)
    document["sources"].append(changelog)
    return document


def render(source: str = SOURCE, contracts: ContractSet | None = None) -> str:
    """Return the sources file text of ``source``."""
    return header(source) + yaml.safe_dump(build_sources(source, contracts), sort_keys=False,
                                           width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the generated sources files; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a generated file is out of date")
    parser.add_argument("--source", action="append", metavar="NAME",
                        help="only this source (repeatable); default: every source with "
                             "contracts under contracts/")
    args = parser.parse_args(argv)
    contracts = load_contracts()
    known = [source for source in contracts.sources()
             if any(table.source == source for table in contracts)]
    unknown = sorted(set(args.source or []) - set(known))
    if unknown:
        print(f"no contracts for source(s) {', '.join(unknown)} under contracts/ (there are: "
              f"{', '.join(known) or 'none'}); write them with `tidemark contracts init NAME`",
              file=sys.stderr)
        return 2
    status = 0
    for source in args.source or known:
        path, text = sources_file(source), render(source, contracts)
        if args.check:
            if (path.read_text() if path.exists() else "") != text:
                print(f"{path} is out of date with contracts/{source}/; run python "
                      f"dbt_project/scripts/generate_sources.py --source {source}",
                      file=sys.stderr)
                status = 1
            continue
        path.write_text(text)
        print(f"wrote {path} (dbt sources {source!r} and {source + '_cdc'!r})")
    return status


if __name__ == "__main__":
    sys.exit(main())
