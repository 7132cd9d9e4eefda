"""What :func:`ingestion.engine.catch_up` waits for: a source WAL position, and how to tell the
stream has passed it.

The target is taken when the call starts, before the slot and the snapshot: every transaction
committed before the call is then either in the snapshot (whose consistent point is past the
target, so a first catch_up returns as soon as the snapshot commits) or streamed. Taken after
the snapshot instead, it would make the stream decode everything written to the server
meanwhile — when landing shares the source's server (the default ``tidemark up``), the snapshot's
own landing WAL, hundreds of MB — before the call could return.

With heartbeat rights the target is a heartbeat's LSN: a transactional logical message, so a
streamed commit — the heartbeat's own — moves the checkpoint past it even on an idle source.

Without them (EXECUTE on ``pg_logical_emit_message`` not granted) the target is the source's
WAL insert position when the target is taken: past the commit record of every transaction
committed before. On an idle source no streamed commit reaches it (the WAL ends with records
that are not commits), so the stream's decoded position tells instead: the walsender sends a
transaction when it decodes its commit record, before the position its messages and keepalives
report (``wal_end``) moves past that record. The walsender decodes flushed WAL only, and the
insert position can stay unflushed for seconds behind records other than commits; but
PostgreSQL flushes every commit, asynchronous ones included, within three ``wal_writer_delay``
— so once that long has passed, the flushed position read then is a target as good, and one the
stream reaches promptly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ingestion.lsn import str_to_lsn, wal_position
from ingestion.names import HEARTBEAT_PREFIX


def emit_heartbeat(dsn: str) -> int | None:
    """Write a transactional logical message on the source; return its LSN, None if refused
    (a role without the right, or a standby: it writes no WAL).

    The message travels through the slot like a transaction, so an idle source still advances
    the checkpoint and the slot's confirmed LSN (and the WAL it retains).
    """
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            # A standby writes no WAL ("cannot assign TransactionIds during recovery"):
            # heartbeats are its primary's to write (``--admin-url``), and reach it by WAL.
            # Asked in the same statement, so a standby answers NULL instead of logging an
            # error at every heartbeat; a promoted standby starts writing them.
            row = conn.execute("select case when pg_is_in_recovery() then null"
                               " else pg_logical_emit_message(true, %s, %s)::text end",
                               (HEARTBEAT_PREFIX, datetime.now().isoformat())).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return None if row[0] is None else str_to_lsn(row[0])


@dataclass
class CatchUpTarget:
    """The WAL position a catch_up must reach.

    Attributes:
        lsn: a heartbeat's LSN, or the source's WAL insert position.
        heartbeat: whether ``lsn`` is a heartbeat's.
        settle_at: (no heartbeat) ``time.monotonic()`` after which every commit made before
            the target was taken is flushed.
        flushed: (no heartbeat) the source's flushed position, once it covers those commits.
    """

    lsn: int
    heartbeat: bool = False
    settle_at: float = 0.0
    flushed: int | None = None

    @classmethod
    def take(cls, source_dsn: str, setup_dsn: str | None = None) -> CatchUpTarget:
        """A heartbeat when the setup role (else the source role) may emit one, else the
        source's WAL position (:meth:`of_wal`)."""
        beat = emit_heartbeat(setup_dsn or source_dsn)
        if beat is not None:
            return cls(beat, heartbeat=True)
        with psycopg.connect(source_dsn, autocommit=True, connect_timeout=5) as conn:
            return cls.of_wal(conn)

    @classmethod
    def of_wal(cls, conn: psycopg.Connection) -> CatchUpTarget:
        """The source's WAL position now (a role refused heartbeats), on an autocommit
        source connection."""
        insert, flush, delay_ms = conn.execute(sql.SQL(
            "select {}::text, {}::text,"
            " (select setting::int from pg_settings where name = 'wal_writer_delay')"
        ).format(wal_position("insert"), wal_position("flush"))).fetchone()
        target = cls(str_to_lsn(insert), settle_at=time.monotonic() + 3 * delay_ms / 1000)
        if str_to_lsn(flush) >= target.lsn:  # everything inserted is flushed already
            target.flushed = target.lsn
        return target

    def reached(self, ckpt: int, wal_end: int) -> bool:
        """Whether everything committed before the target is in landing.

        Args:
            ckpt: the landing checkpoint (checked between transactions: nothing half-read,
                pending or being committed).
            wal_end: the stream's decoded position (``ReplicationCursor.wal_end``).
        """
        if ckpt >= self.lsn:
            return True
        if self.heartbeat:
            return False
        return wal_end >= self.lsn or (self.flushed is not None and wal_end >= self.flushed)

    def settle(self, conn: psycopg.Connection) -> None:
        """(No heartbeat) once the asynchronous commits made before the target are flushed,
        take the flushed position as the target the stream must pass (read once)."""
        if self.heartbeat or self.flushed is not None or time.monotonic() < self.settle_at:
            return
        flush = str_to_lsn(conn.execute(
            sql.SQL("select {}::text").format(wal_position("flush"))).fetchone()[0])
        self.flushed = min(self.lsn, flush)
