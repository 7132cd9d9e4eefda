"""What :func:`ingestion.engine.catch_up` waits for: a source WAL position, and how to tell the
stream has passed it.

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

import psycopg

from ingestion.lsn import str_to_lsn


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
    def of_heartbeat(cls, lsn: int) -> CatchUpTarget:
        """The target of a heartbeat at ``lsn``."""
        return cls(lsn, heartbeat=True)

    @classmethod
    def of_wal(cls, conn: psycopg.Connection) -> CatchUpTarget:
        """The source's WAL position now (a role refused heartbeats), on an autocommit
        source connection."""
        insert, flush, delay_ms = conn.execute(
            "select pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text,"
            " (select setting::int from pg_settings where name = 'wal_writer_delay')"
        ).fetchone()
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
        flush = str_to_lsn(conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()[0])
        self.flushed = min(self.lsn, flush)
