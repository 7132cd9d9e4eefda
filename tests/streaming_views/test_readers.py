"""Readers of an inner live view at run time (streaming_views/readers.py): a rebuild after
TRUNCATE locks the inner view and its readers in one name order, and an inner view the DDL
guard breaks breaks its readers, naming both views and the redeploy order."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from streaming_views import deploy
from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_equal, deploy_text, run_writers, write_views

# The reader's name sorts before the inner view's: name order is reader, then inner.
INNER = ("select o.store, count(*) as n, sum(o.amount) as total from rt.orders o "
         "join rt.stores s on s.store = o.store group by o.store")
OUTER = "select count(*) as stores, sum(z.n) as n, max(z.total) as top from live.z_inner z"


@pytest.fixture()
def tables(conn: psycopg.Connection) -> None:
    conn.execute("drop schema if exists rt cascade; create schema rt; "
                 "create table rt.orders (id int primary key, store int, amount int); "
                 "create table rt.stores (store int primary key, region text)")
    conn.execute("insert into rt.orders select g, g % 5, g from generate_series(1, 100) g; "
                 "insert into rt.stores select g, 'r' from generate_series(0, 4) g")


def _check(conn: psycopg.Connection) -> None:
    assert_equal(conn, "z_inner", INNER)
    assert_equal(conn, "a_outer", OUTER)


def test_truncate_rebuild_locks_the_readers_in_name_order(module_db: str, tables: None,
                                                         conn: psycopg.Connection) -> None:
    """The TRUNCATE's rebuild of z_inner used to lock z_inner, then (its reader's apply) a_outer;
    a writer of rt.stores locks a_outer then z_inner (both pending at once): a deadlock, one of
    the two transactions cancelled. Made deterministic with SET CONSTRAINTS ALL IMMEDIATE,
    which runs z_inner's apply (the rebuild) at once and postpones a_outer's to the commit."""
    deploy_text(module_db, "z_inner", INNER)
    deploy_text(module_db, "a_outer", OUTER)
    errors: list[BaseException] = []
    with psycopg.connect(module_db) as w1:
        w1.execute("set deadlock_timeout = '100ms'")
        w1.execute("truncate rt.orders")
        w1.execute("set constraints all immediate")  # z_inner rebuilt now: its lock is held

        def writer() -> None:
            try:
                with psycopg.connect(module_db, autocommit=True) as w2:
                    w2.execute("set deadlock_timeout = '100ms'")
                    with w2.transaction():
                        w2.execute("insert into rt.stores values (7, 'new')")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(1.0)  # the writer's commit now waits for a lock the TRUNCATE holds
        try:
            w1.commit()
        except psycopg.Error as exc:
            errors.append(exc)
        thread.join()
    assert not errors, errors
    _check(conn)


def test_truncate_of_an_inner_base_table_under_concurrent_writers(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    deploy_text(module_db, "z_inner", INNER)
    deploy_text(module_db, "a_outer", OUTER)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(module_db, autocommit=True) as w:
            for i in range(30):
                truncate = seed == 0 and i % 6 == 5
                work = [("insert into rt.orders values (%s, %s, %s) on conflict (id) do "
                         "update set store = excluded.store",
                         (rng.randint(1, 300), rng.randint(0, 6), rng.randint(1, 9))),
                        ("insert into rt.stores values (%s, 'r') on conflict (store) "
                         "do update set region = 'r' || %s",
                         (rng.randint(0, 6), rng.randint(0, 3)))]
                # orders before stores, as the TRUNCATE of orders: in the other order
                # the writers deadlock among themselves, view or not (seen on 15)
                chosen = rng.choice([work, work[:1], work[1:]])
                with w.transaction():  # no retry: the sweep locks tables before rows
                    if truncate:
                        w.execute("truncate rt.orders")
                    for stmt, args in chosen:
                        w.execute(stmt, args)

    errors = run_writers(writer)
    assert not errors, errors
    _check(conn)


def test_guard_breaks_the_readers_of_a_broken_view(module_db: str, tables: None,
                                                   conn: psycopg.Connection,
                                                   tmp_path: Path) -> None:
    """Fresh names: g_inner, read by g_outer, read by g_top."""
    inner, outer = INNER, OUTER.replace("live.z_inner", "live.g_inner")
    top = "select max(a.n) as most from live.g_outer a"
    views = write_views(tmp_path / "v", g_inner=inner, g_outer=outer, g_top=top)
    assert {r.name: r.action for r in deploy(module_db, views)} == {
        "g_inner": "created", "g_outer": "created", "g_top": "created"}
    conn.execute("alter table rt.orders rename column amount to amt")  # g_inner reads it
    conn.execute("insert into rt.orders values (1000, 1, 5)")  # writes go on
    with pytest.raises(psycopg.Error, match=r"live view g_inner is broken: column amount of "
                       r"rt.orders was renamed to amt"):
        conn.execute("select * from live.g_inner").fetchall()
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select * from live.g_outer").fetchall()
    message = str(raised.value)
    assert "live view g_outer is broken: it reads live view g_inner, which is broken (column " \
           "amount of rt.orders was renamed to amt)" in message
    assert "rebuilds live.g_inner first and live.g_outer after it" in message
    with pytest.raises(psycopg.Error, match=r"live view g_top is broken: it reads live view "
                       r"g_outer, which is broken \(it reads live view g_inner"):
        conn.execute("select * from live.g_top").fetchall()
    status = {s.name: s.status for s in list_views(module_db)}
    assert status["g_outer"].startswith("broken") and "g_inner" in status["g_outer"]
    fixed = inner.replace("o.amount", "o.amt")
    views = write_views(tmp_path / "v", g_inner=fixed, g_outer=outer, g_top=top)
    assert {r.name: r.action for r in deploy(module_db, views)} == {
        "g_inner": "replaced", "g_outer": "rebuilt", "g_top": "rebuilt"}
    conn.execute("insert into rt.orders values (1001, 2, 50)")
    assert_equal(conn, "g_inner", fixed)
    assert_equal(conn, "g_outer", outer)
    assert_equal(conn, "g_top", top)
    assert conn.execute("select tidemark.live_problem('g_top')").fetchone()[0] is None


def test_problem_of_a_reader_names_its_inner_view_without_the_guard(
        module_db: str, tables: None, conn: psycopg.Connection) -> None:
    """Without the guard (its event triggers disabled), deploy/verify/list find the reader's
    problem through its inner view."""
    deploy_text(module_db, "z_inner", INNER)
    deploy_text(module_db, "a_outer", OUTER)
    conn.execute("alter event trigger tidemark_live_ddl_end disable")
    try:
        conn.execute("alter table rt.orders rename column amount to amt")
    finally:
        conn.execute("alter event trigger tidemark_live_ddl_end enable")
    problem = conn.execute("select tidemark.live_problem('a_outer')").fetchone()[0]
    assert problem == ("it reads live view z_inner, which no longer follows its base tables "
                       "(column amount of rt.orders was renamed to amt); redeploy order: fix "
                       "z_inner, then 'tidemark views deploy' rebuilds live.z_inner first and "
                       "live.a_outer after it")
    conn.execute("alter table rt.orders rename column amt to amount")
    assert conn.execute("select tidemark.live_problem('a_outer')").fetchone()[0] is None
