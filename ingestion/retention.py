"""Changelog retention: delete ``cdc.<source>__<table>`` rows older than a duration, in batches.

The changelog is append-only and grows with history. What reads it:

- ``tidemark dlq replay`` asks whether a newer change of a dead letter's key, or a truncate of its
  table (a ``t`` row), landed (superseded);
  a waiting letter needs every changelog row after its own commit LSN, or it could overwrite
  newer state. Pruning therefore stops before the commit LSN of the table's oldest waiting dead
  letter (replay or purge such letters, `tidemark dlq`, to prune further). A keyless table's
  letter needs more: its replay counts the copies of its row in the changelog since the table's
  last reset (its last ``t`` row, or its resync snapshot) against the mirror's
  (:func:`ingestion.dead_letters.superseded_query`), so while letters of a keyless table wait,
  pruning stops before that reset (round 38: copies whose rows were pruned counted as copies the
  source had removed, and a waiting letter the source still held was superseded). After it,
  only inserts and removals of equal rows that cancel out go (round 39: the replay reads them as
  a net count per row; with steady writes the changelog grew for ever).
- dbt's ``<source>_cdc`` sources read only the newest rows (their freshness query); staging
  models read the mirrors, not the changelog.
- Live views (embedded engine) follow the mirrors through triggers, their subscribers
  ``tidemark.live_changes``; Materialize reads the source itself; reconciliation compares live
  views with marts. None of them reads old changelog rows.
- Ingestion skips a change already in the changelog by ``(_commit_lsn, _seq)``; a restart
  resumes after the checkpoint, never before it, so a pruned position is never received again.

A row is old when it landed (``_ingested_at``) longer ago than the duration. Rows land in commit
order, mostly: to delete by index ranges of ``unique (_commit_lsn, _seq)``, the boundary is the
first row in commit order that is not old, and only the rows before it go (a row landed late at an
old position, e.g. a change kept while its table was paused, keeps the rows after it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from ingestion.changelog_lock import resync_running, try_lock_for_prune
from ingestion.errors import TableNotFoundError
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.state import ensure_state
from ingestion.tables import TableInfo, find_table, known_tables, load_tables

BATCH_ROWS = 50_000
"""Changelog rows deleted per landing transaction."""

_BOUNDARY = sql.SQL("select _commit_lsn::text as lsn, _seq from {} where _ingested_at >= %s"
                    " order by _commit_lsn, _seq limit 1")
"""The first row in commit order that is not old (an index scan in commit order that stops at
it: it reads the old rows once). Ordered by the column, not by its text (``lsn``)."""

_BATCH_END = sql.SQL("select _commit_lsn::text as lsn, _seq from {} c where {} order by"
                     " c._commit_lsn, c._seq offset %s limit 1")
_DELETE = sql.SQL("delete from {} where {}")


def prune_changelog(landing_dsn: str, source: str, older_than: timedelta, *,
                    table: str | None = None, batch_rows: int = BATCH_ROWS
                    ) -> dict[str, dict[str, Any]]:
    """Delete changelog rows older than ``older_than`` of every table of a source (or one).

    Args:
        landing_dsn: landing URL.
        source: source name.
        older_than: delete rows landed longer ago than this.
        table: only this table's changelog.
        batch_rows: rows per transaction (each batch is a range of the ``(_commit_lsn, _seq)``
            index, deleted and committed on its own: ingestion keeps landing meanwhile).

    Returns:
        Table name -> ``deleted`` (rows), ``kept_for`` (None, or why pruning stopped earlier
        than the age alone allows: the oldest waiting dead letter's commit LSN).

    Raises:
        TableNotFoundError: ``table`` is not replicated for this source.
    """
    out: dict[str, dict[str, Any]] = {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source)
        tables = load_tables(conn, source)
        if table is not None:
            found = find_table(tables, table)
            if found is None:
                raise TableNotFoundError(f"Table {table!r} is not replicated for source "
                                         f"{source!r} (known: {known_tables(tables)}).")
            table = found
        cutoff = conn.execute("select clock_timestamp() - %s", (older_than,)).fetchone()[0]
        for name in sorted(tables) if table is None else [table]:
            out[name] = _prune_table(conn, tables[name], cutoff, batch_rows)
    return out


def _prune_table(conn: psycopg.Connection, info: TableInfo, cutoff: Any, batch_rows: int
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {"deleted": 0, "kept_for": None, "stopped": None}
    if not conn.execute("select to_regclass(%s) is not null",
                        (info.changelog.as_string(conn),)).fetchone()[0]:
        return out
    with conn.transaction():
        if not try_lock_for_prune(conn, info.source, info.name):
            return {**out, "stopped": resync_running(info.source, info.name)}
        bound, letter = _bounds(conn, info, cutoff)
    if bound is None:
        return out
    aged = bound  # before any letter: a keyless table's pairs go up to it
    if letter is not None and str_to_lsn(letter) <= str_to_lsn(bound[0]):
        bound = (letter, None)  # strictly before the letter's commit
        out["kept_for"] = f"a waiting dead letter at commit LSN {letter}"
    counted = None
    if letter is not None and not info.key:
        reset = _last_reset(conn, info)
        if _before(reset, bound):
            bound, counted = reset, (reset, aged)
            out["kept_for"] = (f"its last truncate or resync at commit LSN {reset[0]} (a keyless"
                               f" table: a replay of its waiting dead letters counts its rows"
                               f" from there; of those, inserts and removals of equal rows that"
                               f" cancel out went)")
    last: tuple[str, int] | None = None
    while True:
        where, params = _range(last, bound)
        with conn.transaction():  # one batch; a resync started meanwhile stops the prune
            if not try_lock_for_prune(conn, info.source, info.name):
                return {**out, "stopped": resync_running(info.source, info.name)}
            end = conn.execute(_BATCH_END.format(info.changelog, where),
                               (*params, batch_rows - 1)).fetchone()
            if end is not None:
                where = sql.SQL("{} and (_commit_lsn, _seq) <= (%s::pg_lsn, %s)").format(where)
                params = (*params, *end)
            out["deleted"] += conn.execute(_DELETE.format(info.changelog, where),
                                           params).rowcount
        if end is None:
            break
        last = end
    if counted is not None:
        with conn.transaction():
            if not try_lock_for_prune(conn, info.source, info.name):
                return {**out, "stopped": resync_running(info.source, info.name)}
            out["deleted"] += _prune_pairs(conn, info, *counted)
    return out


def _prune_pairs(conn: psycopg.Connection, info: TableInfo, reset: tuple[str, int | None],
                 bound: tuple[str, int | None]) -> int:
    """Delete, from a keyless table's changelog rows after its last reset and before ``bound``
    (the first row that is not old: before and after its waiting letters alike), inserts and
    removals of equal rows that cancel out; return how many rows went.

    A replay of the table's waiting letters reads those rows only as a net count per distinct
    row (:func:`ingestion.dead_letters.superseded_query`: ``r``/``c``/``u`` +1, ``b``/``d``
    -1, rows compared as their text, as here): per row, the oldest ``n`` of its additions and
    the oldest ``n`` of its removals go, ``n`` the smaller of the two counts, so every net count
    stays and what is kept is about one row per copy the table held at ``bound`` (a table with
    steady writes kept its whole history since the reset, round 38). One statement, in one
    transaction (a sort of the rows in the range).
    """
    after = sql.SQL("_commit_lsn >= %s::pg_lsn") if reset[1] is None else \
        sql.SQL("(_commit_lsn, _seq) > (%s::pg_lsn, %s)")
    where, params = _range(None, bound)
    row = sql.SQL("row({})::text").format(sql.SQL(", ").join(map(sql.Identifier,
                                                                  info.column_names)))
    return conn.execute(sql.SQL(
        "with c as materialized (select ctid as tid, {row} as k, _op in ('b', 'd') as gone,"
        " row_number() over (partition by {row}, _op in ('b', 'd') order by _commit_lsn, _seq)"
        " as rn from {changelog} where _op <> 't' and {after} and {where}),"
        " n as (select k, least(count(*) filter (where not gone), count(*) filter (where gone))"
        " as pairs from c group by k)"
        " delete from {changelog} where ctid = any(array(select c.tid from c join n using (k)"
        " where c.rn <= n.pairs))").format(
            row=row, changelog=info.changelog, after=after, where=where),
        (*(reset if reset[1] is not None else reset[:1]), *params)).rowcount


def _bounds(conn: psycopg.Connection, info: TableInfo, cutoff: Any
            ) -> tuple[tuple[str, int] | None, str | None]:
    """(the first row in commit order that is not old, else just after the newest row; None
    when the changelog is empty) and the commit LSN of the table's oldest waiting dead letter."""
    bound = conn.execute(_BOUNDARY.format(info.changelog), (cutoff,)).fetchone()
    letter = conn.execute(
        "select min(commit_lsn)::text from tidemark.dead_letters where source = %s and"
        " table_name = %s and replayed_at is null", (info.source, info.name)).fetchone()[0]
    if bound is None:  # every row is old: up to the newest now, not rows landing meanwhile
        bound = conn.execute(sql.SQL("select _commit_lsn::text as lsn, _seq + 1 from {} c"
                                     " order by c._commit_lsn desc, c._seq desc limit 1").format(
            info.changelog)).fetchone()
    return bound, letter


def _last_reset(conn: psycopg.Connection, info: TableInfo) -> tuple[str, int | None]:
    """Where a keyless table's replay starts counting the changelog: its last ``t`` row (kept:
    the bound is before it), else its resync snapshot's commit LSN (the snapshot's rows kept)."""
    truncate = conn.execute(sql.SQL("select _commit_lsn::text, _seq from {} c where c._op = 't'"
                                    " order by c._commit_lsn desc, c._seq desc limit 1").format(
        info.changelog)).fetchone()
    snapshot = lsn_to_str(info.snapshot_lsn or 0)
    if truncate is not None and str_to_lsn(truncate[0]) >= str_to_lsn(snapshot):
        return truncate[0], truncate[1]
    return snapshot, None


def _before(a: tuple[str, int | None], b: tuple[str, int | None]) -> bool:
    """Whether bound ``a`` is before bound ``b`` (a bound without a seq: before its LSN)."""
    if str_to_lsn(a[0]) != str_to_lsn(b[0]):
        return str_to_lsn(a[0]) < str_to_lsn(b[0])
    return (a[1] if a[1] is not None else -2**31 - 1) < (b[1] if b[1] is not None else -2**31 - 1)


def _range(last: tuple[str, int] | None, bound: tuple[str, int | None]
           ) -> tuple[sql.Composable, tuple]:
    """The condition of rows after ``last`` (None: from the start) and before ``bound`` (a
    bound without a seq: before its commit LSN)."""
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if last is not None:
        conds.append(sql.SQL("(_commit_lsn, _seq) > (%s::pg_lsn, %s)"))
        params.extend(last)
    if bound[1] is None:
        conds.append(sql.SQL("_commit_lsn < %s::pg_lsn"))
        params.append(bound[0])
    else:
        conds.append(sql.SQL("(_commit_lsn, _seq) < (%s::pg_lsn, %s)"))
        params.extend(bound)
    return sql.SQL(" and ").join(conds), tuple(params)

