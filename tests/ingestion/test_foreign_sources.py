"""Source schemas nobody here wrote: long names, tables dropped and re-created or renamed while
ingestion runs. Each test snapshots, streams, then compares mirror and changelog with the source."""

from __future__ import annotations

from collections import Counter

import psycopg
from psycopg import sql

from ingestion import catch_up
from ingestion.names import changelog_table_name, landing_table_name
from tests.ingestion.conftest import Pair, source_columns, table_rows

LONG = "a" * 63
LONG2 = "a" * 60 + "bbb"


def assert_lands(p: Pair, schema: str, table: str) -> None:
    """Mirror == source, and the changelog's rows all belong to this table (snapshot ``r`` and
    inserts ``c`` only in these tests: their keys are exactly the source's)."""
    columns = source_columns(p.src, table, schema)
    name = landing_table_name(schema, table)
    src = table_rows(p.src, schema, table, columns)
    assert table_rows(p.land, p.source, name, columns) == src, f"mirror of {schema}.{table}"
    with psycopg.connect(p.land) as conn:
        logged = Counter(r[0] for r in conn.execute(sql.SQL(
            "select row({})::text from {} where _op in ('r', 'c')").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier("cdc", changelog_table_name(p.source, name)))))
    assert logged == src, f"changelog of {schema}.{table}"


def test_long_names_keep_their_own_changelog_and_mirror(pair: Pair) -> None:
    # Names PostgreSQL would cut to the same 63 bytes: before, both tables of a pair shared one
    # changelog (snapshot rows of one lost, changes of both mixed), and two schema tables one mirror.
    pair.src_exec("create schema sales",
                  *(f'create table {s}."{t}" ("{LONG}" int primary key, v text)'
                    for s in ("public", "sales") for t in (LONG, LONG2)),
                  *(f"insert into {s}.\"{t}\" values ({i}, '{s}{i}')"
                    for i, (s, t) in enumerate([("public", LONG), ("public", LONG2),
                                                ("sales", LONG), ("sales", LONG2)])))
    catch_up(pair.src, pair.land, pair.source, schemas=["public", "sales"])
    pair.src_exec(*(f"insert into {s}.\"{t}\" values ({10 + i}, 'streamed')"
                    for i, (s, t) in enumerate([("public", LONG), ("public", LONG2),
                                                ("sales", LONG), ("sales", LONG2)])))
    catch_up(pair.src, pair.land, pair.source, schemas=["public", "sales"])
    for schema in ("public", "sales"):
        for table in (LONG, LONG2):
            assert_lands(pair, schema, table)
