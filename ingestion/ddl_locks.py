"""Ingestion's DDL on landing tables, without queueing readers behind it.

A schema change followed from the source (``alter table ... add column``: see
:mod:`ingestion.relations`), a source TRUNCATE and a resync need ACCESS EXCLUSIVE on the mirror
(and the changelog). Awaited with ``lock_timeout = 0``, such a request waits for as long as any
reader of the mirror reads (a ``tidemark views verify`` comparison, a long dbt model, a BI tab
idle in its transaction), and, queued, it blocks every *later* reader of the mirror meanwhile:
dashboards freeze as long as the first reader lasts (bench/RESULTS.md, round 34, f34 §2).

So :meth:`DdlLocks.run` takes those locks in a savepoint of the landing transaction with
``lock_timeout`` :data:`LOCK_WAIT` (below PostgreSQL's ``deadlock_timeout``), runs the DDL in it,
and on a timeout rolls back to the savepoint and waits *holding no lock on those tables*: it polls
``pg_locks`` (every :data:`POLL_S`) and tries again as soon as no other session holds them, or
after a backoff (:data:`BACKOFF_S`; readers that overlap without a gap still let it through
then). A later reader thus waits at most :data:`LOCK_WAIT` per attempt. Meanwhile:

* Tidemark's own retryable readers holding the tables (:data:`RETRYABLE_READERS`: a verify,
  named so by ``streaming_views.verify``) are cancelled (``pg_cancel_backend``) from the first
  timeout on; the verify finds itself in :data:`TABLE`'s ``cancelled`` list and reports the view
  as interrupted, checked again at its next run. Any other session is never cancelled.
* The wait is recorded in ``tidemark.lock_waits`` (one row per source, from a connection of its
  own, refreshed every attempt): ``tidemark status`` and ``tidemark ingest status`` say who holds
  the lock and what to do (:func:`current_wait`). After :data:`TELL_AFTER_S` the log says it
  once.
* An autovacuum holding the table gives way to a lock request only after ``deadlock_timeout``:
  when autovacuum is all that holds the tables, an attempt waits that long plus a margin.
* The replication stream is kept alive (``keepalive``): a long wait does not end it.

No change of the source lands while it waits: one landing transaction at a time, in source
order (exactly-once). Once the locks are taken, readers of those tables wait for the landing
transaction to commit, as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.link_watch import server_pid

log = logging.getLogger("tidemark.ingestion")
T = TypeVar("T")

LOCK_WAIT = "200ms"           # per attempt: what a later reader of the table waits at most
POLL_S = 0.05                 # how often a waiting DDL looks whether the tables are free
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)  # ... and tries anyway after this long (the last repeats)
TELL_AFTER_S = 5.0            # log who holds the lock once the wait lasts this long
KEEPALIVE_S = 1.0             # replication feedback while waiting
STALE_S = 30.0                # a wait row not refreshed for this long: its process is gone
RETRYABLE_READERS = ("tidemark verify",)
"""application_name of Tidemark's own readers that may be cancelled (and report it): equal to
``streaming_views.verify.APPLICATION_NAME`` (ingestion does not import streaming_views)."""
TABLE = "lock_waits"


@contextlib.contextmanager
def kept_alive(keepalive: Callable[[], None], every_s: float = KEEPALIVE_S / 2
               ) -> Iterator[None]:
    """Call ``keepalive`` every ``every_s`` seconds from a thread of its own while the block runs.

    For a long landing step on the stream's thread (a schema change's backfill, an in-session
    resync's copy, a new table's snapshot): without feedback, a step longer than the source's
    ``wal_sender_timeout`` (60 s by default) ends the stream. ``keepalive`` must be safe to call
    from another thread while the block runs (the block does not use the replication
    connection). The first failure of ``keepalive`` ends the calls (the stream is gone: the
    block's next read says so).
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                keepalive()
            except Exception as exc:  # any: the stream thread's next read reports it
                log.debug("replication keepalive failed: %s", exc)
                return

    thread = threading.Thread(target=beat, name="tidemark-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
TABLES = {TABLE: """
        source text primary key,
        relation text not null,
        what text not null,
        since timestamptz not null,
        updated_at timestamptz not null,
        ended_at timestamptz,
        holders jsonb not null default '[]',
        cancelled jsonb not null default '[]'"""}
"""``tidemark.lock_waits``: the DDL each source waits to apply (``ended_at`` set once done),
who held the lock at its last attempt, and the sessions it cancelled (pid, backend_start as
epoch seconds, at): created with the other state tables (:func:`ingestion.state.ensure_state`)."""

_HOLDERS = """select distinct on (a.pid) a.pid, coalesce(a.application_name, ''),
       coalesce(a.state, ''), a.query_start, left(a.query, 80), a.backend_type,
       c.oid::regclass::text
  from pg_locks l
  join pg_class c on c.oid = l.relation
  join pg_stat_activity a on a.pid = l.pid
 where l.granted and l.pid <> %(me)s and l.pid <> pg_backend_pid()
   and l.relation = any(array(select to_regclass(r) from unnest(%(relations)s::text[]) r))
 order by a.pid, c.oid::regclass::text"""
_RECORD = """insert into tidemark.lock_waits as w (source, relation, what, since, updated_at,
    holders) values (%(source)s, %(relation)s, %(what)s, now(), now(), %(holders)s)
  on conflict (source) do update set
    relation = excluded.relation, what = excluded.what, holders = excluded.holders,
    updated_at = now(), ended_at = null,
    since = case when %(first)s then now() else w.since end,
    cancelled = case when %(first)s then '[]'::jsonb else w.cancelled end"""
_CANCELLED = """update tidemark.lock_waits set cancelled = cancelled || coalesce((
    select jsonb_agg(jsonb_build_object('pid', a.pid, 'backend_start',
                                        extract(epoch from a.backend_start), 'at', now()))
      from pg_stat_activity a where a.pid = any(%s)), '[]') where source = %s"""


@dataclass(frozen=True)
class LockHolder:
    """A session holding a lock on a table the DDL needs.

    Attributes:
        pid: its backend's process id.
        application_name: what its client calls itself.
        state: ``active``, ``idle in transaction``...
        query_start: when its current (or last) statement began.
        query: the first 80 characters of that statement.
        backend_type: ``client backend``, ``autovacuum worker``...
        relation: the table it holds.
    """

    pid: int
    application_name: str
    state: str
    query_start: Any
    query: str
    backend_type: str
    relation: str

    @property
    def autovacuum(self) -> bool:
        """An autovacuum that gives way to a lock request after ``deadlock_timeout`` (one that
        prevents wraparound does not)."""
        return self.backend_type == "autovacuum worker" and "wraparound" not in self.query

    def as_json(self) -> dict[str, Any]:
        """The form ``tidemark.lock_waits.holders`` keeps."""
        return {"pid": self.pid, "application_name": self.application_name,
                "state": self.state, "query": self.query, "relation": self.relation,
                "query_start": None if self.query_start is None else
                self.query_start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 42 (application_name 'bi', idle in transaction, query started ...: select ...)``."""
    started = f", query started {holder['query_start']}" if holder.get("query_start") else ""
    query = f": {holder['query']}" if holder.get("query") else ""
    return (f"pid {holder['pid']} (application_name {holder['application_name']!r}, "
            f"{holder['state'] or 'no state'}{started}{query})")


def describe_wait(source: str, relation: str, what: str, waited_s: float,
                  holders: list[dict[str, Any]]) -> str:
    """What status and the log say of a waiting DDL: who holds the lock, what to do."""
    held = "; ".join(map(describe_holder, holders)) or \
        "no session now (one has just ended, or another object it needs is held)"
    pids = [h["pid"] for h in holders if h["application_name"] not in RETRYABLE_READERS]
    todo = (f" To let it through, end that transaction: commit or close it in its client, or "
            f"on landing (`tidemark db psql`) run "
            f"{'; '.join(f'select pg_terminate_backend({p})' for p in pids)}."
            if pids else "")
    return (f"source {source}: waiting {waited_s:.0f} s so far for a lock on {relation}, to "
            f"{what}; held by {held}. No change of source {source} lands meanwhile; readers of "
            f"{relation} are not held up.{todo} A Tidemark verify holding it is interrupted and "
            f"checks the view again at its next run.")


class DdlLocks:
    """Runs ingestion's DDL on landing tables without queueing readers (module docstring).

    Args:
        source: the source name (the key of its ``tidemark.lock_waits`` row).
        keepalive: called about every :data:`KEEPALIVE_S` while waiting (the session sends
            replication feedback).
    """

    def __init__(self, source: str, keepalive: Callable[[], None] | None = None) -> None:
        self.source = source
        self.keepalive = keepalive or (lambda: None)

    def run(self, conn: psycopg.Connection, table: str, relations: list[sql.Identifier],
            what: str, fn: Callable[[], T]) -> T:
        """Lock ``relations`` ACCESS EXCLUSIVE and run ``fn``, in a savepoint of ``conn``'s
        transaction, retried until the locks are had (the locks stay until that transaction
        ends). Any error of ``fn`` but a lock timeout rolls the savepoint back and propagates.

        Args:
            conn: the landing connection, in its transaction.
            table: the table, as messages name it (``source.table``).
            relations: the tables to lock (none: ``fn`` alone, in the savepoint).
            what: what the DDL does, for status and the log, after "to" (``apply a schema
                change (...)``, ``resync it``).
            fn: the DDL.

        Returns:
            What ``fn`` returned.
        """
        wait: _Wait | None = None
        timeout = LOCK_WAIT
        done = False
        try:
            while True:
                try:
                    with conn.transaction():
                        conn.execute("select set_config('lock_timeout', %s, true)", (timeout,))
                        if relations:
                            conn.execute(sql.SQL("lock table {} in access exclusive mode").format(
                                sql.SQL(", ").join(relations)))
                        result = fn()
                        conn.execute("select set_config('lock_timeout', '0', true)")
                    done = True
                    return result
                except psycopg.errors.LockNotAvailable:
                    if wait is None:
                        wait = _Wait(conn, self.source, table, relations, what)
                    timeout = wait.after_timeout(self.keepalive)
        finally:
            if wait is not None:
                wait.end(done)


class _Wait:
    """One DDL's wait for its locks: who holds them, the status row, cancels, the pauses."""

    def __init__(self, conn: psycopg.Connection, source: str, table: str,
                 relations: list[sql.Identifier], what: str) -> None:
        self.source, self.relation, self.what = source, table, what
        # the server's process id: behind pgbouncer libpq's is the pooler's own key, and
        # ingestion's own session was listed among the lock's holders
        self.me = server_pid(conn)
        self.names = [r.as_string(conn) for r in relations]
        self.started = time.monotonic()
        self.attempts = 0
        self.told = False
        self.cancelled: set[int] = set()
        self.side: psycopg.Connection | None = None
        try:  # its own connection: the landing transaction's writes show only at its commit
            self.side = psycopg.connect(conn.info.dsn, password=conn.info.password,
                                        autocommit=True)
        except psycopg.Error as exc:
            log.warning("source %s: waiting for a lock on %s to %s; cannot say so in status "
                        "(%s)", source, self.relation, what, str(exc).strip())

    def holders(self) -> list[LockHolder]:
        """The other sessions holding a lock on the tables now."""
        if self.side is None:
            return []
        return [LockHolder(*row) for row in self.side.execute(
            _HOLDERS, {"me": self.me, "relations": self.names}).fetchall()]

    def after_timeout(self, keepalive: Callable[[], None]) -> str:
        """After a lock timeout: record and tell, cancel Tidemark's verifies, wait until the
        tables look free (or the backoff passed). Returns the next attempt's lock_timeout."""
        first = self.attempts == 0
        self.attempts += 1
        try:
            held = self.holders()
            self._record(held, first)
            self._cancel([h for h in held if h.application_name in RETRYABLE_READERS])
        except psycopg.Error as exc:  # status and cancels are a courtesy: the DDL goes on
            log.debug("source %s: lock wait not recorded: %s", self.source, exc)
            held = []
        waited = time.monotonic() - self.started
        if not self.told and waited >= TELL_AFTER_S and held:
            self.told = True
            log.warning(describe_wait(self.source, self.relation, self.what, waited,
                                      [h.as_json() for h in held]))
        self._pause(keepalive, bool(held))
        if held and all(h.autovacuum for h in held) and self.side is not None:
            ms = self.side.execute("select setting::int from pg_settings"
                                   " where name = 'deadlock_timeout'").fetchone()[0]
            return f"{ms + 500}ms"  # an autovacuum is cancelled once a request waits so long
        return LOCK_WAIT

    def _record(self, held: list[LockHolder], first: bool) -> None:
        if self.side is not None:
            self.side.execute(_RECORD, {
                "source": self.source, "relation": self.relation, "what": self.what,
                "holders": Jsonb([h.as_json() for h in held]), "first": first})

    def _cancel(self, readers: list[LockHolder]) -> None:
        """Cancel Tidemark's own readers' statements, recorded first (the verify looks)."""
        if not readers or self.side is None:
            return
        new = [h for h in readers if h.pid not in self.cancelled]
        if new:
            self.side.execute(_CANCELLED, ([h.pid for h in new], self.source))
        for h in readers:  # again at each attempt: a cancel between its statements is lost
            with contextlib.suppress(psycopg.Error):  # another role's, gone meanwhile
                self.side.execute("select pg_cancel_backend(%s)", (h.pid,))
        for h in new:
            self.cancelled.add(h.pid)
            log.info("source %s: interrupted %s (pid %s) holding %s, to %s: it checks again at"
                     " its next run", self.source, h.application_name, h.pid, h.relation,
                     self.what)

    def _pause(self, keepalive: Callable[[], None], held: bool) -> None:
        """Wait, holding none of the tables, until no other session holds them (autovacuum
        aside) or the backoff has passed. Without a holder of the tables (``held`` false: the
        DDL waited for another object, or the holder has just ended) the backoff is waited
        whole."""
        backoff = BACKOFF_S[min(self.attempts, len(BACKOFF_S)) - 1]
        until = time.monotonic() + backoff
        alive = time.monotonic()
        while time.monotonic() < until:
            time.sleep(POLL_S)
            if time.monotonic() - alive >= KEEPALIVE_S:
                keepalive()
                alive = time.monotonic()
            try:
                if held and all(h.autovacuum for h in self.holders()):
                    return
            except psycopg.Error:
                continue
        keepalive()

    def end(self, done: bool) -> None:
        """The wait is over: the DDL got its locks and ran (``done``), or failed."""
        waited = time.monotonic() - self.started
        if self.told and done:
            log.warning("source %s: got the lock on %s after waiting %.0f s, to %s",
                        self.source, self.relation, waited, self.what)
        if self.side is None:
            return
        with contextlib.suppress(psycopg.Error):
            self.side.execute("update tidemark.lock_waits set ended_at = now(), updated_at ="
                              " now() where source = %s", (self.source,))
        with contextlib.suppress(psycopg.Error):
            self.side.close()


def current_wait(conn: psycopg.Connection, source: str) -> dict[str, Any] | None:
    """The DDL ``source``'s ingestion waits to apply now, or None: ``table``, ``what``,
    ``since``, ``waiting_s``, ``holders`` (pid, application_name, state, query_start, query,
    relation) and ``message`` (who holds the lock, what to do)."""
    if conn.execute("select to_regclass('tidemark.lock_waits')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select relation, what, since, extract(epoch from now() - since)::float8, holders"
        " from tidemark.lock_waits where source = %s and ended_at is null"
        " and updated_at > now() - make_interval(secs => %s)", (source, STALE_S)).fetchone()
    if row is None:
        return None
    relation, what, since, waited, holders = row
    return {"table": relation, "what": what, "since": since.isoformat(),
            "waiting_s": round(waited, 1), "holders": holders,
            "message": describe_wait(source, relation, what, waited, holders)}
