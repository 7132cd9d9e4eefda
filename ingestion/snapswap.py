"""Staging tables of a snapshot: their schema, cleanup, and swapping them in.

Each source loads into its own schema ``_tidemark_snap_<source>`` (``m_<oid>`` mirror,
``c_<oid>`` changelog, ``d_<oid>`` dead letters, ``x_<oid>`` dropped duplicates, ``w_<oid>``
the rows' latest event time; older versions also left ``s_<oid>``, a sequence). The final
snapshot transaction replaces the (new, empty) landing tables with the staging tables: drop,
``SET SCHEMA``, rename, and the index names of the replaced tables given to the matching
indexes (an index only landing had is created). Until that transaction commits, nothing in the
mirror or changelog schemas changed; a crash leaves only the staging schema, which the next
snapshot drops first.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.grants_lock import hold_off_grants
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name
from ingestion.snapcopy import Staging
from ingestion.tables import TableInfo


def staging_schema(source: str) -> str:
    """The staging schema of a source's snapshots."""
    return f"_tidemark_snap_{source}"


def reset_staging(conn: psycopg.Connection, source: str) -> None:
    """Drop what an earlier snapshot left and create the staging schema (autocommit conn).

    Raises:
        psycopg.errors.InsufficientPrivilege: the landing role may not create schemas.
    """
    schema = sql.Identifier(staging_schema(source))
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(schema))
    conn.execute(sql.SQL("create schema {}").format(schema))


def clear_table(conn: psycopg.Connection, stg: Staging) -> None:
    """Drop one table's staging objects if an earlier attempt left them."""
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(stg.schema)))
    for prefix in ("m", "c", "d", "k", "x", "w"):
        conn.execute(sql.SQL("drop table if exists {}").format(stg.ident(prefix)))
    conn.execute(sql.SQL("drop sequence if exists {}").format(stg.ident("s")))


def _indexes(conn: psycopg.Connection, table: sql.Identifier) -> list[tuple]:
    """(index name, constraint name or None, definition tail, full definition) of a table."""
    return [(r[0], r[1], r[2].split(" USING ", 1)[1] + ("|u" if r[3] else ""), r[2])
            for r in conn.execute(
                "select i.indexrelid::regclass::text, c.conname, pg_get_indexdef(i.indexrelid),"
                " i.indisunique from pg_index i left join pg_constraint c on c.conindid ="
                " i.indexrelid and c.conrelid = i.indrelid where i.indrelid = %s::regclass"
                " order by 1", (table.as_string(conn),))]


def _constraint_defs(conn: psycopg.Connection, table: sql.Identifier) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid ="
        " %s::regclass and conindid <> 0", (table.as_string(conn),))}


def _replace(conn: psycopg.Connection, real: sql.Identifier, staged: sql.Identifier,
             schema: str, name: str) -> None:
    before = _indexes(conn, real)
    constraints = _constraint_defs(conn, real)
    conn.execute(sql.SQL("drop table {}").format(real))
    conn.execute(sql.SQL("alter table {} set schema {}").format(staged,
                                                                sql.Identifier(schema)))
    moved = sql.Identifier(schema, staged.as_string(conn).rsplit(".", 1)[1].strip('"'))
    conn.execute(sql.SQL("alter table {} rename to {}").format(moved, sql.Identifier(name)))
    target = sql.Identifier(schema, name)
    conn.execute(sql.SQL("alter table {} reset (autovacuum_enabled)").format(target))
    after = _indexes(conn, target)
    used: set[str] = set()
    for index, conname, tail, full in before:
        match = next((a for a in after if a[2] == tail and a[0] not in used), None)
        if match is None:
            if conname is not None:
                conn.execute(sql.SQL("alter table {} add constraint {} {}").format(
                    target, sql.Identifier(conname), sql.SQL(constraints[conname])))
            else:
                conn.execute(sql.SQL(full))  # catalog text naming the same table
            continue
        used.add(match[0])
        wanted = conname or index.rsplit(".", 1)[-1].strip('"')
        current = match[1] or match[0].rsplit(".", 1)[-1].strip('"')
        if wanted == current:
            continue
        if match[1] is not None and conname is not None:
            conn.execute(sql.SQL("alter table {} rename constraint {} to {}").format(
                target, sql.Identifier(match[1]), sql.Identifier(conname)))
        else:
            conn.execute(sql.SQL("alter index {} rename to {}").format(
                sql.SQL(match[0]), sql.Identifier(wanted)))


def swap_in(conn: psycopg.Connection, info: TableInfo, stg: Staging) -> None:
    """Replace a table's new, empty mirror and changelog with its staging tables.

    Runs in the final snapshot transaction, which created the landing tables.
    """
    hold_off_grants(conn)
    _replace(conn, info.mirror, stg.ident("m"), info.source, info.name)
    _replace(conn, info.changelog, stg.ident("c"), CHANGELOG_SCHEMA,
             changelog_table_name(info.source, info.name))


def land_side_tables(conn: psycopg.Connection, info: TableInfo, stg: Staging, lsn: str,
                     commit_at: object) -> int:
    """Move the staged dead letters into ``tidemark.dead_letters``; return how many."""
    dead = stg.ident("d")
    if conn.execute("select to_regclass(%s)", (dead.as_string(conn),)).fetchone()[0] is None:
        return 0
    cur = conn.execute(sql.SQL(
        "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op, reason,"
        " violations, contract_version, raw_row, commit_at) select %s, %s, %s::pg_lsn,"
        " %s::pg_lsn, seq, 'r', reason, violations, contract_version, raw_row, %s from {}"
        " on conflict do nothing").format(dead), (info.source, info.name, lsn, lsn, commit_at))
    return cur.rowcount
