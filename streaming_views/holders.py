"""The sessions that hold a live view open, and how a deploy waits for them without stalling
writers.

A SQL client that reads ``live.<name>`` inside a transaction — a BI tool's tab or a notebook
left ``idle in transaction``, a REPEATABLE READ report, a ``DECLARE ... WITH HOLD`` cursor —
holds an ACCESS SHARE lock on the view and on its state table until that transaction ends.
A redeploy (blue/green swap) or a repair needs ACCESS EXCLUSIVE on both. Were it to wait for
them while holding its base tables' SHARE ROW EXCLUSIVE locks, every writer of those tables
(ingestion) and every later reader of the view would queue behind it. So a deploy:

* waits *before* its transaction, holding no lock, until no other client session holds a lock
  on the relations it will replace, nor idles in a transaction holding one of the view's base
  tables, on which dropping the old triggers takes ACCESS EXCLUSIVE too (:func:`await_free`,
  polling ``pg_locks``);
* takes those ACCESS EXCLUSIVE locks (base tables: just before the swap, when the old
  triggers go) with ``lock_timeout`` at most ``LOCK_WAIT``; a session
  that began reading meanwhile makes it roll back and wait again (see
  :mod:`streaming_views.deploy`);
* past its deadline, fails with an error naming the sessions (pid, application_name, state and
  since when) — the same words ``tidemark status`` prints (:func:`holders`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

POLL_S = 0.1
SNAPSHOT_FAIL = "tidemark.live_snapshot_failed"
# A redeploy builds a new state table: a REPEATABLE READ / SERIALIZABLE transaction whose
# snapshot predates it would read it empty. live.<name> checks it once per query (a one-time
# filter, see :func:`snapshot_guarded`) and raises 40001 (retry) instead, by this function.
SNAPSHOT_DDL = f"""create or replace function {SNAPSHOT_FAIL}(p_name text)
    returns boolean language plpgsql stable as $f$
begin
  raise exception 'live.% was redeployed after this transaction took its snapshot', p_name
    using errcode = '40001', hint = 'A REPEATABLE READ or SERIALIZABLE transaction cannot see '
      'the rows of a view deployed after it began: read it in a new transaction.';
end $f$"""
IDLE_FOR = "1s"  # a writer between its statements (ingestion decoding the next change) is idle
#                  in transaction for milliseconds: only a longer idle holds a deploy back

HOLDERS_SQL = """select distinct on (a.pid) a.pid, coalesce(a.application_name, ''), a.state,
       coalesce(a.xact_start, a.backend_start), c.oid::regclass::text
  from pg_locks l
  join pg_class c on c.oid = l.relation
  join pg_stat_activity a on a.pid = l.pid
 where l.granted and l.pid <> pg_backend_pid() and a.backend_type = 'client backend'
   and (l.relation = any(array(select to_regclass(r) from unnest(%s::text[]) r))
        or (a.state like 'idle in transaction%%' and a.state_change < now() - %s::interval
            and l.relation = any(array(select to_regclass(r) from unnest(%s::text[]) r))))
 order by a.pid, c.oid::regclass::text"""


@dataclass(frozen=True)
class Holder:
    """A client session holding a lock on a live view (or its state).

    Attributes:
        pid: its backend's process id (``pg_terminate_backend(pid)`` ends it).
        application_name: what the client calls itself (a BI tool sets it).
        state: ``idle in transaction``, ``active``...
        since: when its transaction began.
        relation: the relation it holds.
    """

    pid: int
    application_name: str
    state: str
    since: datetime
    relation: str

    def session(self) -> str:
        """``pid 123 (application_name 'metabase', idle in transaction since 2026-...)``."""
        since = self.since.astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
        return f"pid {self.pid} (application_name {self.application_name!r}, {self.state} " \
               f"since {since})"

    def describe(self) -> str:
        """:meth:`session`, then ``holds <relation>``."""
        return f"{self.session()} holds {self.relation}"


def holders(conn: psycopg.Connection, relations: list[str],
            idle: list[str] | None = None) -> list[Holder]:
    """The other client sessions holding a lock on any of ``relations``, or idle (for over
    :data:`IDLE_FOR`) in a transaction that holds one of ``idle`` (missing relations
    skipped)."""
    rows = conn.execute(HOLDERS_SQL, (relations, IDLE_FOR, idle or [])).fetchall()
    return [Holder(*row) for row in rows]


def await_free(conn: psycopg.Connection, relations: list[str], deadline: float,
               idle: list[str] | None = None) -> list[Holder]:
    """Wait (outside any transaction, holding no lock) until no other client session holds a
    lock on ``relations`` nor idles in a transaction holding one of ``idle`` (base tables:
    dropping the old triggers takes ACCESS EXCLUSIVE on them, while their writers come and go),
    or until ``deadline`` (``time.monotonic()``).

    Returns:
        The sessions still holding them at the deadline (empty when free).
    """
    while True:
        held = holders(conn, relations, idle)
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(POLL_S)


LONG_HOLDERS_SQL = """select distinct on (c.relname, a.pid) c.relname, a.pid,
       coalesce(a.application_name, ''), a.state, a.xact_start
  from pg_locks l
  join pg_class c on c.oid = l.relation
  join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'live'
  join pg_stat_activity a on a.pid = l.pid
 where l.granted and l.pid <> pg_backend_pid() and a.backend_type = 'client backend'
   and a.xact_start < now() - make_interval(secs => %s)
 order by c.relname, a.pid"""

WAITS_SQL = """select w.pid, coalesce(w.application_name, ''),
       extract(epoch from now() - coalesce(w.state_change, w.query_start))::float8,
       left(w.query, 80), b.pid, coalesce(b.application_name, ''), b.state,
       coalesce(b.xact_start, b.backend_start)
  from pg_stat_activity w
  cross join lateral unnest(pg_blocking_pids(w.pid)) as bp(pid)
  join pg_stat_activity b on b.pid = bp.pid
 where w.datname = current_database() and w.wait_event_type = 'Lock'
 order by 3 desc, 1, 5"""


def long_holders(conn: psycopg.Connection, min_age_s: float = 60.0) -> dict[str, list[Holder]]:
    """Per live view: the client sessions whose transaction, open for more than ``min_age_s``,
    holds it (a redeploy of that view waits for them)."""
    out: dict[str, list[Holder]] = {}
    for name, pid, app, state, since in conn.execute(LONG_HOLDERS_SQL, (min_age_s,)):
        out.setdefault(name, []).append(Holder(pid, app, state, since, f"live.{name}"))
    return out


def lock_waits(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Every session of this database waiting for a lock, with the sessions it waits for
    (``pg_blocking_pids``): who blocks whom, since when."""
    return [{"waiting_pid": w, "waiting_application": wa, "waiting_s": round(s, 1),
             "query": q, "blocked_by": Holder(b, ba, bs, since, "").session()}
            for w, wa, s, q, b, ba, bs, since in conn.execute(WAITS_SQL)]


def snapshot_guarded(select: str, name: str, xid: str) -> sql.Composed:
    """``select`` (of ``live.<name>``) read only by snapshots that see the deploying
    transaction ``xid``, or by that transaction: a one-time filter of built-in calls (a
    function call only when it fails, :data:`SNAPSHOT_DDL`). A READ COMMITTED statement's
    snapshot is taken after the deploy's lock is released, so it passes at the first test."""
    x = sql.SQL("{}::xid8").format(sql.Literal(xid))
    return sql.SQL("SELECT * FROM ({}) AS __tm_v WHERE (current_setting("
                   "'transaction_isolation') = 'read committed' OR pg_visible_in_snapshot({}, "
                   "pg_current_snapshot()) OR {} = pg_current_xact_id_if_assigned() OR {}({}))"
                   ).format(sql.SQL(select), x, x, sql.SQL(SNAPSHOT_FAIL),  # type: ignore[arg-type]
                            sql.Literal(name))
