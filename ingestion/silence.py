"""Noticing a replication stream whose connection went silent without closing.

A NAT or firewall that forgets an idle connection, or a cable pulled, sends no FIN or RST: the
socket stays open, ``read_message`` returns nothing, feedback still "sends" (into the void), and
a session would wait for good while ``tidemark status`` says it is streaming. TCP keepalives do
not help where something on the way still answers them (a proxy), and libpq's default is to
probe after two hours.

:class:`SilenceWatch` asks the walsender for an answer (a standby status update with
``reply`` set, answered at once with a keepalive) once nothing came from the source for half of
``TIDEMARK_STREAM_SILENCE_S`` (default 60 s), and ends the session when that answer does not
come within the other half: the session is retried, and the next one ends the stale walsender
that still holds the slot (:func:`end_stale_walsender`: the server would keep it until its
``wal_sender_timeout``, or for good when that is 0). Time spent away from the stream (a slow
landing commit, a lock wait) does not count: the question is only asked while the stream is
read.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import psycopg

from ingestion.errors import SetupError, StreamSilentError

log = logging.getLogger("tidemark.ingestion")

SILENCE_ENV = "TIDEMARK_STREAM_SILENCE_S"
DEFAULT_SILENCE_S = 60.0


def silence_limit() -> float:
    """Seconds without a message from the source before its stream is taken for lost:
    ``TIDEMARK_STREAM_SILENCE_S`` (0 turns the watch off), default :data:`DEFAULT_SILENCE_S`.

    Raises:
        SetupError: the variable is not a number of seconds (at least 2, or 0).
    """
    raw = os.environ.get(SILENCE_ENV, "").strip()
    if not raw:
        return DEFAULT_SILENCE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value != 0 and not 2 <= value < float("inf"):
        raise SetupError(f"{SILENCE_ENV}={raw!r} is not a number of seconds of at least 2 (or "
                         f"0, never): set it to how long ingestion waits for a word from the "
                         f"source before it reconnects (default {DEFAULT_SILENCE_S:.0f}).")
    return value


class SilenceWatch:
    """The last time anything came from the source on one replication stream, and the question
    asked when that is long ago (see the module docstring).

    Args:
        cur: the session's psycopg2 ``ReplicationCursor`` (replication started).
        walsender_pid: the source server process of the stream.
        limit_s: :func:`silence_limit`.
    """

    def __init__(self, cur: Any, walsender_pid: int | None, limit_s: float) -> None:
        self.cur = cur
        self.walsender_pid = walsender_pid
        self.limit_s = limit_s
        self.heard = time.monotonic()
        self.asked: float | None = None
        self.io = cur.io_timestamp
        self.wal_end = cur.wal_end

    def check(self, last_message_at: float, send: Any) -> None:
        """Called when the stream has nothing to read: note what came since the last call, ask
        for an answer or give up.

        Args:
            last_message_at: ``time.monotonic()`` of the session's last decoded message.
            send: sends a standby status update asking for a reply (under the session's lock).

        Raises:
            StreamSilentError: the question went unanswered for half the limit.
        """
        now = time.monotonic()
        cur = self.cur
        self.heard = max(self.heard, last_message_at)
        io = cur.io_timestamp
        # psycopg2 stamps io_timestamp at every read and at every feedback it sends: a stamp
        # later than the last feedback is something read (a keepalive included)
        if io != self.io and io > cur.feedback_timestamp:
            self.heard = now
        self.io = io
        if cur.wal_end != self.wal_end:
            self.wal_end = cur.wal_end
            self.heard = now
        if self.asked is not None and self.heard >= self.asked:
            self.asked = None
        if self.limit_s <= 0:
            return
        if self.asked is None:
            if now - self.heard >= self.limit_s / 2:
                send()
                self.asked = now
            return
        if now - self.asked >= self.limit_s / 2:
            raise StreamSilentError(
                f"no message from the source for {now - self.heard:.0f} s on the replication "
                f"stream, not even the answer to a keepalive: its connection went silent "
                f"without closing (a NAT or firewall idle timeout, a network cut). Reconnecting; "
                f"{SILENCE_ENV} (now {self.limit_s:g}) sets how long ingestion waits",
                self.walsender_pid)


def end_stale_walsender(dsn: str, slot: str, pid: int | None) -> None:
    """End the walsender of a silent stream if it still holds ``slot`` (its server keeps it
    until ``wal_sender_timeout``, or for good when that is 0, and the slot stays in use).

    Only that process is ended, and only while it holds this slot: a walsender of another
    ingestion is never touched. A failure (no right to signal it) is logged; the slot wait
    that follows then says who holds the slot.

    Args:
        dsn: a source URL (the stream's role may end its own processes).
        slot: the replication slot's name.
        pid: the server process of the silent stream, or None (nothing to do).
    """
    if pid is None:
        return
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "select pg_terminate_backend(active_pid) from pg_replication_slots"
                " where slot_name = %s and active_pid = %s", (slot, pid)).fetchone()
    except psycopg.Error as exc:
        log.warning("could not end server process %s of the silent stream: %s", pid, exc)
        return
    if row is not None:
        log.info("ended server process %s, the walsender of the silent stream, which still "
                 "held slot %s", pid, slot)
