"""Noticing a landing or source connection that went silent in the middle of a statement.

A statement sent on a connection whose messages stop getting through while the socket stays
open (something on the way still answers TCP: a proxy or load balancer whose other side died, a
NAT that dropped the mapping behind one) waits for its result for good: the stream thread or
the commit worker hangs, the session never ends, and its server process keeps the session's
locks (landing's advisory lock of the source among them) so that no new session could start.
TCP keepalives (:data:`ingestion.session_settings.KEEPALIVES`) cannot tell, since TCP answers.

:class:`LinkWatch` looks from a thread of its own, every quarter of
``TIDEMARK_STREAM_SILENCE_S``: a connection that has had a command in progress for half of it
while its server process, asked over a new connection, has been idle for half of it as well
(the server waits for the client, the client for the server) lost a message. The watch shuts
its socket down (the waiting call fails as a lost connection does, and the session is retried)
and ends its server process, which frees its locks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

import psycopg
from psycopg.pq import TransactionStatus

log = logging.getLogger("tidemark.ingestion")


class _Watched:
    def __init__(self, name: str, conn: psycopg.Connection, dsn: str) -> None:
        self.name = name
        self.conn = conn
        self.dsn = dsn
        self.pid = server_pid(conn)
        self.busy_since: float | None = None


def server_pid(conn: psycopg.Connection) -> int:
    """The server process behind ``conn``, as the server tells it.

    Not ``conn.info.backend_pid``: a pooler in session mode (pgbouncer) hands its clients a
    backend key of its own, whose process id no server process has — the watch took such a
    connection for one whose server process was gone and ended every statement that ran for
    half the limit. A transaction this opens on a connection that had none is ended again.
    """
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    row = conn.execute("select pg_backend_pid()").fetchone()
    if idle and not conn.autocommit:
        conn.rollback()
    return int(row[0])


class LinkWatch:
    """Watches a session's psycopg connections (see the module docstring).

    Args:
        limit_s: :func:`ingestion.silence.silence_limit` (0: no watch).
        source: the source's name (for the log).
    """

    def __init__(self, limit_s: float, source: str) -> None:
        self.limit_s = limit_s
        self.source = source
        self.watched: list[_Watched] = []
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def watch(self, name: str, conn: psycopg.Connection, dsn: str) -> None:
        """Watch ``conn`` (``name``: ``landing``, ``source``), reached again through ``dsn``."""
        if self.limit_s <= 0:
            return  # the watch is off: nothing to ask the server
        self.watched.append(_Watched(name, conn, dsn))
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True,
                                           name=f"tidemark-linkwatch-{self.source}")
            self.thread.start()

    def stop(self) -> None:
        """End the watch (before the connections close)."""
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(self.limit_s / 4):
            for item in self.watched:
                try:
                    self.check(item)
                except Exception as exc:  # a look that fails says nothing: look again later
                    log.debug("link watch of %s: %s", item.name, exc)

    def check(self, item: _Watched) -> bool:
        """Look at one connection; True if it was found silent and ended."""
        conn = item.conn
        if conn.closed or conn.info.transaction_status != TransactionStatus.ACTIVE:
            item.busy_since = None
            return False
        now = time.monotonic()
        if item.busy_since is None:
            item.busy_since = now
        if now - item.busy_since < self.limit_s / 2:
            return False
        with psycopg.connect(item.dsn, autocommit=True, connect_timeout=10) as probe:
            row = probe.execute(
                "select state like 'idle%%' and state_change < now() - make_interval("
                "secs => %s) from pg_stat_activity where pid = %s",
                (self.limit_s / 2, item.pid)).fetchone()
            if row is not None and not row[0]:
                return False  # the server works on it (or just finished): a slow statement
            if self.stopped.is_set() or conn.info.transaction_status != TransactionStatus.ACTIVE:
                return False
            log.warning(
                "source %s: the %s connection went silent: a statement waited %.0f s for its "
                "result while the server process %s %s (a proxy or NAT on the way lost the "
                "connection without closing it); ending it, reconnecting", self.source,
                item.name, now - item.busy_since, item.pid,
                "is gone" if row is None else "waits for the client")
            _shut(conn)
            if row is not None:
                probe.execute("select pg_terminate_backend(%s)", (item.pid,))
        return True


def _shut(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down: a call waiting on it fails as on a lost connection."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
