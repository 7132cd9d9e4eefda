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

from collections.abc import Callable

import psycopg
from psycopg import sql

from ingestion.versions import source_capabilities

ACTIONS = ("insert", "update", "delete", "truncate")

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
