"""Following a source schema change in landing: the DDL on a table's mirror and changelog.

:class:`ingestion.relations.RelationTracker` decides whether a change of a Relation message can
be followed (the contract, a reserved name, a per-row default); what it follows is applied here,
in the landing transaction at the change's place in the stream: added columns (with the value
the source gives existing rows), wider types, dropped columns (kept, or NULL), a key gained,
lost or changed. :func:`exclusive_tables` names the tables that DDL locks, which
:class:`ingestion.ddl_locks.DdlLocks` waits for without queueing readers.
"""

from __future__ import annotations

from dataclasses import replace

from psycopg import sql

from ingestion.applier import Applier
from ingestion.backfill import write_changelog_rows
from ingestion.letter_indexes import DEAD_LETTERS, drop_letter_index
from ingestion.schema_changes import SchemaChange
from ingestion.side_tables import letters_take_column
from ingestion.tables import (
    ColumnInfo,
    TableInfo,
    add_column,
    keep_dropped_column,
    retire_column,
    set_mirror_key,
    widen_column,
)


def exclusive_tables(info: TableInfo, changes: list[SchemaChange], key: list[str],
                     stale: sql.Identifier | None) -> list[sql.Identifier]:
    """The tables :func:`apply_changes` alters (ACCESS EXCLUSIVE).

    Args:
        info: the table before the changes.
        changes: the changes followed.
        key: the key after them.
        stale: the letter index of a widened or new key, dropped
            (:func:`~ingestion.letter_indexes.stale_letter_index`), or None.

    Returns:
        Mirror and changelog for an added column (not a retired one back: an UPDATE), a wider
        type or a new key; none for a column retired (an UPDATE); and the dead letters when
        ``stale`` goes.
    """
    retired = {c.name for c in info.retired}
    altered = sorted(key) != sorted(info.key) or any(
        c.kind == "widen_type" or (c.kind.startswith("add_") and c.column not in retired)
        for c in changes)
    return ([info.mirror, info.changelog] if altered else []) + ([DEAD_LETTERS] if stale else [])


def apply_changes(applier: Applier, info: TableInfo, changes: list[SchemaChange],
                  cols: list[ColumnInfo], key: list[str], defaults: dict, lsn: int | None,
                  keep_values: bool = False, stale: sql.Identifier | None = None
                  ) -> list[ColumnInfo]:
    """Apply followable changes to mirror and changelog (inside a savepoint).

    Args:
        applier: the applier (its connection and transaction carry the DDL).
        info: the table before the changes.
        changes: the changes to follow.
        cols: the columns after them.
        key: the key after them.
        defaults: the added columns' defaults (:func:`ingestion.catalog.column_defaults`).
        lsn: the commit LSN of the change, or None (the open transaction's).
        keep_values: a dropped column keeps the mirror's values (a table without a
            contract), else it is NULL in every row.
        stale: the letter index of a widened or new key, dropped first.

    Returns:
        The retired columns after the changes.
    """
    conn = applier.conn
    if stale is not None:
        drop_letter_index(conn, stale)
    retired = list(info.retired)
    valued: list[str] = []
    for change in changes:
        if change.kind.startswith("add_"):
            existing = defaults.get(change.column)
            value = existing.missing if existing is not None else None
            if any(c.name == change.column for c in retired):
                # A retired column comes back (same type): set, not add.
                retired = [c for c in retired if c.name != change.column]
                if value is not None:
                    conn.execute(sql.SQL("update {} set {} = {}::{}").format(
                        info.mirror, sql.Identifier(change.column), sql.Literal(value),
                        sql.SQL(change.new_column.type_sql)))
            else:
                add_column(conn, info, change.new_column, value)
            if value is not None:
                valued.append(change.column)
                letters_take_column(conn, info, change.column, value, applier._dead)
        elif change.kind == "widen_type":
            applier.write_letters(info.name)  # their values convert too
            widen_column(conn, info, change.new_column)
        elif change.kind == "drop_column":
            if not keep_values:
                retire_column(conn, info, change.column)
            retired.append(next(c for c in info.columns if c.name == change.column))
    if sorted(key) != sorted(info.key):
        set_mirror_key(conn, info.mirror, key)
    for change in changes:  # after the key: a dropped key column can then take NULL
        if keep_values and change.kind == "drop_column":
            keep_dropped_column(conn, info, change.column)
    if valued and applier.txn is not None:
        shaped = replace(info, columns=cols, key=key)
        applier.write_letters(info.name)
        write_changelog_rows(conn, shaped, valued, applier.txn, lsn or applier.txn.commit_lsn)
    return retired
