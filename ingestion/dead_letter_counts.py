"""How many dead letters wait, per source and table, without counting them.

``tidemark.dead_letters`` keeps every change that broke its contract; a busy source with a bad
producer adds letters by the million, and until ``tidemark dlq purge`` they stay. Status, the
``dead_letters`` check and its sensors want the number of letters still *waiting* (never
replayed, or replayed and still invalid) every minute: counting them, even in the partial index
of waiting letters, reads every one (4 s a count at 30 days of the 10x demo, bench/RESULTS.md).

So the number is kept as it changes. ``tidemark.dead_letter_counts`` holds signed deltas of the
waiting letters per (source, table), and of the resolved ones (replayed: applied or superseded;
``dlq replay`` reports them, ``dlq list --all`` counts both, :func:`resolved_count`; since round
37, a landing counted before is counted again once): statement triggers on ``dead_letters``
(transition tables; INSERT, UPDATE, DELETE) insert each statement's net change as a row of its
own. Only inserts: writers never wait for each other on it (the stream's landing transactions, a
long ``dlq replay`` and a purge), and a transaction writing many letters one statement at a time
(the applier's) adds rows instead of updating one row again and again, whose versions every
later update of the same transaction would walk (measured: quadratic). TRUNCATE empties it. A
reader sums the rows of a source (:func:`waiting_counts`) and folds them into one row per table
when they have piled up (:func:`compact`), so a read costs the statements since the last fold,
not the letters.

Created, and filled once from the letters already there, by :func:`ensure_counts` (called by
``ingestion.state.ensure_state``, in its DDL transaction: the trigger's lock holds writers off
while the first count runs, so no letter is counted twice or missed).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger("tidemark.ingestion")

COUNTS = "dead_letter_counts"
TRIGGER = "dead_letter_counts"
FUNCTION = "dead_letter_counts_delta"
COMPACT_AT = 64
"""Fold a source's rows into one per table once it has more than this many."""

TABLES = {
    COUNTS: """
        source text not null,
        table_name text not null,
        waiting bigint not null,
        resolved bigint not null default 0""",
}
"""State tables created by :func:`ingestion.state.ensure_state` (after ``dead_letters``)."""

_EMPTY = "(select * from tidemark.dead_letters where false)"
"""A transition table the event has not: an empty relation of the same shape."""

_TRIGGERS = (  # event, transition tables, new rows, old rows
    ("insert", "referencing new table as new_rows", "new_rows", _EMPTY),
    ("update", "referencing old table as old_rows new table as new_rows", "new_rows", "old_rows"),
    ("delete", "referencing old table as old_rows", _EMPTY, "old_rows"),
)


def _function(event: str, new_rows: str, old_rows: str) -> sql.Composable:
    """The statement trigger function of ``event``: inserts the statement's net change of
    waiting and of resolved letters per (source, table)."""
    return sql.SQL("""
create or replace function tidemark.{name}() returns trigger language plpgsql as $fn$
begin
    insert into tidemark.dead_letter_counts (source, table_name, waiting, resolved)
    select d.source, d.table_name, sum(d.w), sum(d.r)
      from (select source, table_name, (replayed_at is null)::int as w,
                   (replayed_at is not null)::int as r from {new_rows} n
            union all
            select source, table_name, -(replayed_at is null)::int,
                   -(replayed_at is not null)::int from {old_rows} o) d
     group by d.source, d.table_name
    having sum(d.w) <> 0 or sum(d.r) <> 0;
    return null;
end
$fn$""").format(name=sql.Identifier(f"{FUNCTION}_{event}"), new_rows=sql.SQL(new_rows),
                old_rows=sql.SQL(old_rows))


_TRUNCATE = sql.SQL("""
create or replace function tidemark.{name}() returns trigger language plpgsql as $fn$
begin
    delete from tidemark.dead_letter_counts;
    return null;
end
$fn$""").format(name=sql.Identifier(f"{FUNCTION}_truncate"))


def _triggers() -> list[str]:
    return [f"{TRIGGER}_{event}" for event, _, _, _ in _TRIGGERS] + [f"{TRIGGER}_truncate"]


def counts_installed(conn: psycopg.Connection) -> bool:
    """Whether every trigger of the counts is on ``tidemark.dead_letters``, and counts the
    resolved letters too (a landing older than round 37 counted the waiting ones only: its
    counts are installed again, and counted again)."""
    return conn.execute(
        "select (select count(*) from pg_trigger where tgrelid ="
        " to_regclass('tidemark.dead_letters') and tgname = any(%s)) = %s and exists (select"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname ="
        " 'tidemark' and p.proname = %s and p.prosrc like '%%resolved%%')",
        (_triggers(), len(_triggers()), f"{FUNCTION}_insert")).fetchone()[0]


def ensure_counts(conn: psycopg.Connection) -> None:
    """Install the triggers and count the letters already waiting (once; in the caller's
    transaction, which must hold ``ingestion.state``'s DDL lock and have created the tables).

    The first ``CREATE TRIGGER`` takes a lock on ``dead_letters`` that no writer gets past
    until this transaction commits; the letters counted below are then exactly those no
    trigger counted.
    """
    if counts_installed(conn):
        return
    statements = [(event, _function(event, new, old), f"after {event}", referencing)
                  for event, referencing, new, old in _TRIGGERS]
    statements.append(("truncate", _TRUNCATE, "after truncate", ""))
    for event, function, when, referencing in statements:
        name = sql.Identifier(f"{TRIGGER}_{event}")
        conn.execute(function)
        conn.execute(sql.SQL("drop trigger if exists {} on tidemark.dead_letters").format(name))
        conn.execute(sql.SQL(
            "create trigger {} {} on tidemark.dead_letters {} for each statement"
            " execute function tidemark.{}()").format(
            name, sql.SQL(when), sql.SQL(referencing), sql.Identifier(f"{FUNCTION}_{event}")))
    conn.execute("create index if not exists dead_letter_counts_source"
                 " on tidemark.dead_letter_counts (source)")
    conn.execute("delete from tidemark.dead_letter_counts")
    conn.execute("insert into tidemark.dead_letter_counts (source, table_name, waiting,"
                 " resolved) select source, table_name, count(*) filter (where replayed_at is"
                 " null), count(*) filter (where replayed_at is not null)"
                 " from tidemark.dead_letters group by source, table_name")


WAITING = sql.SQL("select table_name, sum(waiting)::bigint, count(*) from"
                  " tidemark.dead_letter_counts where source = %s group by table_name")
"""Letters waiting per table of a source, and how many delta rows were summed."""


def waiting_counts(conn: psycopg.Connection, source: str) -> dict[str, int]:
    """Letters waiting per table of ``source`` (tables without any are left out).

    Reads the delta rows, not the letters; folds them (:func:`compact`) when more than
    :data:`COMPACT_AT` have piled up.

    Args:
        conn: landing connection in autocommit mode (the fold is a transaction of its own).
        source: source name.
    """
    rows = conn.execute(WAITING, (source,)).fetchall()
    if sum(r[2] for r in rows) > COMPACT_AT:
        compact(conn, source)
    return {name: int(n) for name, n, _ in rows if n}


def resolved_count(conn: psycopg.Connection, source: str, table: str | None = None) -> int:
    """Letters of ``source`` (or of its ``table``) replayed before: applied or superseded.

    Reads the delta rows, not the letters (``dlq replay`` reports them as skipped; counted in
    the queue they were a scan of every letter: 1.5 s at a week of the 10x demo's letters).

    Args:
        conn: landing connection.
        source: source name.
        table: only this table's letters.
    """
    if not _counts_resolved(conn):  # a landing older than round 37, read by a role that may
        # not upgrade it (``ensure_state(read_only=True)``): counted in the letters
        return int(conn.execute(
            "select count(*) from tidemark.dead_letters where source = %s and (%s::text is null"
            " or table_name = %s) and replayed_at is not null",
            (source, table, table)).fetchone()[0])
    return int(conn.execute(
        "select coalesce(sum(resolved), 0) from tidemark.dead_letter_counts where source = %s"
        " and (%s::text is null or table_name = %s)", (source, table, table)).fetchone()[0])


def letter_count(conn: psycopg.Connection, source: str) -> int:
    """Every letter of ``source``, waiting or replayed before, from the delta rows (in the
    caller's transaction; no fold): ``tidemark source remove``'s report."""
    waiting = conn.execute(
        "select coalesce(sum(waiting), 0) from tidemark.dead_letter_counts where source = %s",
        (source,)).fetchone()[0]
    return int(waiting) + resolved_count(conn, source)


def _counts_resolved(conn: psycopg.Connection) -> bool:
    """Whether ``dead_letter_counts`` has its ``resolved`` column (round 37 on)."""
    return conn.execute(
        "select exists (select from pg_attribute where attrelid ="
        " to_regclass('tidemark.dead_letter_counts') and attname = 'resolved'"
        " and not attisdropped)").fetchone()[0]


def compact(conn: psycopg.Connection, source: str) -> None:
    """Fold the delta rows of ``source`` into one row per table.

    Read committed, in one statement: rows of transactions still running are not visible and
    stay; two folds at once delete each row once (the second skips what the first deleted) and
    each inserts the sums of what it deleted. A landing role that may not write here (a reader)
    leaves the rows as they are: the sum is the same.

    Args:
        conn: landing connection in autocommit mode.
        source: source name.
    """
    try:
        with conn.transaction():
            conn.execute("set transaction isolation level read committed")
            conn.execute(
                "with gone as (delete from tidemark.dead_letter_counts where source = %(s)s"
                " returning table_name, waiting, resolved)"
                " insert into tidemark.dead_letter_counts (source, table_name, waiting,"
                " resolved) select %(s)s, table_name, sum(waiting), sum(resolved) from gone"
                " group by table_name having sum(waiting) <> 0 or sum(resolved) <> 0",
                {"s": source})
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction) as exc:
        log.debug("dead-letter counts of %s not folded: %s", source, exc)
