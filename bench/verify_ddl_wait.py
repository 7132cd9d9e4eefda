"""A live view's verify against the mirror's ``add column``: does ingestion's DDL wait for it?

A private embedded PostgreSQL (databases ``src``, ``land``); the source table ``acc`` (``--rows``
rows, pgbench_accounts' shape) is snapshotted by real ingestion and ``live.accounts`` (its rows)
is deployed. Three rounds, each adding one column at the source and timing ``catch_up``, which
applies it to the mirror (``alter table ... add column``) and the changelog:

* ``none``: nothing else runs.
* ``held``: the verify's comparison (``diff_rows`` in a repeatable-read transaction, as
  ``streaming_views.verify`` runs it) done, its transaction kept open ``--hold`` seconds. One
  second in, ``pg_locks`` on the mirror is sampled and a plain reader of the mirror tries
  ``select count(*)`` with ``lock_timeout`` 500 ms.
* ``verify``: ingestion streams (``ingestion.run``, round 35: before, a ``catch_up`` started
  after the change, whose start-up and WAL decoding took ~1 s of the verify's ~2 s);
  ``streaming_views.verify`` runs in a thread; the column is added once its comparison query
  (``except all``) runs; ``landed_s``: until the column is in the mirror. The comparison is
  held at a gate (round 37): a session of the bench locks ``live.accounts`` before the verify
  starts, sees the comparison waiting for it, adds the column at the source and only then
  releases the lock. So the column is committed as the comparison starts, at any ``--rows``
  (round 36 polled ``pg_stat_activity`` every 10 ms for the comparison, which lasts
  milliseconds at 5,000 rows: a loaded CI machine missed it and the bench failed). At the
  default 1M rows the comparison then runs for seconds while the change streams in; at a few
  thousand rows it may end first (``outcome`` ``ok``), which is a result, not a failure.

* ``lockcost`` (only when asked): the DDL path's own cost without a reader, plain savepoint
  against ``ingestion.ddl_locks.DdlLocks.run``, alternating in one session (branch trees).
* ``ddl``: ``--ddl`` source transactions, each adding a column and changing one row, landed
  by one ``catch_up`` with nothing else running (the normal path's cost of the DDL).

A watcher polls ``pg_stat_activity`` every 20 ms for an ``alter table`` or ``lock table``
(round 35: the DDL's lock attempt) waiting on a lock (``alter_waited_s``: first to last sight).
In ``held`` and ``verify`` a dashboard-like reader runs ``select count(*)`` of the mirror every
100 ms (``lock_timeout`` 60 s) from the column's commit until it has landed: ``reader_max_s`` is
its slowest read (a read queued behind the ALTER waits as long as the ALTER does),
``reader_base_s`` the slowest of ten reads before (the count itself).

Printed: one JSON line {"bench": "verify_ddl_wait", rows, none_s, reader_base_s, held: {hold_s,
locks [[is_verify, mode, granted, query]], reader ("ok" or "blocked"), reader_max_s, reads,
landed_after_close_s, alter_waited_s}, verify: {gated_s, verify_s, outcome, added_at_s,
landed_s, alter_waited_s, reader_max_s, reads}, ddl: {columns, ddl_s}} (``none_s`` and
``landed_s``: from the source's commit of the add column to the catch-up's end (``landed_s``:
to the column's sight in the mirror); ``landed_after_close_s``: the catch-up's end minus the
verify transaction's end; ``gated_s``: from the verify's start to the gate's release;
``verify_s``: from the release to the verify's end; ``added_at_s``: the column's commit
minus the release (a little below zero); ``outcome``: ``ok`` or what interrupted it).

Usage: python bench/verify_ddl_wait.py [--rows 1000000] [--hold 5] [--ddl 20]
       [--rounds none,held,verify,ddl,lockcost] [--lockcost 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

import streaming_views
from ingestion import catch_up, run
from streaming_views.deploy import deploy_embedded
from streaming_views.verify import APPLICATION_NAME, diff_rows
from streaming_views.viewfile import parse_view_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

VIEW = "select a.aid, a.bid, a.abalance from bench.acc a"
WAITING_DDL = ("select 1 from pg_stat_activity where wait_event_type = 'Lock' and datname ="
               " current_database() and (query ilike 'alter table%%'"
               " or query ilike 'lock table%%')")
GATED = ("select 1 from pg_stat_activity where datname = current_database() and"
         " application_name = %s and wait_event_type = 'Lock' and query ilike '%%except all%%'")
LANDED = ("select 1 from pg_attribute where attrelid = 'bench.acc'::regclass and attname = %s"
          " and not attisdropped")
LOCKS = ("select l.pid = %s, l.mode, l.granted, left(a.query, 60) from pg_locks l"
         " join pg_stat_activity a on a.pid = l.pid"
         " where l.relation = 'bench.acc'::regclass order by l.granted desc, l.pid")


def add_column(src: str, name: str) -> float:
    """Add ``name`` at the source (and change one row); return the commit's monotonic time."""
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(f"alter table acc add column {name} text")
        conn.execute("update acc set abalance = abalance + 1 where aid = 1")
    return time.monotonic()


class _Poller:
    """A thread polling landing until stopped (``_poll(conn)`` once per round)."""

    def __init__(self, land: str, every_s: float) -> None:
        self.every_s = every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(land,))
        self.thread.start()

    def _run(self, land: str) -> None:
        with psycopg.connect(land, autocommit=True) as conn:
            self._setup(conn)
            while not self.stop.is_set():
                self._poll(conn)
                self.stop.wait(self.every_s)

    def _setup(self, conn: psycopg.Connection) -> None:
        """Prepare the polling session."""

    def _poll(self, conn: psycopg.Connection) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        self.stop.set()
        self.thread.join()


class DdlWatch(_Poller):
    """Polls landing every 20 ms: for how long an ``alter table`` waited for a lock."""

    def __init__(self, land: str) -> None:
        self.seen: list[float] = []
        super().__init__(land, 0.02)

    def _poll(self, conn: psycopg.Connection) -> None:
        if conn.execute(WAITING_DDL).fetchone():
            self.seen.append(time.monotonic())

    def waited(self) -> float:
        """Stop watching; the seconds between the first and last sight of a waiting ALTER."""
        self._end()
        return round(self.seen[-1] - self.seen[0], 3) if self.seen else 0.0


class Reader(_Poller):
    """A dashboard reading the mirror every 100 ms: how long each read took."""

    def __init__(self, land: str) -> None:
        self.durations: list[float] = []
        super().__init__(land, 0.1)

    def _setup(self, conn: psycopg.Connection) -> None:
        conn.execute("set lock_timeout = '60s'")

    def _poll(self, conn: psycopg.Connection) -> None:
        start = time.monotonic()
        conn.execute("select count(*) from bench.acc").fetchone()
        self.durations.append(time.monotonic() - start)

    def result(self) -> dict[str, float]:
        """Stop reading; the slowest read and the number of reads."""
        self._end()
        return {"reader_max_s": round(max(self.durations, default=0.0), 3),
                "reads": len(self.durations)}


def reader_base(land: str) -> float:
    """The slowest of ten reads of the mirror with nothing else running."""
    with psycopg.connect(land, autocommit=True) as conn:
        times = []
        for _ in range(10):
            start = time.monotonic()
            conn.execute("select count(*) from bench.acc").fetchone()
            times.append(time.monotonic() - start)
    return round(max(times), 3)


def held_round(src: str, land: str, hold: float) -> dict[str, object]:
    """The verify's transaction held open while the mirror must add a column."""
    out: dict[str, object] = {"hold_s": hold}
    with psycopg.connect(land, autocommit=True) as verifier:
        with verifier.transaction():
            verifier.execute("set transaction isolation level repeatable read")
            diff_rows(verifier, "accounts", VIEW)
            watch = DdlWatch(land)
            t0 = add_column(src, "c_held")
            landed: dict[str, float] = {}
            ingest = threading.Thread(target=lambda: (
                catch_up(src, land, "bench", timeout_s=600),
                landed.setdefault("t", time.monotonic())))
            ingest.start()
            reader = Reader(land)
            time.sleep(hold - 0.7)
            with psycopg.connect(land, autocommit=True) as obs:
                out["locks"] = [list(r) for r in obs.execute(
                    LOCKS, (verifier.info.backend_pid,)).fetchall()]
                obs.execute("set lock_timeout = '500ms'")
                try:
                    obs.execute("select count(*) from bench.acc")
                    out["reader"] = "ok"
                except psycopg.errors.LockNotAvailable:
                    out["reader"] = "blocked"
            time.sleep(max(0.0, t0 + hold - time.monotonic()))
        closed = time.monotonic()
    ingest.join()
    out.update(reader.result())
    out["landed_after_close_s"] = round(landed["t"] - closed, 3)
    out["alter_waited_s"] = watch.waited()
    return out


class Stream:
    """``ingestion.run`` streaming the source in a thread, as in production, until ``end``."""

    def __init__(self, src: str, land: str) -> None:
        self.stop = threading.Event()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(src, land))
        self.thread.start()

    def _run(self, src: str, land: str) -> None:
        try:
            run(src, land, "bench", stop=self.stop)
        except BaseException as exc:  # said by the round, which stops waiting for it
            self.error.append(exc)
            raise

    def check(self) -> None:
        """Raise SystemExit if the stream has stopped (its error was printed)."""
        if not self.thread.is_alive():
            raise SystemExit(f"ingestion stopped streaming: {self.error[:1]}")

    def end(self) -> None:
        """Stop the stream cleanly (also when the round failed: else the process hangs)."""
        self.stop.set()
        self.thread.join()


def verify_round(src: str, land: str) -> dict[str, object]:
    """A real ``streaming_views.verify`` comparing when the column is added (held at a gate
    until the column is committed at the source: see the module's docstring)."""
    marks: dict[str, float] = {}
    outcome: list[str] = []

    def check_it() -> None:
        try:
            [result] = streaming_views.verify(land, "accounts")
        except Exception as exc:  # said by the round, which stops waiting for it
            outcome.append(f"failed: {exc!r}")
            raise
        marks["verify"] = time.monotonic()
        interrupted = getattr(result, "interrupted", None)
        outcome.append(f"interrupted by {interrupted}" if interrupted else
                       "ok" if result.ok else "differs")

    stream = Stream(src, land)
    pollers: list[_Poller] = []
    try:
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("update acc set abalance = -1 where aid = 2")
        with psycopg.connect(land, autocommit=True) as conn, psycopg.connect(land) as gate:
            while conn.execute("select abalance from bench.acc where aid = 2").fetchone()[0] \
                    != -1:
                stream.check()
                time.sleep(0.01)  # streaming
            # the gate: the comparison's first read (of live.accounts) waits for this lock
            gate.execute("lock table live.accounts in access exclusive mode")
            start = time.monotonic()
            check = threading.Thread(target=check_it)
            check.start()
            while not conn.execute(GATED, (APPLICATION_NAME,)).fetchone():
                if not check.is_alive():
                    raise SystemExit(f"the verify ended before its comparison: {outcome}")
                time.sleep(0.01)  # it waits at the gate until released: no race
            watch = DdlWatch(land)
            pollers.append(watch)
            t0 = add_column(src, "c_verify")
            gate.commit()  # open: the comparison runs while the change streams in
            released = time.monotonic()
            reader = Reader(land)
            pollers.append(reader)
            while not conn.execute(LANDED, ("c_verify",)).fetchone():
                stream.check()
                time.sleep(0.01)
            landed = time.monotonic()
        read = reader.result()
        check.join()
        if "verify" not in marks:
            raise SystemExit(f"the verify did not end: {outcome}")
    finally:
        for poller in pollers:  # threads left running would keep the process alive
            poller.stop.set()
        stream.end()
    return {"gated_s": round(released - start, 3), "verify_s": round(marks["verify"] - released, 3),
            "outcome": outcome[0], "added_at_s": round(t0 - released, 3),
            "landed_s": round(landed - t0, 3), "alter_waited_s": watch.waited(), **read}


def ddl_round(src: str, land: str, columns: int) -> dict[str, float]:
    """``columns`` source transactions adding a column and changing a row, one catch-up."""
    with psycopg.connect(src, autocommit=True) as conn:
        for n in range(columns):
            conn.execute(f"alter table acc add column d{n} int")
            conn.execute(f"update acc set d{n} = {n} where aid = {n + 1}")
    start = time.monotonic()
    catch_up(src, land, "bench", timeout_s=600)
    return {"columns": columns, "ddl_s": round(time.monotonic() - start, 3)}


def lockcost_round(land: str, n: int) -> dict[str, object]:
    """The DDL path's own cost, no reader: ``n`` times, an add column on two tables in a plain
    savepoint (main's path) and through ``DdlLocks.run`` (round 35's), alternating in one
    session; median milliseconds of each."""
    try:
        from ingestion.ddl_locks import DdlLocks
    except ImportError:
        return {"skipped": "this tree has no ingestion.ddl_locks"}
    tables = [sql.Identifier("bench", "cost"), sql.Identifier("bench", "cost_log")]
    locks = DdlLocks("bench")
    times: dict[str, list[float]] = {"savepoint_ms": [], "ddl_locks_ms": []}
    with psycopg.connect(land) as conn:
        for table in tables:
            conn.execute(sql.SQL("create table {} (id int primary key)").format(table))
        conn.commit()
        for i in range(n):
            for way in times:
                column = sql.Identifier(f"{way[0]}{i}")

                def alter(column: sql.Identifier = column) -> None:
                    for table in tables:
                        conn.execute(sql.SQL("alter table {} add column {} int").format(
                            table, column))

                start = time.perf_counter()
                if way == "savepoint_ms":
                    with conn.transaction():
                        alter()
                else:
                    locks.run(conn, "bench.cost", tables, "bench", alter)
                times[way].append((time.perf_counter() - start) * 1000)
                conn.commit()
    return {"n": n, **{way: round(statistics.median(t), 3) for way, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--ddl", type=int, default=20)
    parser.add_argument("--lockcost", type=int, default=300)
    parser.add_argument("--rounds", default="none,held,verify,ddl",
                        help="which rounds to run (comma-separated)")
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "verify_ddl_wait", "rows": args.rows}
    with bench_server() as (src, land):
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table acc (aid int primary key, bid int, abalance int,"
                         " filler char(84))")
            conn.execute("insert into acc select g, g / 100000 + 1, 0, '' from"
                         " generate_series(1, %s) g", (args.rows,))
        catch_up(src, land, "bench", timeout_s=600)
        deploy_embedded(land, [parse_view_text("accounts", VIEW)])
        rounds = args.rounds.split(",")
        if "none" in rounds:
            t0 = add_column(src, "c_none")
            catch_up(src, land, "bench", timeout_s=600)
            out["none_s"] = round(time.monotonic() - t0, 3)
            out["reader_base_s"] = reader_base(land)
        if "held" in rounds:
            out["held"] = held_round(src, land, args.hold)
        if "verify" in rounds:
            out["verify"] = verify_round(src, land)
        if "ddl" in rounds:
            out["ddl"] = ddl_round(src, land, args.ddl)
        if "lockcost" in rounds:
            out["lockcost"] = lockcost_round(land, args.lockcost)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
