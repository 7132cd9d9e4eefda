"""The source catalog of many tables at once (ingestion/catalog_batch.py): what a first
snapshot's registration reads of each table, the same as the per-table reads give."""

from __future__ import annotations

import psycopg

from ingestion.catalog import column_attnums, copy_blocker, key_columns, table_columns
from ingestion.catalog_batch import tables_catalog
from tests.ingestion.conftest import Pair


def test_the_catalog_of_many_tables_is_what_each_tables_reads_give(pair: Pair) -> None:
    pair.src_exec(
        "create table k (a int, b text, id bigint, primary key (id, a))",
        "create table u (id int not null, v numeric(12,2), w varchar(7)[], x int)",
        "create unique index u_id on u (id)", "alter table u replica identity using index u_id",
        "alter table u drop column x",
        "create table n (v text, ts timestamptz(3)) ", "alter table n replica identity full",
        "create table g (id int primary key, d int generated always as (id * 2) stored)",
        "create type mood as enum ('ok')", "create table e (id int primary key, m mood)")
    with psycopg.connect(pair.src, autocommit=True) as conn:
        oids = dict(conn.execute("select relname, oid::int from pg_class where relname in"
                                 " ('k', 'u', 'n', 'g', 'e') and relkind = 'r'").fetchall())
        got = tables_catalog(conn, [*oids.values(), 999_999_999], None)
        assert set(got) == set(oids.values())  # a table gone is left out
        for name, oid in oids.items():
            table = got[oid]
            assert table.columns == table_columns(conn, oid, None), name
            assert table.attnums == column_attnums(conn, oid), name
            assert table.key == key_columns(conn, oid), name
            assert table.blocker == copy_blocker(conn, oid) is None, name
        assert got[oids["u"]].key == ["id"] and got[oids["k"]].key == ["id", "a"]
        assert got[oids["n"]].key == []
        assert tables_catalog(conn, [], None) == {}
