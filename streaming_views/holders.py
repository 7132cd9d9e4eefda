# ruff: noqa: S608 -- fixed SQL composed of this module's own fragments; values are bound.
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
  tables, on which dropping the old triggers takes ACCESS EXCLUSIVE too (:class:`Wait`,
  polling ``pg_locks``);
* waits so for ingestion's landing session too (named by ``ingestion/exclusive.py``, holding
  its source's advisory lock), in a transaction open for over a second on those tables: one
  source transaction is one landing transaction, for minutes when it is large. It waits as long
  as that transaction makes progress, and says so (the log ``tidemark.streaming_views``);
  an ingestion idle in its transaction without progress for the deploy's limit is stuck;
* takes those ACCESS EXCLUSIVE locks (base tables: just before the swap, when the old
  triggers go) with ``lock_timeout`` at most ``LOCK_WAIT``; a session
  that began reading meanwhile makes it roll back and wait again (see
  :mod:`streaming_views.deploy`);
* past its deadline, fails with an error naming the sessions (pid, application_name, state and
  since when; for ingestion, its source and whether it applies or is stuck) — the same words
  ``tidemark status`` prints (:func:`holders`, :func:`long_holders`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

POLL_S = 0.1
log = logging.getLogger("tidemark.streaming_views")
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
# A writer between its statements (ingestion decoding the next change) is idle in transaction
# for milliseconds: only a longer idle holds a deploy back.
IDLE_S = 1.0
IDLE_FOR = f"{IDLE_S:g}s"
INGEST_KEY = "tidemark:ingest-process"  # the advisory lock of ingestion/exclusive.py, which
#   ingestion's landing session (the one applying the source's transactions) holds, and its name
INGEST_NAME = r"^tidemark ingest \(pid \d+ on [^)]+\) (.*)$"
# The columns of a Holder, from pg_stat_activity ``a``; ``source``: the ingestion's source when
# ``a`` is an ingestion's landing session ('' when named otherwise), else null; ``busy``: running
# a statement that is not waiting for a lock.
_FROM = """from pg_locks l
  join pg_class c on c.oid = l.relation
  join pg_stat_activity a on a.pid = l.pid
  cross join lateral (select case
    when a.application_name ~ %(name)s then substring(a.application_name from %(name)s)
    when a.pid = any(array(select al.pid from pg_locks al where al.locktype = 'advisory'
                           and al.granted and al.objsubid = 2
                           and al.classid = hashtext(%(key)s)::oid))  -- once a query
    then '' end as source) i"""
_WHERE = """where l.granted and l.pid <> pg_backend_pid() and a.backend_type = 'client backend'"""
_HOLDER = """a.pid, coalesce(a.application_name, ''), a.state,
       coalesce(a.xact_start, a.backend_start), c.oid::regclass::text, i.source,
       a.state_change, a.state = 'active' and a.wait_event_type is distinct from 'Lock',
       coalesce(extract(epoch from now() - a.state_change), 0)::float8"""

# An ingestion transaction open for over IDLE_FOR on a base table is waited for too: the
# deploy's lock attempts would queue behind it (and other writers behind them) for nothing.
HOLDERS_SQL = f"""select distinct on (a.pid) {_HOLDER}
  {_FROM}
 {_WHERE}
   and (l.relation = any(array(select to_regclass(r) from unnest(%(relations)s::text[]) r))
        or (a.state like 'idle in transaction%%'
            and a.state_change < now() - %(idle_for)s::interval
            and l.relation = any(array(select to_regclass(r) from unnest(%(idle)s::text[]) r)))
        or (i.source is not null and a.xact_start <= now() - %(ingest_for)s::interval
            and l.relation = any(array(select to_regclass(r)
                                         from unnest(%(written)s::text[]) r))))
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
        source: the source whose transaction it applies, if it is ingestion's landing session
            ('' if it is not named after its source); None for any other session.
        state_change: when its state last changed (its last statement began or ended).
        busy: whether it runs a statement that is not waiting for a lock.
        idle_s: seconds since ``state_change``.
    """

    pid: int
    application_name: str
    state: str
    since: datetime
    relation: str
    source: str | None = None
    state_change: datetime | None = None
    busy: bool = False
    idle_s: float = 0.0

    def session(self) -> str:
        """``pid 123 (application_name 'metabase', idle in transaction since 2026-...)``; for
        ingestion, ``pid 123 (ingestion of source 'shop': applying a transaction open since
        ...)`` or, idle in it for over :data:`IDLE_S`, ``(ingestion of source 'shop': stuck,
        idle in transaction for 130 s; its transaction open since ...)``."""
        if self.source is None:
            return f"pid {self.pid} (application_name {self.application_name!r}, " \
                   f"{self.state} since {_local(self.since)})"
        what = f"ingestion of source {self.source!r}" if self.source else \
            f"ingestion (application_name {self.application_name!r})"
        if not self.stuck:
            return f"pid {self.pid} ({what}: applying a transaction open since " \
                   f"{_local(self.since)})"
        return f"pid {self.pid} ({what}: stuck, {self.state} for {self.idle_s:.0f} s; its " \
               f"transaction open since {_local(self.since)})"

    @property
    def stuck(self) -> bool:
        """Whether it is ingestion's session, idle in its transaction for over :data:`IDLE_S`."""
        return self.source is not None and not self.busy and self.idle_s > IDLE_S

    def describe(self) -> str:
        """:meth:`session`, then ``holds <relation>``."""
        return f"{self.session()} holds {self.relation}"


def _local(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S%z")


def _params(**more: object) -> dict[str, object]:
    return {"name": INGEST_NAME, "key": INGEST_KEY, **more}


def holders(conn: psycopg.Connection, relations: list[str], idle: list[str] | None = None,
            written: list[str] | None = None, ingest_for: str = IDLE_FOR) -> list[Holder]:
    """The other client sessions holding a lock on any of ``relations``, or idle (for over
    :data:`IDLE_FOR`) in a transaction that holds one of ``idle`` — or, for ingestion's landing
    session, in a transaction open for ``ingest_for`` that holds one of ``written`` (missing
    relations skipped)."""
    rows = conn.execute(HOLDERS_SQL, _params(
        relations=relations, idle_for=IDLE_FOR, idle=idle or [], written=written or [],
        ingest_for=ingest_for)).fetchall()
    return [Holder(*row) for row in rows]


class Wait:
    """How long a deploy waits for the sessions holding what it replaces (see
    :func:`holders`): ``limit_s`` — but as long as every one of them is an ingestion
    transaction that makes progress, plus ``limit_s`` after the least recent progress.

    Ingestion applies a source transaction in one landing transaction (exactly-once), holding
    the views' base tables and change logs throughout: a 10M-row source transaction takes
    minutes. Progress: a statement running (not waiting for a lock: the deploy holds none while
    it waits), or its state changed since the last poll (statements between idle moments). An
    ingestion idle in its transaction without progress for ``limit_s`` is stuck, and fails the
    deploy.
    """

    def __init__(self, what: str, limit_s: float) -> None:
        self.what, self.limit_s = what, limit_s
        self.deadline = time.monotonic() + limit_s
        self._changed: dict[int, tuple[datetime | None, datetime]] = {}
        self._progress: dict[int, float] = {}
        self._seen: dict[int, float] = {}
        self._told: set[tuple[int, datetime]] = set()

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() > self.deadline

    def until_free(self, conn: psycopg.Connection, relations: list[str],
                   idle: list[str] | None = None,
                   written: list[str] | None = None) -> list[Holder]:
        """Wait (outside any transaction, holding no lock) until no session holds what
        :func:`holders` looks for, or until the deadline.

        Returns:
            The sessions still holding them at the deadline (empty when free).
        """
        while True:
            held = holders(conn, relations, idle, written)
            self.observe(held)
            if not held or self.expired():
                return held
            time.sleep(POLL_S)

    def observe(self, held: list[Holder]) -> None:
        """Note who holds what the deploy needs now; while only ingestion's transactions do,
        the deadline moves to ``limit_s`` after the least recent progress among them."""
        now = time.monotonic()
        for h in held:
            first = self._seen.setdefault(h.pid, now) == now
            if first or h.busy or self._changed.get(h.pid) != (h.state_change, h.since):
                self._progress[h.pid] = now
            self._changed[h.pid] = (h.state_change, h.since)
            if h.source is not None and now - self._seen[h.pid] >= IDLE_S \
                    and (h.pid, h.since) not in self._told:
                self._told.add((h.pid, h.since))
                log.warning("deploying %s: waiting for ingestion's transaction of source %r "
                            "(landing pid %s, open since %s) to commit; holding no lock "
                            "meanwhile", self.what, h.source, h.pid, _local(h.since))
        if held and all(h.source is not None for h in held):
            self.deadline = max(self.deadline, min(self._progress[h.pid] for h in held)
                                + self.limit_s)


LONG_HOLDERS_SQL = f"""select distinct on (v.name, a.pid) v.name, {_HOLDER}
  {_FROM}
  join tidemark.views v on v.target = 'embedded'
   and (l.relation = to_regclass(format('live.%%I', v.name))
        or c.relnamespace = to_regnamespace('tidemark_state')  -- its state, change logs...
           and (c.relname = v.suffix or starts_with(c.relname, v.suffix || '__')))
 {_WHERE}
   and a.xact_start < now() - make_interval(secs => %(age)s)
 order by v.name, a.pid"""
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
    if conn.execute("select to_regclass('tidemark.views')").fetchone()[0] is None:
        return out
    for name, *holder in conn.execute(LONG_HOLDERS_SQL, _params(age=min_age_s)):
        out.setdefault(name, []).append(Holder(*holder))
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
