"""``status``: where ingestion of a source stands, as a JSON-able dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ingestion.ddl_locks import current_wait
from ingestion.dead_letter_counts import waiting_counts
from ingestion.lsn import WAL_NOW
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name, publication_name, slot_name
from ingestion.progress import read_progress
from ingestion.state import ensure_state

READ_LOCK_WAIT = "500ms"
"""How long a status read waits for a table lock (``lock_timeout``): a table ingestion's landing
transaction holds (a schema change's backfill, a resync's swap) is reported busy instead."""
BUSY_AFTER_S = 2.0
"""A landing transaction of the source open this long is reported (``busy``)."""


def status(source_dsn: str, landing_dsn: str, source: str) -> dict[str, Any]:
    """Report slot, confirmed LSN, retained WAL, lag, rate, dead letters and paused tables.

    Args:
        source_dsn: any source URL that may read ``pg_replication_slots``.
        landing_dsn: landing URL.
        source: source name.

    Returns:
        A dict with keys ``source``, ``slot``, ``slot_exists``, ``slot_active``,
        ``confirmed_flush_lsn``, ``current_wal_lsn``, ``retained_wal_bytes``, ``lag_bytes``,
        ``lag_seconds`` (source commit → landing commit of the last applied transaction),
        ``seconds_since_last_apply``, ``checkpoint_lsn``, ``rows_applied``, ``rows_per_s``,
        ``dead_letters`` (not yet replayed), ``duplicate_events``, ``paused_tables`` (each
        with ``table``, ``paused_at``, ``paused_lsn``, ``reason`` and ``automatic``: Tidemark
        copies the table again by itself, nobody needs to act), ``snapshot`` (the
        latest snapshot: state running/interrupted/failed/done, tables, rows, rows/s, ETA; None
        before the first), ``lock_wait``: the DDL the stream waits to apply, who holds the
        lock and what to do (:func:`ingestion.ddl_locks.current_wait`), or None, and ``busy``:
        the landing transaction ingestion has held open for a while (:func:`landing_busy`), or
        None. Reads only state tables, which ingestion never locks exclusively.
    """
    slot = slot_name(source)
    out: dict[str, Any] = {"source": source, "slot": slot,
                           "publication": publication_name(source)}
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("select s.active, s.confirmed_flush_lsn::text, {now}::text,"
                    " pg_wal_lsn_diff({now}, s.restart_lsn)::bigint,"
                    " pg_wal_lsn_diff({now}, s.confirmed_flush_lsn)::bigint,"
                    " s.wal_status from (select 1) one left join pg_replication_slots s"
                    " on s.slot_name = %s").format(now=WAL_NOW), (slot,)).fetchone()
    out.update(slot_exists=row[1] is not None, slot_active=bool(row[0]),
               confirmed_flush_lsn=row[1], current_wal_lsn=row[2], retained_wal_bytes=row[3],
               lag_bytes=row[4], wal_status=row[5])
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source, read_only=True)
        ck = conn.execute(
            "select lsn::text, snapshot_lsn::text, last_commit_at, last_applied_at,"
            " last_lag_ms, rows_applied, rows_per_s,"
            " extract(epoch from clock_timestamp() - last_applied_at)"
            " from tidemark.checkpoints where source = %s", (source,)).fetchone()
        dead = sum(waiting_counts(conn, source).values())
        dups = conn.execute("select coalesce(sum(dropped), 0) from tidemark.duplicate_events"
                            " where source = %s", (source,)).fetchone()[0]
        paused = [{"table": r[0], "paused_at": r[1], "reason": r[2], "paused_lsn": r[3],
                   "automatic": r[4]}
                  for r in conn.execute(
            "select table_name, paused_at, paused_reason, paused_lsn::text, auto_resync from"
            " tidemark.replicated_tables where source = %s and paused_at is not null"
            " order by table_name", (source,))]
        tables = conn.execute("select count(*) from tidemark.replicated_tables where source = %s",
                              (source,)).fetchone()[0]
        snapshot = read_progress(conn, source)
        lock_wait = current_wait(conn, source)
        busy = landing_busy(conn, source, BUSY_AFTER_S,
                            snapshot=snapshot if snapshot and snapshot["state"] == "running"
                            else None)
    if ck is None:
        out.update(checkpoint_lsn=None, snapshot_lsn=None, last_commit_at=None,
                   last_applied_at=None, lag_seconds=None, seconds_since_last_apply=None,
                   rows_applied=0, rows_per_s=None)
    else:
        out.update(checkpoint_lsn=ck[0], snapshot_lsn=ck[1], last_commit_at=ck[2],
                   last_applied_at=ck[3],
                   lag_seconds=None if ck[4] is None else round(float(ck[4]) / 1000, 3),
                   seconds_since_last_apply=None if ck[7] is None else round(float(ck[7]), 3),
                   rows_applied=ck[5],
                   rows_per_s=None if ck[6] is None else round(float(ck[6]), 1))
    out.update(tables=tables, dead_letters=dead, duplicate_events=int(dups),
               paused_tables=paused, snapshot=snapshot, lock_wait=lock_wait, busy=busy)
    for key in ("last_commit_at", "last_applied_at"):
        if out.get(key) is not None:
            out[key] = out[key].isoformat()
    for item in paused:
        item["paused_at"] = item["paused_at"].isoformat()
    return out


def table_status(source_dsn: str, landing_dsn: str, source: str,
                 tables: Sequence[tuple[str, str | None]],
                 measure_after_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Where ingestion of each table stands (two short read-only connections).

    Measuring ``pending_s`` reads ``max(loaded_at)`` of each mirror and the source rows newer
    than it: without an index on ``loaded_at`` — the demo has none, a user's database may not —
    both are scans of tables that grow with history, the source one in the user's database. They
    run only when they can change a verdict: changes land in source commit order, so when the
    last landed source commit is under ``measure_after_s`` old, every change committed before it
    has landed and none has waited longer than that (a source transaction's own duration aside).
    The running stack lands a heartbeat at least every ``TIDEMARK_HEARTBEAT_S`` on an idle
    source, so a lag check with ``measure_after_s`` = its warning threshold scans nothing while
    ingestion keeps up, and measures exactly once it falls behind or stops.

    Args:
        source_dsn: source URL that may SELECT the replicated tables (``public.<table>``).
        landing_dsn: landing URL.
        source: source name.
        tables: ``(table, loaded_at column or None)`` pairs.
        measure_after_s: measure ``pending_s`` only when the last landed source commit is at
            least this many seconds old (None: always).

    Returns:
        Table name -> ``lsn`` (newest applied commit LSN in its changelog, or None),
        ``dead_letters`` (not replayed), ``paused_reason`` (or None), ``resyncing`` (the pause
        is an automatic resync: nobody needs to act) and ``pending_s``: how
        long the oldest source change landing does not have yet has been waiting, judged by
        the ``loaded_at`` column (None without one, or when not measured), and ``busy``: None,
        or why the table could not be read (``busy: ... since ...``): each read waits at most
        :data:`READ_LOCK_WAIT` for a lock, so a landing transaction holding the mirror or the
        changelog (a schema change's backfill: 82 s at 10 M rows) leaves ``lsn`` and
        ``pending_s`` None instead of making the caller wait for it.
    """
    out: dict[str, dict[str, Any]] = {}
    newest: dict[str, Any] = {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source, read_only=True)
        since = conn.execute(
            "select extract(epoch from clock_timestamp() - last_commit_at)::float8"
            " from tidemark.checkpoints where source = %s", (source,)).fetchone()
        measure = (measure_after_s is None or since is None or since[0] is None
                   or since[0] >= measure_after_s)
        dead = waiting_counts(conn, source)
        paused = {r[0]: (r[1], r[2]) for r in conn.execute(
            "select table_name, paused_reason, auto_resync from tidemark.replicated_tables"
            " where source = %s and paused_at is not null", (source,))}
        conn.execute("select set_config('lock_timeout', %s, false)", (READ_LOCK_WAIT,))
        busy = None
        for name, loaded_at in tables:
            changelog = sql.Identifier(CHANGELOG_SCHEMA, changelog_table_name(source, name))
            mirror = sql.Identifier(source, name)
            lsn, locked = None, False
            try:
                if _exists(conn, changelog):
                    lsn = conn.execute(sql.SQL("select max(_commit_lsn)::text from {}").format(
                        changelog)).fetchone()[0]
                if measure and loaded_at and _exists(conn, mirror):
                    newest[name] = conn.execute(sql.SQL("select max({}) from {}").format(
                        sql.Identifier(loaded_at), mirror)).fetchone()[0]
            except psycopg.errors.LockNotAvailable:
                locked = True
                busy = busy or landing_busy(conn, source, 0.0)
            out[name] = {"lsn": lsn, "dead_letters": int(dead.get(name, 0)),
                         "paused_reason": paused.get(name, (None,))[0],
                         "resyncing": paused.get(name, (None, False))[1], "pending_s": None,
                         "busy": _busy_text(name, busy) if locked else None}
    if not measure:
        return out
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("select set_config('lock_timeout', %s, false)", (READ_LOCK_WAIT,))
        for name, loaded_at in tables:
            table = sql.Identifier("public", name)
            if not loaded_at or out[name]["busy"] or not _exists(conn, table):
                continue  # a mirror not read: its newest row is unknown, nothing is judged
            column = sql.Identifier(loaded_at)
            landed = newest.get(name)
            try:
                waited = conn.execute(sql.SQL(
                "select coalesce(extract(epoch from clock_timestamp() - min({c})), 0) from {t}"
                    " where {c} > %s or %s::timestamptz is null").format(c=column, t=table),
                    (landed, landed)).fetchone()[0]
            except psycopg.errors.LockNotAvailable:  # a DDL of the source's own holds it
                out[name]["busy"] = (f"busy: source table public.{name} is locked by a "
                                     f"session of the source; its pending lag is not measured")
                continue
            out[name]["pending_s"] = max(0.0, float(waited))
    return out


def landing_busy(conn: psycopg.Connection, source: str, after_s: float = BUSY_AFTER_S,
                 snapshot: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The landing transaction ingestion of ``source`` holds open, if open for ``after_s``.

    The applier holds the advisory lock ``tidemark:ingest:<source>`` for each landing
    transaction (:mod:`ingestion.applier`); its session says since when and what it runs, and
    ``pg_locks`` which tables it holds exclusively (readers of those wait until it commits).

    Args:
        conn: landing connection.
        source: source name.
        after_s: report a transaction open at least this long.
        snapshot: the source's running snapshot (:func:`ingestion.progress.read_progress`), if
            one runs: the transaction is then the snapshot's, and the message says so (it said
            "a schema change's backfill or a large source transaction" for the 71 s of a
            10 M-row first snapshot).

    Returns:
        None, or ``pid``, ``since`` (ISO time the transaction began, None when the role may not
        see it), ``seconds``, ``doing`` (its statement's first 100 characters), ``tables``
        (held ACCESS EXCLUSIVE) and ``message`` (``busy: ... since ...``).
    """
    row = conn.execute(
        "select a.pid, a.xact_start, extract(epoch from clock_timestamp() - a.xact_start),"
        " left(regexp_replace(a.query, '\\s+', ' ', 'g'), 100),"
        " array(select x.relation::regclass::text from pg_locks x where x.pid = a.pid and"
        "  x.locktype = 'relation' and x.mode = 'AccessExclusiveLock' and x.granted"
        "  and x.relation::regclass::text not like 'pg\\_%%' order by 1)"
        " from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 1"
        " and l.database = (select oid from pg_database where datname = current_database())"
        " and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(%s)::bigint"
        " and a.pid <> pg_backend_pid()", (f"tidemark:ingest:{source}",)).fetchone()
    if row is None:
        return None
    pid, since, seconds, doing, tables = row
    if seconds is not None and seconds < after_s:
        return None
    item = {"pid": pid, "since": None if since is None else since.isoformat(),
            "seconds": None if seconds is None else round(float(seconds), 1),
            "doing": doing, "tables": list(tables)}
    held = f", holding {', '.join(tables)} exclusively" if tables else ""
    when = "" if since is None else f" since {since:%Y-%m-%d %H:%M:%S %Z} ({item['seconds']} s)"
    cause = ("a schema change's backfill or a large source transaction" if snapshot is None else
             f"its snapshot: {snapshot['rows']:,} rows of {snapshot['tables_total']} tables so "
             f"far, progress under snapshot")
    item["message"] = (f"busy: ingestion of {source} is in one landing transaction{when}{held} "
                       f"({cause}). What it lands shows once it commits; reads of those tables "
                       f"wait until then.")
    return item


def _busy_text(table: str, busy: dict[str, Any] | None) -> str:
    """What a status read of ``table`` that met a lock says."""
    if busy is None:
        return f"busy: {table} is locked by another landing session; its figures are not read"
    since = f" since {busy['since']}" if busy["since"] else ""
    return (f"busy: {table} is held by ingestion's landing transaction{since}; its applied LSN "
            f"and pending lag are not read")


def _exists(conn: psycopg.Connection, relation: sql.Identifier) -> bool:
    return conn.execute("select to_regclass(%s) is not null",
                        (relation.as_string(conn),)).fetchone()[0]


def slots_retaining(source_dsn: str, min_bytes: int) -> list[dict[str, Any]]:
    """Replication slots of the source's server holding back at least ``min_bytes`` of WAL.

    Every slot of the server counts, not only Tidemark's: a slot nobody reads any more holds
    WAL as surely as a stopped ingestion.

    Args:
        source_dsn: any URL of the source server (``pg_replication_slots`` is readable by all).
        min_bytes: report slots retaining at least this much WAL.

    Returns:
        ``slot``, ``database``, ``active`` and ``retained_wal_bytes`` (``pg_wal_lsn_diff`` of
        the current WAL position and the slot's ``restart_lsn``), most first.
    """
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("select slot_name::text, database::text, active, retained from (select"
                    " slot_name, database, active, pg_wal_lsn_diff({now}, restart_lsn)::bigint"
                    " as retained from pg_replication_slots where restart_lsn is not null) s"
                    " where retained >= %s order by retained desc, slot_name").format(now=WAL_NOW),
            (min_bytes,)).fetchall()
    return [{"slot": r[0], "database": r[1], "active": r[2], "retained_wal_bytes": r[3]}
            for r in rows]
