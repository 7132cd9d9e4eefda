"""Say what a replication slot's creation is waiting for.

``CREATE_REPLICATION_SLOT ... LOGICAL`` returns only once every transaction that held a
transaction ID when it started (on the whole source server, in any database, prepared ones too)
has ended: before that, PostgreSQL cannot build the snapshot logical decoding starts from. On a
busy or careless server this is the classic silent hang of a first ``tidemark ingest run``: a
session left ``idle in transaction`` or a forgotten ``PREPARE TRANSACTION`` blocks it for as
long as it lives, and nothing says so. While the creation runs, :func:`reporting_slot_wait`
looks at the server from a second connection and, after a few seconds and then every half
minute, logs which transactions are in the way and how to end them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

log = logging.getLogger("tidemark.ingestion")

FIRST_REPORT_S = 5.0
REPEAT_S = 30.0

_SESSIONS = """
select a.pid, coalesce(a.datname, '?'), coalesce(a.usename, '?'),
       coalesce(nullif(a.application_name, ''), '-'), a.state,
       extract(epoch from clock_timestamp() - a.xact_start)::bigint
  from pg_stat_activity a
 where a.backend_xid is not null and a.pid <> pg_backend_pid()
 order by a.xact_start nulls last, a.pid
 limit 10"""

_PREPARED = """
select p.gid, p.database, p.owner,
       extract(epoch from clock_timestamp() - p.prepared)::bigint
  from pg_prepared_xacts p
 order by p.prepared
 limit 10"""


def blocking_transactions(conn: psycopg.Connection) -> list[str]:
    """The transactions holding a transaction ID on the server, described for a person.

    Args:
        conn: any connection to the source server (a role without ``pg_read_all_stats`` sees
            the pid, database and user of other roles' sessions, not their state or age).

    Returns:
        One phrase per open transaction (client sessions first, oldest first, then prepared
        transactions), each with what ends it.
    """
    found = []
    for pid, db, user, app, state, age in conn.execute(_SESSIONS).fetchall():
        if state is None:  # another role's session: only its pid, database and user show
            seen = ("its state and age are hidden from this role: pg_read_all_stats shows "
                    "them")
        else:
            seen = f"application {app}, {state}, transaction open for {_age(age)}"
        found.append(f"pid {pid} (database {db}, user {user}, {seen}; end it with "
                     f"commit/rollback in that session or `select pg_terminate_backend({pid})`)")
    for gid, db, owner, age in conn.execute(_PREPARED).fetchall():
        found.append(f"prepared transaction {gid!r} (database {db}, owner {owner}, prepared "
                     f"{_age(age)} ago; end it with `commit prepared {_quote(gid)}` or "
                     f"`rollback prepared {_quote(gid)}` in database {db})")
    return found


@contextmanager
def reporting_slot_wait(dsn: str | None, source: str, slot: str, *,
                        first_after: float | None = None,
                        every: float | None = None) -> Iterator[None]:
    """Log what the slot creation in the ``with`` block waits for, if it takes a while.

    Args:
        dsn: a source URL for the watching connection; None reports nothing.
        source: source name, for the message.
        slot: the slot being created.
        first_after: seconds before the first report (default :data:`FIRST_REPORT_S`).
        every: seconds between reports (default :data:`REPEAT_S`).
    """
    if dsn is None:
        yield
        return
    done = threading.Event()
    timing = (FIRST_REPORT_S if first_after is None else first_after,
              REPEAT_S if every is None else every)
    watcher = threading.Thread(target=_watch, args=(dsn, source, slot, done, *timing),
                               name="tidemark-slot-wait", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=5)


def _watch(dsn: str, source: str, slot: str, done: threading.Event, first_after: float,
           every: float) -> None:
    if done.wait(first_after):
        return
    waited = first_after
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                             application_name="tidemark slot wait") as conn:
            while True:
                found = blocking_transactions(conn)
                what = "; ".join(found) if found else (
                    "no transaction holds an ID now, so it should end within the next "
                    "running-transactions record (about 15 s)")
                log.warning(
                    "source %s: creating replication slot %s has waited %.0f s: PostgreSQL "
                    "starts logical decoding only after every transaction that held a "
                    "transaction ID when the slot was requested has ended, in any database of "
                    "the source server. Open now: %s", source, slot, waited, what)
                if done.wait(every):
                    return
                waited += every
    except psycopg.Error as exc:  # the report is a courtesy: never fail the slot creation
        log.debug("slot wait report for %s stopped: %s", slot, exc)


def _age(seconds: int | None) -> str:
    s = int(seconds or 0)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _quote(gid: str) -> str:
    return "'" + gid.replace("'", "''") + "'"
