"""What a publication sends beyond its table list: its ``publish`` actions, row filters and column
lists, which someone else may change on the source without any row or message in the stream.

``alter publication tidemark_<name> set (publish = 'insert')`` has pgoutput skip every update,
delete and truncate from then on; ``alter publication ... set table t where (...)`` skips the
changes of rows outside the filter, and a column list (``t (a, b)``) sends the other columns of
no change (PostgreSQL 15+). Nothing tells the subscriber. Each publication sync
(:func:`ingestion.publication.sync_publication`, at every start and every 30 s while streaming)
puts every action back and takes filters and column lists off, and reports what it restored: the
tables concerned are copied again (their changes in between were not sent;
:func:`ingestion.stream_snapshots.snapshot_new_tables`). A role that may not alter the
publication gets the statements to run, in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ingestion.versions import source_capabilities

if TYPE_CHECKING:
    from ingestion.publication import SourceTable
    from ingestion.relations import RelationTracker
    from ingestion.tables import TableInfo

log = logging.getLogger("tidemark.ingestion")

ACTIONS = ("insert", "update", "delete", "truncate")

_told: set[str] = set()  # publications whose narrowed `publish` was reported

Run = Callable[[psycopg.Connection, sql.Composable], bool]
"""Runs a publication statement; False when the role may not (the statement is kept to say)."""


def restore_actions(conn: psycopg.Connection, publication: str, run: Run) -> str:
    """Have the publication publish every action again.

    Returns:
        The ``publish`` setting found when it lacked an action and was put back (``"publish =
        'insert'"``), else ``""``.
    """
    row = conn.execute("select pubinsert, pubupdate, pubdelete, pubtruncate from pg_publication"
                       " where pubname = %s", (publication,)).fetchone()
    if row is None or all(row):
        return ""
    found = ", ".join(a for a, on in zip(ACTIONS, row, strict=True) if on)
    if not run(conn, sql.SQL("alter publication {} set (publish = {})").format(
            sql.Identifier(publication), sql.Literal(", ".join(ACTIONS)))):
        if publication in _told:
            return ""
        _told.add(publication)  # once per process: the sync runs every 30 s
        log.error("publication %s has publish = '%s' (set on the source): the other changes "
                  "are not replicated, and this role may not put it back. Run the statement "
                  "logged below as the tables' owner, then `tidemark ingest resync --all` for "
                  "this source (the changes in between were not sent)", publication, found)
        return ""
    return f"publish = '{found}'"


def unfilter(conn: psycopg.Connection, publication: str, run: Run) -> dict[str, str]:
    """Take row filters and column lists off the publication's tables (PostgreSQL 15+): each
    such table is dropped from and added to it in one statement.

    Returns:
        ``schema.table`` → what it had (``where (id > 3)``, ``columns (id, v)``), for the
        tables done.
    """
    if not source_capabilities(conn).schema_publications:  # row filters and column lists: 15+
        return {}
    rows = conn.execute(
        "select n.nspname, c.relname, pg_get_expr(r.prqual, r.prrelid),"
        " (select string_agg(quote_ident(a.attname), ', ' order by a.attnum) from pg_attribute a"
        " where a.attrelid = r.prrelid and a.attnum = any(r.prattrs)) from pg_publication_rel r"
        " join pg_publication p on p.oid = r.prpubid join pg_class c on c.oid = r.prrelid"
        " join pg_namespace n on n.oid = c.relnamespace where p.pubname = %s"
        " and (r.prqual is not null or r.prattrs is not null) order by 1, 2",
        (publication,)).fetchall()
    done: dict[str, str] = {}
    for schema, table, where, columns in rows:
        name = sql.Identifier(schema, table)
        pub = sql.Identifier(publication)
        # one simple query: one implicit transaction, the table never out of the publication
        if not run(conn, sql.SQL("alter publication {} drop table {}; alter publication {}"
                                 " add table {}").format(pub, name, pub, name)):
            continue
        had = [f"where ({where})" if where else "", f"columns ({columns})" if columns else ""]
        done[f"{schema}.{table}"] = " and ".join(h for h in had if h)
    return done


def publish_generated(conn: psycopg.Connection, publication: str, run: Run) -> bool:
    """Have the publication send stored generated columns (PostgreSQL 18+), as the snapshot
    copies them (:func:`ingestion.catalog.table_columns`); True when it did not and now does."""
    return bool(source_capabilities(conn).generated_columns and conn.execute(
        "select pubgencols = 'n' from pg_publication where pubname = %s",
        (publication,)).fetchone()[0] and run(conn, sql.SQL(
            "alter publication {} set (publish_generated_columns = stored)").format(
            sql.Identifier(publication))))


def generated_tables(conn: psycopg.Connection, tables: list[SourceTable]) -> set[int]:
    """The OIDs among ``tables`` with a stored generated column."""
    return {r[0] for r in conn.execute(
        "select distinct attrelid::int from pg_attribute where attrelid = any(%s)"
        " and attgenerated = 's' and not attisdropped", ([t.oid for t in tables],))}


def publish_via_root(conn: psycopg.Connection, publication: str, run: Run) -> bool:
    """Have the publication send a partitioned table's changes as its root's (PostgreSQL 13+),
    as the selection lists roots; True when it did not and now does (made by an older
    Tidemark or a DBA, or the option turned off on the source)."""
    return bool(source_capabilities(conn).partition_root and not conn.execute(
        "select pubviaroot from pg_publication where pubname = %s",
        (publication,)).fetchone()[0] and run(conn, sql.SQL(
            "alter publication {} set (publish_via_partition_root = true)").format(
            sql.Identifier(publication))))


def routed_change(tracker: RelationTracker, relid: int) -> TableInfo | None:
    """A change under a relation OID the stream has no table for: None (skip it) when the
    relation is a partition of a landed table, sent under its own name because someone turned
    ``publish_via_partition_root`` off; the next sync turns it on and copies the table again.

    Raises:
        KeyError: the relation is unknown.
    """
    if not tracker.within_root(relid):
        raise KeyError(relid)
    if relid not in tracker.routed_skipped:
        tracker.routed_skipped.add(relid)
        log.warning("source %s: changes of partition OID %d arrive under its own name (the "
                    "publication's publish_via_partition_root was turned off on the source): "
                    "skipped; the next publication sync turns it on again and copies its table "
                    "again", tracker.source, relid)
    return None
