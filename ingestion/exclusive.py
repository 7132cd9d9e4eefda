"""One ingestion per source and landing at a time.

A second ``tidemark ingest run`` (or ``catch_up``) of a source that another process is
ingesting into the same landing database — a terminal forgotten open, a Dagster catch-up while
``tidemark up`` streams — would share its replication slot: at best it waits and fails half a
minute later naming a server process, at worst the two take turns dropping and re-creating the
slot. Each session holds a session-level advisory lock on its landing connection, named after
the source, for as long as it lives (released with the connection, also when the process is
killed); a second session is refused within seconds, saying who holds it and since when.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ingestion.errors import IngestionRunningError

_KEY = "tidemark:ingest-process"
_NAME = re.compile(r"^tidemark ingest \(pid (\d+) on ([^)]+)\) ")
log = logging.getLogger("tidemark.ingestion")


def named(dsn: str, source: str) -> dict[str, str]:
    """Connection options naming a session's connections after the process, its host and the
    source (the server keeps 63 bytes), unless the URL names them already."""
    if "application_name" in conninfo_to_dict(dsn):
        return {}
    return {"application_name":
            f"tidemark ingest (pid {os.getpid()} on {socket.gethostname()}) {source}"[:63]}


def _orphaned(name: str) -> bool:
    """Whether a connection named by :func:`named` belongs to a process of this host that is
    gone."""
    match = _NAME.match(name)
    if match is None or match.group(2) != socket.gethostname():
        return False
    try:
        return psutil.Process(int(match.group(1))).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _terminate(landing: psycopg.Connection, pid: int) -> bool:
    try:
        return bool(landing.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0])
    except psycopg.errors.InsufficientPrivilege:  # another role's: waited for like any other
        return False
    finally:
        landing.rollback()


def hold_source_lock(landing: psycopg.Connection, source: str, wait_s: float = 5.0) -> None:
    """Take the source's ingestion lock on ``landing`` for the connection's lifetime.

    Waits up to ``wait_s`` for a session that is ending (a process stopping), and ends the
    landing session of a process of this host that is gone (killed in a long statement).

    Raises:
        IngestionRunningError: another session holds it; the message names it.
    """
    deadline = time.monotonic() + wait_s
    ended: set[int] = set()
    while True:
        got = landing.execute("select pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                              (_KEY, source)).fetchone()[0]
        if got:
            landing.commit()
            return
        holder = landing.execute(
            "select a.pid, coalesce(nullif(a.application_name, ''), 'an unnamed client'),"
            " to_char(a.backend_start at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
            " coalesce(host(a.client_addr), 'local socket')"
            " from pg_locks l join pg_stat_activity a on a.pid = l.pid"
            " where l.locktype = 'advisory' and l.granted and l.objsubid = 2"
            " and l.database = (select oid from pg_database where datname = current_database())"
            " and l.classid = hashtext(%s)::oid and l.objid = hashtext(%s)::oid",
            (_KEY, source)).fetchone()
        landing.rollback()
        if holder is not None and holder[0] not in ended and _orphaned(holder[1]) \
                and _terminate(landing, holder[0]):
            ended.add(holder[0])
            # A killed ingestion's backend lives on until its statement ends (a long merge,
            # say): ended here, so that a restarted process neither waits for it nor fails.
            log.warning("source %s: ended landing server process %s, left by a killed "
                        "ingestion (%s)", source, holder[0], holder[1])
            deadline = max(deadline, time.monotonic() + wait_s)
        elif time.monotonic() >= deadline:
            who = ("another session" if holder is None else
                   f"{holder[1]} (landing server process {holder[0]}, from {holder[3]}, "
                   f"connected since {holder[2]} UTC)")
            raise IngestionRunningError(
                f"Source {source!r} is already being ingested into this landing database by "
                f"{who}. Two ingestions of one source would share its replication slot; this "
                f"one does not start. Stop the other first (Ctrl-C in its terminal, or `kill` "
                f"its pid), or let it run: it is doing the work.")
        time.sleep(0.2)
