"""The applier's side tables, written one statement per batch: dead letters and paused changes.

A landing transaction may carry thousands of changes that do not reach a mirror: rows that broke
their contract (``tidemark.dead_letters``) and changes of a paused table
(``tidemark.paused_changes``). They used to go in one ``INSERT`` per row (psycopg's
``executemany``): one statement executed per row, and on ``dead_letters`` one run of the
statement trigger that keeps the waiting count (:mod:`ingestion.dead_letter_counts`) and one
count row per letter. Here each list is a single ``INSERT ... SELECT`` from one JSON array of the
rows (:func:`insert_rows`): one statement, one trigger run and one count row per batch, however
many rows it holds (``bench/dead_letter_writes.py``).

A row that is a dead letter only still owns its TOAST values: :func:`fill_from_letters` and
:func:`complete_letters` take them from the letters when the mirror has no row to take them from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.lsn import lsn_to_str

DEAD_LETTER_COLUMNS = (
    ("source", "text"), ("table_name", "text"), ("lsn", "pg_lsn"), ("commit_lsn", "pg_lsn"),
    ("seq", "integer"), ("op", "text"), ("reason", "text"), ("violations", "jsonb"),
    ("contract_version", "text"), ("raw_row", "jsonb"), ("commit_at", "timestamptz"),
    ("txid", "bigint"), ("replayed_at", "timestamptz"), ("replay_result", "text"))
"""The columns of a dead letter as :meth:`ingestion.changes.ChangeBuffer._rejected` builds it
(LSNs as text), with their types. The last two are null but for a letter whose row the source
removed in the same landing transaction (:meth:`ingestion.changes.ChangeBuffer._take_letter`):
it is written superseded."""

PAUSED_COLUMNS = (
    ("source", "text"), ("table_name", "text"), ("commit_lsn", "pg_lsn"), ("seq", "integer"),
    ("lsn", "pg_lsn"), ("op", "text"), ("commit_at", "timestamptz"), ("txid", "bigint"),
    ("row_data", "jsonb"), ("old_data", "jsonb"))
"""The columns of a kept change of a paused table as :meth:`ingestion.changes.ChangeBuffer._keep`
builds it."""


def insert_rows(cur: psycopg.Cursor, table: str, columns: Sequence[tuple[str, str]],
                rows: Sequence[tuple], conflict: sql.Composable) -> None:
    """Insert ``rows`` into ``tidemark.<table>`` in one statement (the caller's transaction).

    The rows travel as one JSON array of arrays (one ``json.dumps``, in C), which the statement
    reads with ``jsonb_array_elements`` in order, casting each value to its column's type (a
    ``jsonb`` value is taken as it is). Binding one array per column instead costs psycopg's
    array dumper ~16 µs a value in Python: 2 s for 10,000 letters.

    Args:
        cur: a landing cursor (a pipeline may be open on its connection).
        table: the state table.
        columns: (name, type) of each value of a row, in the rows' order.
        rows: the rows: text, numbers, aware datetimes, ``Jsonb`` wrappers or None.
        conflict: the statement's ``on conflict ...`` clause.
    """
    if not rows:
        return
    values = sql.SQL(", ").join(
        sql.SQL("nullif(r.v -> {}, 'null')").format(sql.Literal(i)) if kind == "jsonb" else
        sql.SQL("(r.v ->> {})::{}").format(sql.Literal(i), sql.SQL(kind))
        for i, (_, kind) in enumerate(columns))
    cur.execute(sql.SQL(
        "insert into {} ({}) select {} from jsonb_array_elements(%s::jsonb) with ordinality"
        " as r(v, n) order by r.n {}").format(
            sql.Identifier("tidemark", table),
            sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns), values, conflict),
        (json.dumps(rows, default=_plain, ensure_ascii=False),))


def _plain(value: object) -> object:
    """The JSON form of a value ``json`` has none for: a ``Jsonb``'s object, a datetime's ISO
    text (with its offset)."""
    if isinstance(value, Jsonb):
        return value.obj
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__} {value!r}")


def no_change_after(info: object, keys: list[sql.Composable]) -> sql.Composed:
    """The condition that no changelog row of the key ``keys`` (one SQL value per key column)
    nor a truncate came after the dead letter ``d``: then the letter, not the mirror's row, is
    the row's latest image (read by the changelog's ``(_commit_lsn, _seq)`` index from the
    letter on)."""
    return sql.SQL("not exists (select 1 from {} c where (c._commit_lsn, c._seq) > (d.commit_lsn,"
                   " d.seq) and (c._op = 't' or ({})))").format(
        info.changelog, sql.SQL(" and ").join(
            sql.SQL("c.{} = {}").format(sql.Identifier(k), v)
            for k, v in zip(info.key, keys, strict=True)))


def fill_from_letters(cur: psycopg.Cursor, info: object, stg: sql.Identifier,
                      columns: set[str]) -> None:
    """Fill unchanged TOAST values from the row's dead letters when one is newer than the
    mirror's row.

    A row that broke its contract is a letter, not a mirror row. An update at the source that
    leaves a TOAST column alone sends it as unchanged, and :func:`ingestion.merge.fill_unchanged`
    takes it from the mirror: wrong when a letter set it since (a bad update that set the
    column, then a good one that left it: the good row got the mirror's older value), or when
    the mirror has no row at all (a bad insert made good later: the value landed NULL, and the
    update superseded the only letter that held it). The value is the newest waiting letter's
    of the row's key (``_tidemark_origin``) that holds the column, committed before the line
    and after the table's resync snapshot, when no changelog row of the key (nor a truncate)
    came after that letter: then the letter is the row's latest image. Runs after
    :func:`ingestion.merge.fill_unchanged`, one statement per column left unresolved; the
    changelog is read by its ``(_commit_lsn, _seq)`` index from the letter on, and only for
    lines whose key has such a letter.

    Args:
        cur: a landing cursor in the batch's transaction.
        info: the table (a keyed ``TableInfo``).
        stg: its staging table, the batch copied in.
        columns: the columns some line left unresolved.
    """
    key = list(info.key)
    if not key:
        return
    types = {c.name: c.type_sql for c in info.columns}
    in_letter = sql.SQL(" and ").join(
        sql.SQL("(d.raw_row ->> {})::{} = (o.org[{}])::{}").format(
            sql.Literal(k), sql.SQL(types[k]), sql.Literal(i + 1), sql.SQL(types[k]))
        for i, k in enumerate(key))
    fresh = no_change_after(info, [sql.SQL("(o.org[{}])::{}").format(
        sql.Literal(i + 1), sql.SQL(types[k])) for i, k in enumerate(key)])
    for column in sorted(columns):
        cur.execute(sql.SQL(
            "with o as materialized (select ctid as tid, _tidemark_origin as org, _commit_lsn"
            " as cl, _seq as sq from {stg} where _tidemark_unchanged @> array[{n}]),"
            " b as materialized (select distinct on (o.tid) o.tid, (d.raw_row ->> {n})::{t} as v"
            " from o join tidemark.dead_letters d on d.source = %s and d.table_name = %s"
            " and d.replayed_at is null and d.commit_lsn >= %s::pg_lsn"
            " and (d.commit_lsn, d.seq) < (o.cl, o.sq) and d.raw_row ? {n} and {in_letter}"
            " where {fresh} order by o.tid, d.commit_lsn desc, d.seq desc)"
            " update {stg} s set {c} = b.v from b where s.ctid = b.tid").format(
                stg=stg, n=sql.Literal(column), t=sql.SQL(types[column]), in_letter=in_letter,
                c=sql.Identifier(column), fresh=fresh),
            (info.source, info.name, lsn_to_str(info.snapshot_lsn or 0)))


def complete_letters(cur: psycopg.Cursor, info: object,
                     completions: list[tuple[dict, tuple, list[str], dict | None]]) -> None:
    """Complete the letters of rejected key changes with the TOAST values they left unchanged.

    The row left its old key (the batch's ``b`` line is about to land), so the letter must hold
    the values itself. Each comes from the old key's latest image before the change: its newest
    waiting letter that holds the column, when no changelog row of the key came after that
    letter (a bad update set the value since the mirror's row), else the old key's mirror row;
    with neither, the column stays out of the letter. Runs before the batch lands, on the
    landing transaction's cursor (one query a letter; rare: a key change that breaks the
    contract and leaves a TOAST value alone).

    Args:
        cur: a landing cursor in the batch's transaction.
        info: the table (keyed ``TableInfo``).
        completions: (the letter's ``raw_row`` dict, its old key as sent, the columns it
            lacks, the ``raw_row`` of the old key's letter of this batch or None); the dicts
            are completed in place, in order, before the letters are written. A column the
            old key's letter of the batch holds (completed before, when it was a key change
            too) comes from there: that letter is not written yet.
    """
    types = {c.name: c.type_sql for c in info.columns}
    keys = [sql.SQL("%(k{})s::{}").format(sql.SQL(str(i)), sql.SQL(types[k]))
            for i, k in enumerate(info.key)]
    in_letter = sql.SQL(" and ").join(
        sql.SQL("(d.raw_row ->> {})::{} = {}").format(sql.Literal(k), sql.SQL(types[k]), v)
        for k, v in zip(info.key, keys, strict=True))
    in_mirror = sql.SQL(" and ").join(
        sql.SQL("m.{} = {}").format(sql.Identifier(k), v)
        for k, v in zip(info.key, keys, strict=True))
    fresh = no_change_after(info, keys)
    for raw, origin, wanted, chained in completions:
        if chained:
            raw.update((c, chained[c]) for c in wanted if c in chained)
        left = [c for c in wanted if c not in raw]
        if not left:
            continue
        params = {"s": info.source, "t": info.name,
                  "snap": lsn_to_str(getattr(info, "snapshot_lsn", 0) or 0),
                  **{f"k{i}": v.decode() if isinstance(v, bytes) else v
                     for i, v in enumerate(origin)}}
        row = cur.execute(sql.SQL("select {}, {}, exists (select 1 from {} m where {})").format(
            sql.SQL(", ").join(
                sql.SQL("(select jsonb_build_array(d.raw_row -> {c}) from tidemark.dead_letters d"
                        " where d.source = %(s)s and d.table_name = %(t)s and d.replayed_at is"
                        " null and d.commit_lsn >= %(snap)s::pg_lsn and d.raw_row ? {c} and {m}"
                        " and {fresh} order by d.commit_lsn desc, d.seq desc limit 1)").format(
                    c=sql.Literal(c), m=in_letter, fresh=fresh) for c in left),
            sql.SQL(", ").join(sql.SQL("(select m.{}::text from {} m where {})").format(
                sql.Identifier(c), info.mirror, in_mirror) for c in left),
            info.mirror, in_mirror), params).fetchone()
        letters, mirror, in_the_mirror = row[:len(left)], row[len(left):-1], row[-1]
        for column, held, kept in zip(left, letters, mirror, strict=True):
            if held is not None:
                raw[column] = held[0]
            elif in_the_mirror:
                raw[column] = kept


def letters_take_column(cur: psycopg.Cursor | psycopg.Connection, info: object, column: str,
                        value: str, pending: list[list]) -> None:
    """Give the table's waiting dead letters a column the source added with a constant default.

    A source row that existed when the column was added reads the default (PostgreSQL's
    ``attmissingval``), and so does the mirror's (:func:`ingestion.tables.add_column`); a letter
    written before lacked it, and its replay landed NULL there (a keyed letter: the mirror's
    value, or NULL when the mirror has no row). Letters of the landing transaction not written
    yet (``pending``, :meth:`ingestion.changes.ChangeBuffer._rejected`'s lists) get it too.

    Args:
        cur: a landing cursor or connection in the schema change's transaction.
        info: the table.
        column: the added column.
        value: the text form of the value the source's existing rows read.
        pending: the dead letters not written yet.
    """
    cur.execute("update tidemark.dead_letters set raw_row = raw_row || jsonb_build_object(%s::text,"
                " %s::text) where source = %s and table_name = %s and replayed_at is null and"
                " not raw_row ? %s", (column, value, info.source, info.name, column))
    for letter in pending:
        if letter[1] == info.name:
            letter[9].obj.setdefault(column, value)
