"""Set-based SQL that lands one staged batch: unchanged TOAST values from the mirror, duplicate
outbox events, changelog rows, and the mirror's net change.

Every statement works on whole batches; none runs a correlated scan per staged row: lookups into
the mirror go through its primary key (or, for the outbox, its idempotency-key index), and
lookups inside the batch are window functions or hash joins over the staging table.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.batch import CHANGELOG_FIELDS, STAGING_META, Batch, changelog_rows
from ingestion.lsn import lsn_to_str
from ingestion.tables import TableInfo

BIG_BATCH = 2_000
"""Lines from which a batch is worth an extra round trip to skip per-row conflict checks."""


EMPTIED_AT_COMMIT = 8
"""Staging tables of a session made ``on commit delete rows``: the first ones it uses."""


def create_staging(conn: psycopg.Connection, info: TableInfo, ident: sql.Identifier,
                   emptied_at_commit: bool = True) -> None:
    """Create the session-local staging table of ``info``.

    ``emptied_at_commit``: ``on commit delete rows`` (PostgreSQL truncates it in place at each
    commit). But PostgreSQL then empties *every* such table of the session at each commit that
    touched any temporary table, each under an ACCESS EXCLUSIVE lock: with writes spread over
    900 tables, ~420 ms a commit, ~950 ms at 2,000, and ~3 locks per table written to since
    the session began in each commit ("out of shared memory" on a landing of 64
    ``max_locks_per_transaction``). So only the first :data:`EMPTIED_AT_COMMIT` tables of a
    session are made so (a few hot tables keep the cheapest path); the others keep their rows
    after a commit and the applier truncates them before their next batch
    (``Applier._stage_batch``), a new file each time (~1-2 ms a batch more).
    """
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type_sql))
        for c in info.columns)
    conn.execute(sql.SQL("create temp table {} ({}, {}){}").format(
        ident, cols, sql.SQL(STAGING_META),
        sql.SQL(" on commit delete rows" if emptied_at_commit else "")))


def _columns(info: TableInfo, alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in info.column_names)


def _key_match(info: TableInfo) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier("m", k), sql.Identifier("s", k))
        for k in info.key)


def fill_unchanged(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier,
                   columns: set[str]) -> None:
    """Fill unchanged TOAST values nothing in the batch resolved from the mirror row they belong
    to: the row under ``_tidemark_origin``, the key the row had before this batch (not its new
    key when an update changed the key)."""
    if not info.key:
        return
    types = {c.name: c.type_sql for c in info.columns}
    sets = sql.SQL(", ").join(
        sql.SQL("{} = case when s._tidemark_unchanged @> array[{}] then m.{} else s.{} end"
                ).format(
            sql.Identifier(c), sql.Literal(c), sql.Identifier(c), sql.Identifier(c))
        for c in sorted(columns))
    origin = sql.SQL(" and ").join(
        sql.SQL("m.{} = (s._tidemark_origin[{}])::{}").format(sql.Identifier(k),
                                                               sql.Literal(i + 1),
                                                     sql.SQL(types[k]))
        for i, k in enumerate(info.key))
    cur.execute(sql.SQL("update {} s set {} from {} m where s._tidemark_unchanged is not null"
                        " and {}")
                .format(stg, sets, info.mirror, origin))


def duplicate_events_sql(info: TableInfo, stg: sql.Identifier, idem: str) -> sql.Composed:
    """The statement of :func:`drop_duplicate_events` (returns the count of rows deleted)."""
    col = sql.Identifier(idem)
    return sql.SQL(
        "with cand as materialized (select ctid as tid, {col} as e, row_number() over"
        " (partition by {col} order by _commit_lsn, _seq) as n from {stg} where _op in"
        " ('r', 'c') and {col} is not null),"
        " dup as (select tid from cand where n > 1 union all select c.tid from cand c where"
        " c.n = 1 and exists (select 1 from {mirror} m where m.{col} = c.e)),"
        " gone as (delete from {stg} where ctid = any(array(select tid from dup)) returning 1)"
        " select count(*) from gone").format(col=col, stg=stg, mirror=info.mirror)


def drop_duplicate_events(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier,
                          idem: str) -> int:
    """Delete staged inserts whose idempotency key is already in the mirror or earlier in the
    batch; return how many.

    Within the batch, ``row_number()`` over the key keeps the first copy; against the mirror,
    a semi-join probes its index on the key (or hashes it). Both are linear in the batch: no
    correlated scan of the staging table.
    """
    cur.execute(duplicate_events_sql(info, stg, idem))
    return cur.fetchone()[0]


def _changelog_sql(info: TableInfo, stg: sql.Identifier, skip_known: bool) -> sql.Composed:
    return sql.SQL(
        "insert into {} ({}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
        " select {}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid from {}{}"
    ).format(info.changelog, _columns(info), _columns(info), stg,
             sql.SQL(" on conflict do nothing" if skip_known else ""))


def insert_changelog(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier,
                     batch: Batch) -> None:
    """Every staged line into the changelog; a change already there is skipped.

    The changelog's unique key ``(_commit_lsn, _seq)`` keeps a replayed change out. Checking it
    row by row (``ON CONFLICT``) costs a speculative insertion per row, so one index probe first
    asks whether the changelog has any row of the batch's commit range: usually not (a landing
    transaction commits its changes with the checkpoint), and the plain insert runs.
    """
    cur.execute(_changelog_sql(info, stg, _overlaps(cur, info, batch)))


def land_appends(cur: psycopg.Cursor, info: TableInfo, batch: Batch) -> bool:
    """Land a batch of new rows only (:meth:`ingestion.batch.Batch.appends_only`) without a
    staging table: its lines COPY straight into the changelog, and the mirror's new rows are
    read back from there (through the changelog's ``(_commit_lsn, _seq)`` index).

    Returns:
        False, having written nothing, when the changelog already has rows of the batch's
        commit range (a replay, or an earlier part of the same transactions): the caller then
        stages the batch, whose statements skip what is known.
    """
    rows = changelog_rows(batch.lines)
    if rows is None or _overlaps(cur, info, batch):
        return False
    fields = sql.SQL(", ").join(map(sql.Identifier, [*info.column_names, *CHANGELOG_FIELDS]))
    with cur.copy(sql.SQL("copy {} ({}) from stdin").format(info.changelog, fields)) as copy:
        copy.write(rows)
    if batch.changelog_only:
        return True
    window = (lsn_to_str(batch.first_commit or 0), lsn_to_str(batch.last_commit))
    mirror = appended_rows_sql(info)
    if not info.key:
        cur.execute(mirror, window)
        return True
    keys = sql.SQL(", ").join(map(sql.Identifier, info.key))
    try:
        with cur.connection.transaction():
            cur.execute(mirror + sql.SQL(" order by {}").format(keys), window)
    except psycopg.errors.UniqueViolation:
        # A key the mirror has already (a replay after a resync): take the last image.
        cur.execute(mirror + sql.SQL(" order by {} on conflict ({}) {}").format(
            keys, keys, conflict_action(info)), window)
    return True


def conflict_action(info: TableInfo) -> sql.Composable:
    """The ``ON CONFLICT`` action that puts a row's last image over the mirror's row of its key:
    every non-key column from the image, and NULL in the columns dropped on the source that
    the mirror keeps (``info.retired``: a row written after the drop has no value there)."""
    sets = [sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in info.column_names if c not in info.key]
    sets += [sql.SQL("{} = null").format(sql.Identifier(c.name)) for c in info.retired]
    return sql.SQL("do update set {}").format(sql.SQL(", ").join(sets)) if sets \
        else sql.SQL("do nothing")


def appended_rows_sql(info: TableInfo) -> sql.Composed:
    """The mirror's insert of :func:`land_appends`: the changelog's new rows of a commit range
    (two parameters), read through its ``(_commit_lsn, _seq)`` index."""
    return sql.SQL("insert into {} ({}) select {} from {} where _commit_lsn between"
                   " %s::pg_lsn and %s::pg_lsn and _op in ('r', 'c')").format(
        info.mirror, _columns(info), _columns(info), info.changelog)


def _overlaps(cur: psycopg.Cursor, info: TableInfo, batch: Batch) -> bool:
    """Whether the changelog has a row of the batch's commit range (one index probe)."""
    return cur.execute(sql.SQL(
        "select exists (select 1 from {} where _commit_lsn between %s::pg_lsn and %s::pg_lsn)"
    ).format(info.changelog), (lsn_to_str(batch.first_commit or 0),
                               lsn_to_str(batch.last_commit))).fetchone()[0]


def _delete_sql(info: TableInfo, stg: sql.Identifier) -> sql.Composed:
    return sql.SQL("delete from {} m using {} s where s._tidemark_last and s._op in ('b', 'd')"
                   " and {}"
                   ).format(info.mirror, stg, _key_match(info))


def _put_sql(info: TableInfo, stg: sql.Identifier, ops: str, upsert: bool) -> sql.Composed:
    """Insert the last image of keys whose last line is one of ``ops``, in key order (index
    and heap pages visited in order); as an upsert if ``upsert``."""
    keys = sql.SQL(", ").join(map(sql.Identifier, info.key))
    conflict = sql.SQL("")
    if upsert:
        conflict = sql.SQL(" on conflict ({}) {}").format(keys, conflict_action(info))
    return sql.SQL(
        "insert into {} ({}) select {} from {} where _tidemark_last and _op in ({})"
        " order by {}{}"
    ).format(info.mirror, _columns(info), _columns(info), stg, sql.SQL(ops), keys, conflict)


def merge_keyed(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier, batch: Batch
                ) -> None:
    """Apply the last line of each key to the mirror: delete for ``b``/``d``, insert for
    ``r``/``c``, upsert for ``u``.

    Inserts are plain (an upsert's speculative insertion costs about twice as much) unless an
    insert follows a delete of its key in the same batch; a key found in the mirror anyway (a
    replay) makes them upserts, from a savepoint. A batch without inserts (only updates, say)
    skips their statement and its savepoint: three round trips.
    """
    if batch.removes:
        cur.execute(_delete_sql(info, stg))
    if batch.inserts and batch.reinserts:
        cur.execute(_put_sql(info, stg, "'r', 'c'", upsert=True))
    elif batch.inserts:
        try:
            with cur.connection.transaction():
                cur.execute(_put_sql(info, stg, "'r', 'c'", upsert=False))
        except psycopg.errors.UniqueViolation:
            cur.execute(_put_sql(info, stg, "'r', 'c'", upsert=True))
    if batch.updates:
        cur.execute(_put_sql(info, stg, "'u'", upsert=True))


def land_batch(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier, batch: Batch,
               pipelined: bool = False) -> None:
    """Changelog rows and the mirror's net change of a staged batch.

    A small batch costs its round trips more than its rows: its statements (conflicts checked
    per row, one upsert for every image) go in one request, or one by one into the caller's
    pipeline if ``pipelined`` (a pipeline takes one statement per query). A large one checks
    conflicts once (:func:`insert_changelog`) and inserts without upserting
    (:func:`merge_keyed`).
    """
    if len(batch.lines) >= BIG_BATCH:
        assert not pipelined, "a large batch reads results between its statements"
        insert_changelog(cur, info, stg, batch)
        if batch.changelog_only:
            return
        if info.key:
            merge_keyed(cur, info, stg, batch)
        else:
            merge_bag(cur, info, stg, batch.removes)
        return
    statements = [_changelog_sql(info, stg, skip_known=True)]
    if not batch.changelog_only:
        if not info.key:
            statements.append(bag_sql(info, stg, batch.removes))
        else:
            if batch.removes:
                statements.append(_delete_sql(info, stg))
            statements.append(_put_sql(info, stg, "'r', 'c', 'u'", upsert=True))
    if pipelined:
        for statement in statements:
            cur.execute(statement)
    else:
        cur.execute(sql.SQL("; ").join(statements))


def bag_sql(info: TableInfo, stg: sql.Identifier, removes: bool) -> sql.Composed:
    """The statement of :func:`merge_bag`."""
    if not removes:
        return sql.SQL("insert into {} ({}) select {} from {} where _op in ('r', 'c', 'u')"
                       ).format(info.mirror, _columns(info), _columns(info), stg)
    row_s = sql.SQL("row({})::text").format(_columns(info))
    row_m = sql.SQL("row({})::text").format(_columns(info, "mm"))
    return sql.SQL(
        "with s as materialized (select {cols}, {row_s} as _tidemark_row, ctid as"
        " _tidemark_ctid, case when _op in ('b', 'd') then -1 else 1 end as _tidemark_sign"
        " from {stg}),"
        " net as materialized (select _tidemark_row, sum(_tidemark_sign) as n,"
        " min(_tidemark_ctid) as o from s group by _tidemark_row"
        " having sum(_tidemark_sign) <> 0),"
        " gone as (delete from {mirror} where ctid = any(array(select v.tid from (select"
        " mm.ctid as tid, row_number() over (partition by net._tidemark_row) as rn,"
        " -net.n as want from {mirror} mm join net on net.n < 0 and {row_m} ="
        " net._tidemark_row) v where v.rn <= v.want)))"
        " insert into {mirror} ({cols}) select {s_cols} from net join s on s._tidemark_ctid = net.o"
        " cross join lateral generate_series(1, net.n) where net.n > 0"
    ).format(cols=_columns(info), row_s=row_s, stg=stg, mirror=info.mirror, row_m=row_m,
             s_cols=_columns(info, "s"))


def merge_bag(cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier, removes: bool
              ) -> None:
    """Apply a keyless table's batch with bag semantics.

    Rows are compared by their text form (every type has one, not every type has equality).
    The batch nets out per distinct row (+1 for ``r``/``c``/``u``, -1 for ``b``/``d``); a
    negative count removes exactly that many equal mirror rows, a positive one adds copies.
    """
    cur.execute(bag_sql(info, stg, removes))
