"""A column the source adds while a row's latest image is a dead letter (keyed tables).

When the source adds a column with a value for its existing rows, the mirror's rows read it and
the changelog records it: one ``u`` row per mirror row at the ``ALTER``'s position
(:mod:`ingestion.backfill`). A row whose latest image is a waiting dead letter (a bad change
newer than the mirror's row) is an exception: its mirror row is an older image, and a changelog
row of it after the letter reads, to every rule that orders a letter against the changelog
(:func:`ingestion.dead_letters.superseded_query`, :func:`ingestion.side_tables.fill_from_letters`,
:func:`ingestion.side_tables.complete_letters`), as a later change of the row at the source. The
letter was superseded by the mirror's older row, and a good update that left a TOAST value alone
took the mirror's older value (round 38, generator seed 59).

Such a row gets no changelog row, and its mirror row keeps NULL in the added column: it is the
image from before the column existed, like the changelog's rows. The letter holds the value
(:func:`ingestion.side_tables.letters_take_column`) and stays the row's latest image.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.lsn import lsn_to_str
from ingestion.side_tables import no_change_after


def held_keys(info: object) -> sql.Composed:
    """A query of the keys whose latest image is a waiting dead letter: one that is committed
    after the table's resync snapshot and that no changelog row of the key (nor a truncate)
    came after. Its parameters are :func:`held_params`'s."""
    types = {c.name: c.type_sql for c in info.columns}
    keys = [sql.SQL("(d.raw_row ->> {})::{}").format(sql.Literal(k), sql.SQL(types[k]))
            for k in info.key]
    return sql.SQL(
        "select distinct {} from tidemark.dead_letters d where d.source = %(held_source)s"
        " and d.table_name = %(held_table)s and d.replayed_at is null"
        " and d.commit_lsn >= %(held_snap)s::pg_lsn and {}").format(
            sql.SQL(", ").join(sql.SQL("{} as {}").format(v, sql.Identifier(f"k{i}"))
                               for i, v in enumerate(keys)), no_change_after(info, keys))


def held_params(info: object) -> dict[str, str]:
    """The parameters of :func:`held_keys`."""
    return {"held_source": info.source, "held_table": info.name,
            "held_snap": lsn_to_str(getattr(info, "snapshot_lsn", 0) or 0)}


def outside_held(info: object, alias: str) -> sql.Composed:
    """The condition that the mirror row ``alias`` is not of a key :func:`held_keys` lists
    (true for a keyless table)."""
    if not info.key:
        return sql.SQL("true")
    return sql.SQL("not exists (select 1 from ({}) h where {})").format(
        held_keys(info), sql.SQL(" and ").join(
            sql.SQL("h.{} = {}").format(sql.Identifier(f"k{i}"), sql.Identifier(alias, k))
            for i, k in enumerate(info.key)))


def clear_held(conn: psycopg.Connection, info: object, columns: list[str]) -> None:
    """Set the added ``columns`` back to NULL in the mirror rows whose latest image is a
    waiting letter (keyed tables; the letters of the landing transaction are written before).

    Args:
        conn: the landing connection, in the schema change's transaction.
        info: the table, with the added columns.
        columns: the added columns that got a value.
    """
    if not info.key or not columns:
        return
    conn.execute(sql.SQL("update {} m set {} where not ({})").format(
        info.mirror, sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(c))
                                        for c in columns),
        outside_held(info, "m")), held_params(info))
