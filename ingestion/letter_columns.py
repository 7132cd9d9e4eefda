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

Such a row's mirror row reads the value all the same (the source's row does: the column's
default, whatever image it has; a ``nullable: false`` column stayed NULL there until round 39),
and its changelog row is recorded just before the row's oldest waiting letter, at the ``_seq``
the stream keeps there for an old image (the letter's minus one, in the letter's source
transaction): after every changelog row of the key, before every letter of it, so the letter
stays the row's latest image and the changelog still replays to the mirror
(:func:`write_held_rows`). The letter holds the value too
(:func:`ingestion.side_tables.letters_take_column`). Should that position be taken (a row of
another key there: a mirror out of step with its changelog), the row keeps NULL in the added
columns instead, as its changelog rows say.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.lsn import lsn_to_str
from ingestion.side_tables import no_change_after


def _held_letters(info: object, select: sql.Composable, order: sql.Composable
                  ) -> sql.Composed:
    """The waiting letters that are their row's latest image: committed after the table's
    resync snapshot, and no changelog row of the key (nor a truncate) came after them; their
    key columns are ``k0``, ``k1``, ... Parameters: :func:`held_params`'s."""
    types = {c.name: c.type_sql for c in info.columns}
    keys = [sql.SQL("(d.raw_row ->> {})::{}").format(sql.Literal(k), sql.SQL(types[k]))
            for k in info.key]
    return sql.SQL(
        "select {}{} from tidemark.dead_letters d where d.source = %(held_source)s"
        " and d.table_name = %(held_table)s and d.replayed_at is null"
        " and d.commit_lsn >= %(held_snap)s::pg_lsn and {}{}").format(
            select, sql.SQL(", ").join(sql.SQL("{} as {}").format(v, sql.Identifier(f"k{i}"))
                                       for i, v in enumerate(keys)),
            no_change_after(info, keys), order)


def held_keys(info: object) -> sql.Composed:
    """A query of the keys whose latest image is a waiting dead letter (``k0``, ...)."""
    return _held_letters(info, sql.SQL("distinct "), sql.SQL(""))


def first_held(info: object) -> sql.Composed:
    """A query of the oldest letter of each key :func:`held_keys` lists: its key (``k0``, ...)
    and position (``lsn``, ``commit_lsn``, ``seq``, ``commit_at``, ``txid``)."""
    keys = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(info.key)))
    return _held_letters(
        info, sql.SQL("distinct on ({}) d.lsn, d.commit_lsn, d.seq, d.commit_at, d.txid, ")
        .format(keys), sql.SQL(" order by {}, d.commit_lsn, d.seq").format(keys))


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


def _match(info: object, alias: str, other: str, numbered: bool) -> sql.Composed:
    """``alias``'s key equals ``other``'s (``other``'s columns ``k0``, ... if ``numbered``)."""
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier(other, f"k{i}" if numbered else k),
                                  sql.Identifier(alias, k)) for i, k in enumerate(info.key))


def write_held_rows(conn: psycopg.Connection, info: object, added: list[str]) -> int:
    """Record the mirror rows whose latest image is a waiting letter in the changelog, with
    the values of the ``added`` columns they read, just before the oldest such letter of
    their key (the module's docstring); return how many rows.

    A row whose position is taken keeps NULL in the added columns (mirror and changelog agree).
    Runs in the schema change's transaction, after the mirror got the columns and the landing
    transaction's letters were written.

    Args:
        conn: the landing connection.
        info: the keyed table, with the added columns.
        added: the added columns that got a value.
    """
    if not info.key or not added:
        return 0
    cols = sql.SQL(", ").join(sql.Identifier("m", c) for c in info.column_names)
    keys = sql.SQL(", ").join(map(sql.Identifier, info.key))
    return conn.execute(sql.SQL(
        "with h as ({held}), ins as (insert into {changelog} ({names}, _op, _seq, _lsn,"
        " _commit_lsn, _commit_at, _txid) select {cols}, 'u', h.seq - 1, h.lsn, h.commit_lsn,"
        " h.commit_at, h.txid from {mirror} m join h on {in_h} on conflict do nothing"
        " returning {keys}),"
        " kept as (update {mirror} m set {nulls} from h where {in_h} and not exists"
        " (select 1 from ins where {in_ins}) returning 1)"
        " select (select count(*) from ins), (select count(*) from kept)").format(
            held=first_held(info), changelog=info.changelog,
            names=sql.SQL(", ").join(map(sql.Identifier, info.column_names)), cols=cols,
            mirror=info.mirror, in_h=_match(info, "m", "h", True), keys=keys,
            nulls=sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(c))
                                     for c in added),
            in_ins=_match(info, "m", "ins", False)),
        held_params(info)).fetchone()[0]
