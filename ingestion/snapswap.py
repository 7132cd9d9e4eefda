"""Staging tables of a snapshot: cleanup, and moving them into landing.

Each source loads into staging schemas of its own (:mod:`ingestion.staging`; older versions
staged ``m_<oid>`` and ``c_<oid>`` in ``_tidemark_snap_<source>``). The final snapshot
transaction moves each staged mirror and changelog into landing with one ``SET SCHEMA`` each
(:func:`move_in`): they already have their landing names, and PostgreSQL named their indexes
as it would have there. A table whose names meet an object landing has (a table left by a
source removed without its landing tables, say) is swapped in instead (:func:`swap_in`): its
landing tables are created as the stream would, then replaced by the staged ones (drop,
``SET SCHEMA``, rename, the replaced tables' index names given to the matching indexes, an
index only landing had created). Until that transaction commits, nothing in the mirror or
changelog schemas changed; a crash leaves only the staging schemas, which the next snapshot
drops first.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.grants_lock import hold_off_grants
from ingestion.landing_indexes import create_landing
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name
from ingestion.snapcopy import Job
from ingestion.staging import Staging, staging_for, staging_schemas
from ingestion.tables import TableInfo

MOVES_PER_ROUND_TRIP = 100
"""``SET SCHEMA`` statements :func:`move_in` sends at once."""


def drop_staging(conn: psycopg.Connection, source: str) -> None:
    """Drop the source's staging schemas and everything in them."""
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(
        sql.SQL(", ").join(map(sql.Identifier, staging_schemas(source)))))


def reset_staging(conn: psycopg.Connection, source: str) -> None:
    """Drop what an earlier snapshot left and create the staging schemas (autocommit conn).

    Raises:
        psycopg.errors.InsufficientPrivilege: the landing role may not create schemas.
    """
    drop_staging(conn, source)
    for schema in staging_schemas(source):
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))


def clear_table(conn: psycopg.Connection, stg: Staging) -> None:
    """Drop one table's staging objects if an earlier attempt left them."""
    for schema in {stg.schema, stg.at("m")[0], stg.at("c")[0]}:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
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


def swap_in(conn: psycopg.Connection, info: TableInfo, mirror: sql.Identifier,
            changelog: sql.Identifier) -> None:
    """Replace a table's landing mirror and changelog (created in this transaction, or left
    by an earlier landing) with the staged ``mirror`` and ``changelog``."""
    hold_off_grants(conn)
    _replace(conn, info.mirror, mirror, info.source, info.name)
    _replace(conn, info.changelog, changelog, CHANGELOG_SCHEMA,
             changelog_table_name(info.source, info.name))


_CLASHES = """
select w.stage, w.name from unnest(%s::text[], %s::text[], %s::text[]) w(stage, name, target)
join pg_namespace n on n.nspname = w.stage join pg_class s on s.relnamespace = n.oid
 and s.relname = w.name
where exists (
    select from (select s.relname union all select i.relname from pg_index x join pg_class i
                   on i.oid = x.indexrelid where x.indrelid = s.oid
                 union all select t.typname from pg_type r join pg_type t
                   on t.oid in (r.oid, r.typarray) where r.oid = s.reltype) o(name)
     where exists (select from pg_class c where c.relnamespace = to_regnamespace(w.target)
                   and c.relname = o.name)
        or exists (select from pg_type t where t.typnamespace = to_regnamespace(w.target)
                   and t.typname = o.name))
"""
"""The staged tables (staging schema, name) whose name, or an index's or row type's (or its
array type's) name, some object of their landing schema has already. Every look-up is by an
index of the catalog: per table, not per table and type."""


def _set_aside(conn: psycopg.Connection, stg: Staging, prefix: str) -> sql.Identifier:
    """Rename a staged table to ``<prefix>_<oid>`` and its indexes to ``<prefix>_<oid>_<n>``,
    names no landing object is meant to have; return the table."""
    schema, _ = stg.at(prefix)
    name = f"{prefix}_{stg.oid}"
    indexes = conn.execute("select indexrelid::regclass::text from pg_index where indrelid ="
                           " %s::regclass order by 1", (stg.ident(prefix).as_string(conn),))
    for n, (index,) in enumerate(indexes.fetchall()):
        conn.execute(sql.SQL("alter index {} rename to {}").format(
            sql.SQL(index), sql.Identifier(f"{name}_{n}")))  # regclass text
    if stg.at(prefix) != (schema, name):  # staged under its landing name
        conn.execute(sql.SQL("alter table {} rename to {}").format(stg.ident(prefix),
                                                                   sql.Identifier(name)))
    return sql.Identifier(schema, name)


def move_in(conn: psycopg.Connection, jobs: list[Job]) -> None:
    """Move the staged mirror and changelog of each of ``jobs`` into landing, in the final
    snapshot transaction (the registry has the tables, landing has none of their tables yet).

    One ``SET SCHEMA`` per table, :data:`MOVES_PER_ROUND_TRIP` statements at a time. A table
    whose names clash with landing's objects (:data:`_CLASHES`) gets its landing tables created
    as the stream would create them, then replaced (:func:`swap_in`).
    """
    if not jobs:
        return
    hold_off_grants(conn)
    moves = [(stg, prefix, target, job) for job in jobs for stg in [staging_for(job.info)]
             for prefix, target in (("m", job.info.source), ("c", CHANGELOG_SCHEMA))]
    clashes = {tuple(r) for r in conn.execute(_CLASHES, (
        [stg.at(p)[0] for stg, p, _, _ in moves], [stg.at(p)[1] for stg, p, _, _ in moves],
        [target for _, _, target, _ in moves]))}
    aside = {job.info.name for stg, p, _, job in moves
             if stg.at(p) in clashes or stg.mirror_at is None}  # staged as m_/c_<oid>
    statements = [sql.SQL("alter table {} set schema {}").format(stg.ident(p),
                                                                 sql.Identifier(target))
                  for stg, p, target, job in moves if job.info.name not in aside]
    for start in range(0, len(statements), MOVES_PER_ROUND_TRIP):
        conn.execute(sql.SQL("; ").join(statements[start:start + MOVES_PER_ROUND_TRIP]))
    for job in jobs:
        if job.info.name in aside:
            stg = staging_for(job.info)
            mirror, changelog = _set_aside(conn, stg, "m"), _set_aside(conn, stg, "c")
            create_landing(conn, job.info, job.contract)
            swap_in(conn, job.info, mirror, changelog)


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
