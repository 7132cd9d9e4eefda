"""Staged tables moved into landing: as they are, or swapped in where landing's names are taken."""

from __future__ import annotations

import psycopg

from ingestion import catch_up
from tests.ingestion.conftest import Pair


def _indexes(land: str, schema: str, table: str) -> list[str]:
    with psycopg.connect(land) as conn:
        return [r[0] for r in conn.execute(
            "select indexname from pg_indexes where schemaname = %s and tablename = %s"
            " order by 1", (schema, table))]


def test_staged_tables_land_under_their_landing_names(pair: Pair) -> None:
    """Moved in as they are, the staged tables keep the names PostgreSQL gave their indexes and
    constraints under their landing names (they used to keep their NOT NULL constraints'
    staging names on PostgreSQL 18: ``m_<oid>_id_not_null``); so does a table joining later."""
    pair.src_exec("create table t (id int primary key, v text)", "insert into t values (1, 'a')")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("create table u (id int primary key, v text)", "insert into u values (1, 'a')")
    catch_up(pair.src, pair.land, pair.source)
    for table in ("t", "u"):
        changelog = f"{pair.source}__{table}"
        assert _indexes(pair.land, pair.source, table) == [f"{table}_pkey"]
        assert _indexes(pair.land, "cdc", changelog) == [f"{changelog}__commit_lsn__seq_key"]
        with psycopg.connect(pair.land) as conn:
            names = sorted(r[0] for r in conn.execute(
                "select conname from pg_constraint where conrelid in (%s::regclass,"
                " %s::regclass) and contype = 'n'",
                (f'"{pair.source}".{table}', f'cdc."{changelog}"')))
            named = conn.info.server_version >= 180000  # NOT NULL constraints have names
        wanted = sorted([f"{table}_id_not_null"] + [
            f"{changelog}_{c}_not_null" for c in ("_op", "_lsn", "_commit_lsn", "_seq",
                                                  "_ingested_at")])
        assert names == (wanted if named else []), names
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname like %s",
                            (f"_tidemark_snap%{pair.source}",)).fetchone()[0] == 0


def test_landing_names_already_taken_are_swapped_in(pair: Pair) -> None:
    """A table left in landing under a new table's name (its source removed without its
    landing tables) is replaced; an object holding the name the mirror's key would take makes
    PostgreSQL name the key otherwise, as it would for a table the stream creates."""
    pair.src_exec("create table t (id int primary key, v text)",
                  "insert into t values (1, 'a'), (2, 'b')",
                  "create table w (id int primary key)", "insert into w values (7)")
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(f'create schema "{pair.source}"')
        conn.execute(f'create table "{pair.source}".t (id int primary key, v text)')
        conn.execute(f"insert into \"{pair.source}\".t values (3, 'left')")
        conn.execute(f'create table "{pair.source}".w_pkey (x int)')
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.snapshot_rows == 3
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f'select id, v from "{pair.source}".t order by 1').fetchall() == \
            [(1, "a"), (2, "b")]
        assert conn.execute(f'select id from "{pair.source}".w').fetchall() == [(7,)]
        assert conn.execute(f'select count(*) from cdc."{pair.source}__t"').fetchone()[0] == 2
    assert _indexes(pair.land, pair.source, "t") == ["t_pkey"]
    assert _indexes(pair.land, pair.source, "w") == ["w_pkey1"]
    pair.src_exec("insert into w values (8)", "update t set v = 'c' where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f'select id from "{pair.source}".w order by 1').fetchall() == \
            [(7,), (8,)]
        assert conn.execute(f'select v from "{pair.source}".t where id = 1').fetchone()[0] == "c"
