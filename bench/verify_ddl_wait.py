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
* ``verify``: ``streaming_views.verify`` runs in a thread; the column is added once its
  comparison query (``except all``) runs.

A watcher polls ``pg_stat_activity`` every 20 ms for an ``alter table`` waiting on a lock
(``alter_waited_s``: first to last sight).

Printed: one JSON line {"bench": "verify_ddl_wait", rows, none_s, held: {hold_s, locks
[[is_verify, mode, granted, query]], reader ("ok" or "blocked"), landed_after_close_s,
alter_waited_s}, verify: {verify_s, added_at_s, landed_s, alter_waited_s}} (``none_s`` and
``landed_s``: from the source's commit of the add column to the catch-up's end;
``landed_after_close_s``: the catch-up's end minus the verify transaction's end).

Usage: python bench/verify_ddl_wait.py [--rows 1000000] [--hold 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psycopg

import streaming_views
from ingestion import catch_up
from streaming_views.deploy import deploy_embedded
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

VIEW = "select a.aid, a.bid, a.abalance from bench.acc a"
WAITING_DDL = ("select 1 from pg_stat_activity where wait_event_type = 'Lock' and datname ="
               " current_database() and query ilike 'alter table%%'")
COMPARING = ("select 1 from pg_stat_activity where datname = current_database() and state ="
             " 'active' and query ilike '%%except all%%' and pid <> pg_backend_pid()")
LOCKS = ("select l.pid = %s, l.mode, l.granted, left(a.query, 60) from pg_locks l"
         " join pg_stat_activity a on a.pid = l.pid"
         " where l.relation = 'bench.acc'::regclass order by l.granted desc, l.pid")


def add_column(src: str, name: str) -> float:
    """Add ``name`` at the source (and change one row); return the commit's monotonic time."""
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(f"alter table acc add column {name} text")
        conn.execute("update acc set abalance = abalance + 1 where aid = 1")
    return time.monotonic()


class DdlWatch:
    """Polls landing every 20 ms: for how long an ``alter table`` waited for a lock."""

    def __init__(self, land: str) -> None:
        self.seen: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(land,))
        self.thread.start()

    def _run(self, land: str) -> None:
        with psycopg.connect(land, autocommit=True) as conn:
            while not self.stop.is_set():
                if conn.execute(WAITING_DDL).fetchone():
                    self.seen.append(time.monotonic())
                time.sleep(0.02)

    def waited(self) -> float:
        """Stop watching; the seconds between the first and last sight of a waiting ALTER."""
        self.stop.set()
        self.thread.join()
        return round(self.seen[-1] - self.seen[0], 3) if self.seen else 0.0


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
    out["landed_after_close_s"] = round(landed["t"] - closed, 3)
    out["alter_waited_s"] = watch.waited()
    return out


def verify_round(src: str, land: str) -> dict[str, float]:
    """A real ``streaming_views.verify`` running when the column is added."""
    marks: dict[str, float] = {}
    start = time.monotonic()
    check = threading.Thread(target=lambda: (streaming_views.verify(land, "accounts"),
                                             marks.setdefault("verify", time.monotonic())))
    check.start()
    with psycopg.connect(land, autocommit=True) as conn:
        while not conn.execute(COMPARING).fetchone():
            time.sleep(0.01)
    watch = DdlWatch(land)
    t0 = add_column(src, "c_verify")
    catch_up(src, land, "bench", timeout_s=600)
    landed = time.monotonic()
    check.join()
    return {"verify_s": round(marks["verify"] - start, 3), "added_at_s": round(t0 - start, 3),
            "landed_s": round(landed - t0, 3), "alter_waited_s": watch.waited()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hold", type=float, default=5.0)
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
        t0 = add_column(src, "c_none")
        catch_up(src, land, "bench", timeout_s=600)
        out["none_s"] = round(time.monotonic() - t0, 3)
        out["held"] = held_round(src, land, args.hold)
        out["verify"] = verify_round(src, land)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
