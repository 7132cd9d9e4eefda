"""A standby as the source: PostgreSQL 16 and later decode logical changes on a standby.

The stream and its slot are the standby's (the source URL); the publication and the heartbeats
are written on its primary (``--admin-url``) and reach the standby by WAL, a moment later. What
ingestion writes on the primary must be replayed on the standby before the standby's catalog
is read for it (:func:`await_replay`): a publication read too early lists no table, and a
snapshot would copy nothing. A slot on a standby starts decoding at the next running-
transactions record of the primary, which the primary logs every 15 s only while it writes:
on an idle primary the creation would wait for good. While a slot is created on a standby,
:func:`nudging` asks the primary for one twice a second (``pg_log_standby_snapshot()``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ingestion.errors import AdminUnreachableError, SourceError
from ingestion.lsn import lsn_to_str, str_to_lsn

log = logging.getLogger("tidemark.ingestion")

REPLAY_WAIT_S = 60.0
"""How long a standby may take to replay what ingestion wrote on its primary."""
NUDGE_S = 0.5
"""How often the primary is asked for a running-transactions record while a slot is created."""


def in_recovery(conn: psycopg.Connection) -> bool:
    """Whether the server of ``conn`` is a standby (in recovery)."""
    return bool(conn.execute("select pg_is_in_recovery()").fetchone()[0])


def primary_to_nudge(repl_conn: Any, setup_dsn: str | None) -> str | None:
    """The admin URL to ask for running-transactions records while a slot is created on the
    server of the psycopg2 replication connection ``repl_conn``, when it is a standby (None
    otherwise: nothing to ask). No query: a server reports ``in_hot_standby`` to its clients
    (PostgreSQL 14 and later; a standby decodes from 16 on)."""
    if setup_dsn is None:
        return None
    return setup_dsn if repl_conn.get_parameter_status("in_hot_standby") == "on" else None


def await_replay(source_conn: psycopg.Connection, setup_dsn: str | None, source: str,
                 timeout_s: float = REPLAY_WAIT_S) -> None:
    """On a standby, wait until it has replayed what its primary has written so far.

    Nothing happens when the source is not a standby, or when no admin URL names another
    server.

    Args:
        source_conn: an autocommit connection to the source (the stream's server).
        setup_dsn: the admin URL (the primary, for a standby source), or None.
        source: the source name, for messages.
        timeout_s: how long to wait.

    Raises:
        SourceError: the standby did not get there in time (retried: it may be catching up).
    """
    if setup_dsn is None or not in_recovery(source_conn):
        return
    with psycopg.connect(setup_dsn, autocommit=True, connect_timeout=10) as primary:
        if in_recovery(primary):
            return  # the admin URL names a standby too: nothing written there to wait for
        # the insert position: an asynchronous commit may not be written out yet
        target = str_to_lsn(primary.execute(
            "select pg_current_wal_insert_lsn()::text").fetchone()[0])
    deadline = time.monotonic() + timeout_s
    while True:
        replayed = source_conn.execute("select pg_last_wal_replay_lsn()::text").fetchone()[0]
        if replayed is not None and str_to_lsn(replayed) >= target:
            return
        if time.monotonic() >= deadline:
            raise SourceError(
                f"Source {source!r}: the standby has not replayed its primary's WAL up to "
                f"{lsn_to_str(target)} in {timeout_s:.0f} s (it is at {replayed}). Is it "
                f"streaming from the primary that --admin-url names? The standby's view "
                f"pg_stat_wal_receiver says.")
        time.sleep(0.05)


@contextmanager
def nudging(primary_dsn: str | None) -> Iterator[None]:
    """While the ``with`` block creates a slot on a standby, ask its primary for running-
    transactions records (:func:`primary_to_nudge`; None: nothing to do; used by
    :func:`ingestion.snapshot.create_slot_exporting`). A role that may not
    (``pg_log_standby_snapshot()`` is the superuser's unless granted) only leaves the slot to
    wait for the primary's own record."""
    if primary_dsn is None:
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=_nudge, args=(primary_dsn, done), daemon=True,
                              name="tidemark-slot-nudge")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def _nudge(dsn: str, done: threading.Event) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                             application_name="tidemark slot nudge") as conn:
            while not done.wait(NUDGE_S):
                conn.execute("select pg_log_standby_snapshot()")
    except psycopg.Error as exc:
        log.debug("running-transactions nudge stopped: %s", exc)


def _server(dsn: str) -> str:
    parts = conninfo_to_dict(dsn)
    return f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"


def check_admin(source_conn: psycopg.Connection, source_dsn: str, setup_dsn: str | None,
                source: str) -> None:
    """Before streaming: the admin URL's server answers, when it is another server than the
    stream's and the stream's is a primary (a standby promoted by a failover streams on from
    its slot, but the publication and the heartbeats went to its old primary, which is gone).

    Raises:
        AdminUnreachableError: it does not answer (retried), with how to register the promoted
            server.
    """
    if setup_dsn is None or _server(setup_dsn) == _server(source_dsn) or in_recovery(source_conn):
        return
    try:
        psycopg.connect(setup_dsn, autocommit=True, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        cause = str(exc).strip().splitlines()[0]
        # no word of ingestion.failures' advice markers ("publication"): a lost connection
        raise AdminUnreachableError(
            f"the admin URL's server {_server(setup_dsn)} cannot be reached ({cause}), and the "
            f"server streamed from, {_server(source_dsn)}, is a primary: if it is the standby "
            f"source promoted by a failover, its slot holds every change, but the admin URL "
            f"(heartbeats, what is published) must name it now: stop ingestion, `tidemark "
            f"source remove "
            f"{source} --force`, then `tidemark source add {source} --url <the promoted "
            f"server>` (landing keeps its data; a new snapshot is taken)") from None
