"""Removals of a keyless row that only a dead letter holds: they take the letter, not the mirror.

A keyless table is a bag. When a row breaks the contract it is a dead letter, not a mirror copy;
when the source later removes it (a ``d``, or the ``b`` old row of an update), the mirror has no
copy to remove. Such a removal changed nothing in the mirror, so it is not in the changelog: a
change that did not change the mirror is not logged (round 37). It takes the letter's copy
instead: the letter is superseded as the batch lands. Before, the removal was logged and the
letter left to ``dlq replay`` to count out; a replay then added an equal letter at its own,
earlier position, and the changelog replayed to a copy fewer than the mirror and the source held
(the history dbt builds from ``cdc.*`` was one row short).

:meth:`ingestion.changes.ChangeBuffer._take_letter` does it for a letter of the same landing
transaction (not written yet); :func:`take_letters` for the lines of a staged batch against the
mirror and the letters already written.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


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
        " where d.source = %s and d.table_name = %s and d.replayed_at is null"
        " and exists (select 1 from bad)),"
        " pick as (select id from (select lt.id, b.n, row_number() over (partition by lt.k0"
        " order by lt.commit_lsn desc, lt.seq desc) as rn from lt join bad b on b.rn = 1"
        " and b.k0 = lt.k0 and (lt.commit_lsn, lt.seq) < (b.cl, b.sq)) x where rn <= n),"
        " taken as (update tidemark.dead_letters d set replayed_at = clock_timestamp(),"
        " replay_result = 'superseded' from pick where d.id = pick.id returning 1)"
        " delete from {stg} where ctid = any(array(select tid from bad))"
    ).format(cols=cols, stg=stg, row_m=row_m, mirror=info.mirror, typed=typed)


def take_letters(cur: psycopg.Cursor, info: Any, stg: sql.Identifier) -> None:
    """Drop a keyless batch's removals that find no mirror copy, and supersede the letters
    whose copies they take.

    Line by line in change order, per distinct row, the mirror's copies plus the batch's
    insertions minus its removals so far: a removal that takes the count below zero, and
    below every count before it, found no copy (a bounded running sum, as window functions
    over the staging table, one join to the mirror). Each such removal supersedes a waiting
    letter of its row written before it (the newest first: a letter from before the table's
    last truncate or resync is void, and copies are equal) and leaves the staging table, so
    neither the changelog nor the bag's net change sees it. Runs before the batch lands, for a
    keyless table under a contract (letters exist there only) whose batch removes rows.

    Args:
        cur: a landing cursor in the batch's transaction.
        info: the table (keyless ``TableInfo``).
        stg: its staging table, the batch copied in.
    """
    cur.execute(take_letters_sql(info, stg), (info.source, info.name))
