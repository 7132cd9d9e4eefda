"""Issue 11: DDL that takes a base table's lock before its commit's sweep (TRUNCATE, a partition
detached, dropped or attached beside a default partition) never deadlocks with a writer already
committing (streaming_views/lockorder.py: the sweep locks the tables its applies read before any
view's lock).

Each case forces the interleaving that used to deadlock, without sleeps: the DDL runs first
and keeps its lock; a writer of *another* base table of the view commits, and the test waits
until pg_locks shows that commit waiting for the DDL's table; then the DDL's transaction
commits (its sweep needs the view's lock)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

JOIN = ("select s.region, count(*) as n, sum(o.amount) as total from {s}.orders o "
        "join {s}.stores s on s.store = o.store group by s.region")
OUTER = "select count(*) as regions, sum(z.n) as n, max(z.total) as top from live.{s}_z z"

TABLES = ("create table {s}.stores (store int primary key, region text); "
          "insert into {s}.stores select g, 'r' || (g % 2) from generate_series(0, 4) g; ")
PLAIN = ("create table {s}.orders (id int primary key, store int, amount int); "
         "insert into {s}.orders select g, g % 5, g from generate_series(1, 100) g")
PARTITIONED = ("create table {s}.orders (id int, store int, amount int) partition by range (id); "
               "create table {s}.o1 partition of {s}.orders for values from (0) to (50); "
               "create table {s}.o2 partition of {s}.orders for values from (50) to (1000); "
               "create table {s}.od partition of {s}.orders default; "
               "create table {s}.o3 (id int, store int, amount int); "
               "insert into {s}.o3 select g, g % 5, g from generate_series(1000, 1010) g; "
               "insert into {s}.orders select g, g % 5, g from generate_series(1, 100) g")

# case: (orders DDL, the DDL, the table the writer's commit waits for, views over views)
CASES = {
    "truncate": (PLAIN, "truncate {s}.orders", "{s}.orders", False),
    "truncate_read_by_an_outer_view": (PLAIN, "truncate {s}.orders", "{s}.orders", True),
    "truncate_partition": (PARTITIONED, "truncate {s}.o1", "{s}.o1", False),
    "detach_partition": (PARTITIONED, "alter table {s}.orders detach partition {s}.o2",
                         "{s}.orders", False),
    "drop_partition": (PARTITIONED, "drop table {s}.o2", "{s}.orders", False),
    # ATTACH locks the parent in SHARE UPDATE EXCLUSIVE mode (readers pass), the default
    # partition in ACCESS EXCLUSIVE mode (its rows are checked against the new bound)
    "attach_partition": (PARTITIONED, "alter table {s}.orders attach partition {s}.o3 "
                         "for values from (1000) to (2000)", "{s}.od", False),
}


def _wait_until_waiting(conn: psycopg.Connection, pid: int, table: str) -> None:
    """Poll pg_locks until backend ``pid`` waits for a lock on ``table`` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if conn.execute("select exists (select 1 from pg_locks where pid = %s and not granted "
                        "and relation = %s::regclass)", (pid, table)).fetchone()[0]:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock on {table}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_ddl_lock_then_writer_commit_never_deadlocks(module_db: str, conn: psycopg.Connection,
                                                     case: str) -> None:
    orders, ddl, waited, outer = CASES[case]
    s = f"lo_{case}"
    conn.execute(f"drop schema if exists {s} cascade; create schema {s}; "
                 + TABLES.format(s=s) + orders.format(s=s))
    assert deploy_text(module_db, f"{s}_z", JOIN.format(s=s)) == "created"
    if outer:  # its name sorts first: the sweep locks both views' rows, name order
        assert deploy_text(module_db, f"{s}_a", OUTER.format(s=s)) == "created"
    errors: list[BaseException] = []
    with psycopg.connect(module_db) as ddl_conn, psycopg.connect(module_db) as writer:
        for c in (ddl_conn, writer):  # a deadlock is found (and one side cancelled) at once
            c.execute("set deadlock_timeout = '20ms'")
            c.commit()
        ddl_conn.execute(ddl.format(s=s))  # holds its table lock until it commits
        writer.execute(f"insert into {s}.stores values (7, 'r1'), (8, 'r2')")
        writer.execute(f"update {s}.stores set region = 'r9' where store = 1")
        pid = writer.info.backend_pid

        def commit() -> None:
            try:
                writer.commit()  # its sweep reads orders: waits for the DDL's lock
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=commit)
        thread.start()
        try:
            _wait_until_waiting(conn, pid, waited.format(s=s))
            ddl_conn.commit()  # its sweep: the view's lock, rebuild
        except BaseException as exc:
            errors.append(exc)
        thread.join()
    assert not errors, errors
    assert_equal(conn, f"{s}_z", JOIN.format(s=s))
    if outer:
        assert_equal(conn, f"{s}_a", OUTER.format(s=s))
