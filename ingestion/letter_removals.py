"""Removals of a row that only a dead letter holds: they take the letter, not a mirror row.

A change that did not change the mirror is not in the changelog (round 37). When a row breaks
its contract it is a dead letter, not a mirror row; when the source later removes it (a ``d``,
or the ``b`` old row of an update or of a key change), the mirror has nothing to remove. Such a
removal takes the letter instead (the letter is superseded as the removal lands) and writes no
changelog row. Before, it was logged: for a keyless table (a bag), once a replay added an equal
letter at its own, earlier position, the changelog replayed to a copy fewer than the mirror and
the source held (the history built from ``cdc.*`` was one row short); for a keyed one, ``cdc.*``
held deletes of keys it never had.

Letters of the same landing transaction are not written yet:
:class:`ingestion.changes.ChangeBuffer` takes them as it buffers the removal (:func:`supersede`
marks them). Letters already written are taken as the batch lands, against the mirror:
:func:`take_letters` (keyless) and :func:`take_keyed_letters`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ingestion.letter_indexes import current_letters, key_expressions
from ingestion.lsn import str_to_lsn


def supersede(letters: list[list]) -> None:
    """Mark dead letters not written yet (:meth:`ingestion.changes.ChangeBuffer._rejected`'s
    lists) superseded: the source removed their row in the same landing transaction."""
    now = datetime.now(UTC)
    for letter in letters:
        letter[-2:] = [now, "superseded"]


def take_letters_sql(info: Any, stg: sql.Identifier) -> sql.Composed:
    """The statement of :func:`take_letters` (two parameters: source and table name)."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in info.columns)
    row_m = sql.SQL("row({})::text").format(sql.SQL(", ").join(
        sql.Identifier("mm", c.name) for c in info.columns))
    typed = sql.SQL("row({})::text").format(sql.SQL(", ").join(
        sql.SQL("(d.raw_row ->> {})::{}").format(sql.Literal(c.name), sql.SQL(c.type_sql))
        for c in info.columns))  # the landing's own types, as the mirror's rows
    return sql.SQL(
        "with s as materialized (select ctid as tid, row({cols})::text as k0, _commit_lsn as cl,"
        " _seq as sq, case when _op in ('b', 'd') then -1 else 1 end as sign from {stg}),"
        " r as materialized (select distinct k0 from s where sign < 0),"
        " m as (select {row_m} as k0, count(*) as n from {mirror} mm where {row_m} in"
        " (select k0 from r) group by 1),"
        " w as (select s.*, coalesce(m.n, 0) + sum(s.sign) over (partition by s.k0 order by"
        " s.cl, s.sq rows unbounded preceding) as level from s join r using (k0)"
        " left join m using (k0)),"
        " v as (select w.*, min(level) over (partition by k0 order by cl, sq rows between"
        " unbounded preceding and 1 preceding) as low from w),"
        " bad as materialized (select tid, k0, cl, sq, count(*) over (partition by k0) as n,"
        " row_number() over (partition by k0 order by cl desc, sq desc) as rn from v"
        " where sign < 0 and level < 0 and level < coalesce(low, 0)),"
        " lt as (select d.id, {typed} as k0, d.commit_lsn, d.seq from tidemark.dead_letters d"
        " where d.source = %s and d.table_name = %s and d.replayed_at is null and {current}"
        " and exists (select 1 from bad)),"
        " pick as (select id from (select lt.id, b.n, row_number() over (partition by lt.k0"
        " order by lt.commit_lsn desc, lt.seq desc) as rn from lt join bad b on b.rn = 1"
        " and b.k0 = lt.k0 and (lt.commit_lsn, lt.seq) < (b.cl, b.sq)) x where rn <= n),"
        " taken as (update tidemark.dead_letters d set replayed_at = clock_timestamp(),"
        " replay_result = 'superseded' from pick where d.id = pick.id returning 1)"
        " delete from {stg} where ctid = any(array(select tid from bad))"
    ).format(cols=cols, stg=stg, row_m=row_m, mirror=info.mirror, typed=typed,
             current=current_letters(info, "d"))


def take_letters(cur: psycopg.Cursor, info: Any, stg: sql.Identifier) -> None:
    """Drop a keyless batch's removals that find no mirror copy, and supersede the letters
    whose copies they take.

    Line by line in change order, per distinct row, the mirror's copies plus the batch's
    insertions minus its removals so far: a removal that takes the count below zero, and
    below every count before it, found no copy (a bounded running sum, as window functions
    over the staging table, one join to the mirror). Each such removal supersedes a waiting
    letter of its row written before it (the newest first: a letter from before the table's
    last truncate is void, and copies are equal) and leaves the staging table, so neither the
    changelog nor the bag's net change sees it. Only the letters of the table's current
    snapshot are read (:func:`ingestion.letter_indexes.current_letters`): one from before its
    last resync is void, left to a replay, and may hold another type's text (``'abc'`` in a
    column now ``integer``), which the row's cast would fail on. Runs before the batch lands,
    for a keyless table under a contract (letters exist there only) whose batch removes rows.

    Args:
        cur: a landing cursor in the batch's transaction.
        info: the table (keyless ``TableInfo``).
        stg: its staging table, the batch copied in.
    """
    cur.execute(take_letters_sql(info, stg), (info.source, info.name))


def take_keyed_letters_sql(info: Any, stg: sql.Identifier, among: bool = False
                           ) -> sql.Composed:
    """The statement of :func:`take_keyed_letters` (two parameters: source and table name;
    with ``among``, first one text array per key column: the removed keys to look at)."""
    types = {c.name: c.type_sql for c in info.columns}
    keys = sql.SQL(", ").join(map(sql.Identifier, info.key))
    only = sql.SQL("")
    if among:
        source, typed = _keys_sql(info)
        only = sql.SQL(" and ({}) in (select {} from {})").format(keys, typed, source)
    in_mirror = sql.SQL(" and ").join(
        sql.SQL("m.{k} = f.{k}").format(k=sql.Identifier(k)) for k in info.key)
    in_letter = sql.SQL(" and ").join(
        sql.SQL("(d.raw_row ->> {})::{} = b.{}").format(sql.Literal(k), sql.SQL(types[k]),
                                                         sql.Identifier(k))
        for k in info.key)
    return sql.SQL(
        "with f as materialized (select distinct on ({keys}) ctid as tid, {keys}, _op,"
        " _commit_lsn as cl, _seq as sq from {stg} where ({keys}) in (select {keys} from {stg}"
        " where _op in ('b', 'd'){only}) order by {keys}, _commit_lsn, _seq),"
        " b as materialized (select * from f where f._op in ('b', 'd') and not exists"
        " (select 1 from {mirror} m where {in_mirror})),"
        " taken as (update tidemark.dead_letters d set replayed_at = clock_timestamp(),"
        " replay_result = 'superseded' from b where d.source = %s and d.table_name = %s"
        " and d.replayed_at is null and {current} and {in_letter}"
        " and (d.commit_lsn, d.seq) < (b.cl, b.sq))"
        " delete from {stg} s using b where s.ctid = b.tid returning b.cl::text, b.sq"
    ).format(keys=keys, stg=stg, only=only, mirror=info.mirror, in_mirror=in_mirror,
             current=current_letters(info, "d"), in_letter=in_letter)


def take_keyed_letters(cur: psycopg.Cursor, info: Any, stg: sql.Identifier,
                       takes: dict[tuple[int, int], list[list]],
                       among: set[Any] | None = None) -> None:
    """Drop a keyed batch's removals that find no row, and supersede the letters of their keys.

    A key's first line in the batch that is a removal (``b``/``d``) and whose key the mirror
    lacks removed nothing: the row was a dead letter only (a bad insert, then a delete). It
    leaves the staging table (a later line of the key still decides the mirror's row), and the
    key's waiting letters written before it are superseded now (a replay superseded them by
    that logged removal before); a letter from before the table's last resync snapshot is void
    and left to a replay (:func:`ingestion.letter_indexes.current_letters`). ``takes`` are the
    letters of this landing transaction (not written yet) such a removal takes
    (:meth:`ingestion.changes.ChangeBuffer._remove`); they are marked in place. One
    statement: the first line per removed key (a sort of those keys' lines only: 2.3 ms instead
    of 15 ms for 500 removals in 10,500 lines, round 38) and a probe of the mirror's primary key
    per removed key.

    Args:
        cur: a landing cursor in the batch's transaction.
        info: the table (keyed ``TableInfo``).
        stg: its staging table, the batch copied in.
        takes: per removal line (``_commit_lsn``, ``_seq``), letters it takes if it is void.
        among: the removed keys that can meet a letter (:func:`lettered_removals`), the only
            ones looked at; None: every removed key.
    """
    params = _key_arrays(info, among) if among is not None else []
    cur.execute(take_keyed_letters_sql(info, stg, among is not None),
                (*params, info.source, info.name))
    if not takes:  # nothing to mark: no read (the statement may run in a pipeline)
        return
    for lsn, seq in cur.fetchall():
        letters = takes.get((str_to_lsn(lsn), seq))
        if letters:
            supersede(letters)


# Key types whose text is one per value whatever the session (no time zone, date style, float
# digits or numeric scale): the stream's text of a key and a letter's equal iff the keys do.
_PLAIN_KEY_TYPES = ("smallint", "integer", "bigint", "text", "uuid", "character varying")


def plain_keys(info: Any) -> bool:
    """Whether the keyed table's key columns compare by their text (:data:`_PLAIN_KEY_TYPES`):
    then :func:`lettered_removals` can tell in memory which removals may meet a letter."""
    types = {c.name: c.type_sql for c in info.columns}
    return all(types[k].split("(")[0] in _PLAIN_KEY_TYPES for k in info.key)


def _keys_sql(info: Any) -> tuple[sql.Composed, sql.Composed]:
    """Keys sent as one text array per key column: ``unnest(...) as u(k0, ...)`` and the list
    ``u.k0::type, ...``."""
    types = {c.name: c.type_sql for c in info.columns}
    names = [sql.Identifier(f"k{i}") for i in range(len(info.key))]
    source = sql.SQL("unnest({}) as u({})").format(
        sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in names), sql.SQL(", ").join(names))
    typed = sql.SQL(", ").join(sql.SQL("u.{}::{}").format(n, sql.SQL(types[k]))
                               for n, k in zip(names, info.key, strict=True))
    return source, typed


def _key_arrays(info: Any, keys: set[Any]) -> list[list[str]]:
    """``keys`` (bytes, or tuples of bytes) as one text list per key column."""
    rows = [(k,) if len(info.key) == 1 else k for k in keys]
    if not rows:
        return [[] for _ in info.key]
    return [[v.decode() for v in col] for col in zip(*rows, strict=True)]


def letter_keys(cur: psycopg.Cursor, info: Any, keys: set[Any]) -> set[Any]:
    """Those of ``keys`` (as :func:`ingestion.changes.key_of` gives them: bytes, or a tuple)
    that a waiting dead letter of the keyed table holds, as written so far: one probe of the
    table's letter index (:mod:`ingestion.letter_indexes`) per key, never a walk of its
    letters."""
    if not keys:
        return set()
    source, _ = _keys_sql(info)
    types = {c.name: c.type_sql for c in info.columns}
    names = [sql.Identifier(f"k{i}") for i in range(len(info.key))]
    match = sql.SQL(" and ").join(
        sql.SQL("{} = u.{}::{}").format(e, n, sql.SQL(types[k]))
        for e, n, k in zip(key_expressions(info), names, info.key, strict=True))
    rows = cur.execute(sql.SQL(
        "select {} from {} where exists (select 1 from tidemark.dead_letters where source = %s"
        " and table_name = %s and replayed_at is null and {} and {})").format(
            sql.SQL(", ").join(sql.SQL("u.{}").format(n) for n in names), source,
            current_letters(info), match),
        (*_key_arrays(info, keys), info.source, info.name)).fetchall()
    single = len(info.key) == 1
    return {row[0].encode() if single else tuple(v.encode() for v in row) for row in rows}


def lettered_removals(removed: set[Any], made: set[Any] | None,
                      written: Callable[[set[Any]], set[Any]]) -> set[Any]:
    """The batch's removed keys that a waiting letter may hold: the only removals
    :func:`take_keyed_letters` can take a letter for.

    ``made``: the keys of every letter the applier made since it started
    (:meth:`ingestion.changes.ChangeBuffer._letter`), written or not; ``written``: of the other
    removed keys, those a letter in the table holds (:func:`letter_keys`). A letter that left
    stays in ``made`` (one key more looked at, never one less). Only ``removed`` is iterated:
    another thread may add to ``made`` meanwhile.

    A removal whose key no letter holds takes none; were it void (the mirror lacks the key),
    it lands as on a table without letters. On a batch of 10,000 updates and 500 deletes of a
    million-row table with 3,000 letters, about one or two deleted keys: the statement sorts
    and probes those only, and a batch with none runs no statement and leaves its letters to
    the commit's pipeline (round 38).
    """
    mine = {k for k in removed if made is not None and k in made}
    return mine | written({k for k in removed if k not in mine})


def any_held(letters: list[list] | None, info: Any, keys: set[Any]) -> bool:
    """Whether one of ``letters`` (the applier's, not written yet) is of the keyed table and
    holds one of ``keys``: only then must they be written before :func:`take_keyed_letters`
    looks for its keys' letters; else they wait for the commit's pipeline."""
    single = len(info.key) == 1
    for letter in letters or ():
        if letter[1] != info.name:
            continue
        row = letter[9].obj
        values = [row.get(k) for k in info.key]
        if None in values:
            return True  # cannot tell: write
        key = values[0].encode() if single else tuple(v.encode() for v in values)
        if key in keys:
            return True
    return False
