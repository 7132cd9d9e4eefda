"""Columns added on the source with a value for existing rows: what landing gives the mirror's
existing rows, and the changelog rows that record it.

The Relation message carries no defaults, and ``ALTER TABLE ... ADD COLUMN`` decodes to no row
changes, so the value is read from the source catalog:

- a non-volatile default (a constant, ``now()``) is stored once in ``attmissingval``: every
  existing row reads it. The mirror gets it the same way (a default added and dropped again, no
  rewrite), and the changelog gets one ``u`` row per existing row (``b`` + ``u`` for a keyless
  table), at the position of the change, so replaying the changelog gives the source's rows;
- a default evaluated per row (``random()``, ``gen_random_uuid()``, ``clock_timestamp()``, an
  identity or serial column) rewrote the source table with a value per row that only the source
  knows: the table is paused and resynced automatically (see :mod:`ingestion.resync`).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.batch import TxnContext
from ingestion.catalog import ColumnDefault
from ingestion.letter_columns import held_params, outside_held, write_held_rows
from ingestion.letter_indexes import current_letters
from ingestion.lsn import lsn_to_str
from ingestion.tables import TableInfo


def holds_no_rows(conn: psycopg.Connection, info: TableInfo, pending: list[list]) -> bool:
    """Whether landing holds no existing row of the table (then none needs a value): the mirror
    is empty and no dead letter of its current snapshot waits, written or ``pending`` (the
    applier's letters not written yet). A waiting letter is a source row too: after a rewrite
    its value in an added column is the source's alone (generator seed 45439: a keyless table
    emptied by a truncate, its rows all in letters, lost the column's value in them)."""
    return not conn.execute(sql.SQL(
        "select exists (select 1 from {}) or exists (select 1 from tidemark.dead_letters"
        " where source = %s and table_name = %s and replayed_at is null and {})").format(
            info.mirror, current_letters(info)), (info.source, info.name)).fetchone()[0] \
        and not any(letter[1] == info.name for letter in pending)


def needs_resync(defaults: dict[str, ColumnDefault]) -> list[str]:
    """The added columns whose existing values only the source knows."""
    return [name for name, d in defaults.items() if d.per_row]


def write_changelog_rows(conn: psycopg.Connection, info: TableInfo, added: list[str],
                         txn: TxnContext, lsn: int) -> int:
    """Record the new values of every existing row in the changelog; return how many rows.

    Keyed tables get a ``u`` row per mirror row; keyless ones a ``b`` row (the row as it was,
    the new columns NULL) and a ``u`` row. Their ``_seq`` values are taken from the source
    transaction, before the change that carried the new shape. A keyed row whose latest image
    is a waiting dead letter gets its row just before that letter instead
    (:func:`ingestion.letter_columns.write_held_rows`).
    """
    written = write_held_rows(conn, info, added)
    kept = outside_held(info, "m")
    held = held_params(info) if info.key else {}
    count = conn.execute(sql.SQL("select count(*) from {} m where {}").format(info.mirror, kept),
                         held).fetchone()[0]
    if not count:
        return written
    base = txn.next_seq(2 * count) - 2 * count
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    before = sql.SQL(", ").join(
        sql.SQL("null::{}").format(sql.SQL(c.type_sql)) if c.name in added
        else sql.Identifier(c.name) for c in info.columns)
    meta = sql.SQL("%(lsn)s::pg_lsn, %(commit_lsn)s::pg_lsn, %(at)s::timestamptz, %(xid)s::bigint")
    rows = sql.SQL("select {}, 'u', %(base)s + 2 * rn, {} from m").format(cols, meta)
    if not info.key:
        rows = sql.SQL("select {}, 'b', %(base)s + 2 * rn - 1, {} from m union all {}").format(
            before, meta, rows)
    conn.execute(sql.SQL(
        "insert into {} ({}, _op, _seq, _lsn, _commit_lsn, _commit_at, _txid)"
        " with m as (select {}, row_number() over () as rn from {} m where {}) {}"
        " on conflict do nothing").format(info.changelog, cols, cols, info.mirror, kept, rows),
        {"lsn": lsn_to_str(lsn), "commit_lsn": lsn_to_str(txn.commit_lsn), "at": txn.commit_at,
         "xid": txn.xid, "base": base, **held})
    return written + count * (1 if info.key else 2)
