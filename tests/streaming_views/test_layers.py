"""Live views over live views: the outer view follows the inner one's changes exactly."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.compiler import compile_view
from streaming_views.errors import UnsupportedViewError
from streaming_views.verify import verify
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.conftest import assert_equal, deploy_text, run_writers

INNER = "select o.store, o.day, count(*) as n, sum(o.amount) as total from l.orders o " \
        "group by o.store, o.day"
OUTER = "select d.store, count(*) as days, sum(d.total) as total, max(d.n) as busiest " \
        "from live.daily d group by d.store"
JOINED = "select d.store, s.region, d.day, d.total from live.daily d " \
         "join l.stores s on s.store = d.store where d.n > 1"


@pytest.fixture(scope="module")
def stack(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema l; create table l.orders (id int primary key, store int, "
                 "day date, amount numeric); create table l.stores (store int primary key, "
                 "region text)")
    conn.execute("insert into l.orders select g, g % 5, date '2026-01-01' + g % 7, g "
                 "from generate_series(1, 200) g")
    conn.execute("insert into l.stores select g, 'r' || g % 2 from generate_series(0, 4) g")
    assert deploy_text(module_db, "daily", INNER) == "created"
    assert deploy_text(module_db, "per_store", OUTER) == "created"
    assert deploy_text(module_db, "busy_days", JOINED) == "created"
    return module_db


def _check(conn: psycopg.Connection) -> None:
    assert_equal(conn, "daily", INNER)
    assert_equal(conn, "per_store", OUTER)
    assert_equal(conn, "busy_days", JOINED)


def test_outer_views_follow_inserts_updates_deletes(stack: str, conn: psycopg.Connection) -> None:
    _check(conn)
    conn.execute("insert into l.orders values (1000, 9, '2026-02-01', 5)")  # a new group
    _check(conn)
    conn.execute("update l.orders set amount = amount * 2 where id % 3 = 0")
    _check(conn)
    conn.execute("delete from l.orders where store = 9")  # the group disappears
    _check(conn)
    conn.execute("update l.orders set store = 9 where id between 10 and 40")
    _check(conn)


def test_one_transaction_changes_inner_base_and_outer_base(stack: str,
                                                           conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("update l.stores set region = 'x' || store")
        conn.execute("insert into l.orders select 2000 + g, g % 5, '2026-01-02', 1 "
                     "from generate_series(1, 30) g")
        conn.execute("insert into l.stores values (9, 'nine')")
    _check(conn)
    with conn.transaction():  # outer base table first, then the inner one's
        conn.execute("delete from l.stores where store = 1")
        conn.execute("delete from l.orders where store in (1, 2)")
    _check(conn)


def test_rollback_and_truncate(stack: str, conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute("insert into l.orders values (3000, 1, '2026-01-01', 1)")
        conn.execute("select 1 / 0")
    _check(conn)
    conn.execute("truncate l.orders")
    _check(conn)
    conn.execute("insert into l.orders select g, g % 4, date '2026-01-01' + g % 3, g "
                 "from generate_series(1, 50) g")
    _check(conn)


def test_verify_compares_both(stack: str) -> None:
    results = {r.name: r for r in verify(stack)}
    assert results["daily"].ok and results["per_store"].ok and results["busy_days"].ok


def test_redeploy_of_the_inner_view_rebuilds_its_readers(stack: str,
                                                         conn: psycopg.Connection) -> None:
    from streaming_views.deploy import deploy_embedded
    changed = INNER.replace("count(*) as n", "count(*) + 1 as n")
    results = deploy_embedded(stack, [parse_view_text("daily", changed),
                                      parse_view_text("per_store", OUTER),
                                      parse_view_text("busy_days", JOINED)])
    assert {r.name: r.action for r in results} == {
        "daily": "replaced", "per_store": "rebuilt", "busy_days": "rebuilt"}
    conn.execute("insert into l.orders values (5000, 2, '2026-01-01', 7)")
    assert_equal(conn, "daily", changed)
    assert_equal(conn, "per_store", OUTER)
    assert_equal(conn, "busy_days", JOINED)
    assert conn.execute("select tidemark.live_problem('per_store')").fetchone()[0] is None
    again = deploy_embedded(stack, [parse_view_text("daily", changed),
                                    parse_view_text("per_store", OUTER),
                                    parse_view_text("busy_days", JOINED)])
    assert {r.action for r in again} == {"unchanged"}
    deploy_text(stack, "daily", INNER)  # back, for the other tests
    _check(conn)


def test_a_bag_view_over_a_view(stack: str, conn: psycopg.Connection) -> None:
    deploy_text(stack, "amounts", "select o.store, o.amount from l.orders o where o.amount > 3")
    text = "select a.store, count(*) as n, sum(a.amount) as s from live.amounts a " \
           "group by a.store"
    deploy_text(stack, "amount_stats", text)
    conn.execute("insert into l.orders select 7000 + g, 1, '2026-01-01', 10 "
                 "from generate_series(1, 5) g")  # duplicates in the bag
    assert_equal(conn, "amount_stats", text)
    conn.execute("delete from l.orders where id in (7001, 7002)")
    assert_equal(conn, "amount_stats", text)


def test_reading_a_view_that_is_not_a_live_view_is_refused(stack: str,
                                                           conn: psycopg.Connection) -> None:
    conn.execute("create view live.plain as select 1 as a")
    with pytest.raises(UnsupportedViewError, match=r"live\.plain \(not a healthy deployed live "
                       r"view\) is not supported"):
        compile_view(conn, parse_view_text("bad", "select x.a from live.plain x"))


def test_concurrent_writers_never_deadlock(stack: str, conn: psycopg.Connection) -> None:
    """The reader's name sorts before the inner view's: a transaction changing only the inner
    view's table reaches the reader after the inner view, one changing both tables has both
    pending at once — the readers noted by the log functions keep one lock order."""
    import random

    deploy_text(stack, "z_inner", "select o.store, count(*) as n from l.orders o group by 1")
    outer = ("select s.region, sum(z.n) as n from live.z_inner z join l.stores s "
             "on s.store = z.store group by s.region")
    deploy_text(stack, "a_outer", outer)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(stack, autocommit=True) as w:
            for _ in range(25):
                with w.transaction():
                    work = [("update l.orders set store = %s where id = %s",
                             (rng.randint(0, 5), rng.randint(1, 50))),
                            ("update l.stores set region = %s where store = %s",
                             (f"r{rng.randint(0, 2)}", rng.randint(0, 5)))]
                    rng.shuffle(work)
                    for stmt, args in work[:rng.randint(1, 2)]:
                        w.execute(stmt, args)

    errors = run_writers(writer)
    assert not errors, errors
    assert_equal(conn, "z_inner", "select o.store, count(*) as n from l.orders o group by 1")
    assert_equal(conn, "a_outer", outer)



def test_a_commit_maintains_its_views_without_jit(stack: str, conn: psycopg.Connection) -> None:
    """Before PostgreSQL 18 the apply's disabled sequential scans (``enable_seqscan = off``)
    cost 1e10 each in a plan that cannot avoid one (per_store's recompute: its IS NOT DISTINCT
    FROM branch), far above ``jit_above_cost``: each commit JIT-compiled its maintenance anew,
    0.4-0.6 s of a 2 ms commit on Debian's 15 (round 38, y38). The apply runs with ``jit = off``
    (on 18 a disabled scan no longer adds to the cost: only the settings tell)."""
    # A store of its own (the writers of the tests before may have changed any other row):
    # its busiest day loses an order, so per_store's max(n) is recomputed.
    conn.execute("insert into l.orders values (9101, 77, '2026-03-01', 1), "
                 "(9102, 77, '2026-03-01', 1), (9103, 77, '2026-03-02', 1)")
    notes: list[str] = []
    with psycopg.connect(stack, autocommit=True) as w:
        w.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        w.execute("load 'auto_explain'")  # each plan (nested: the apply's too) as a notice
        for setting, value in (("auto_explain.log_min_duration", "0"),
                               ("auto_explain.log_nested_statements", "on"),
                               ("auto_explain.log_analyze", "on"), ("client_min_messages", "log")):
            w.execute("select set_config(%s, %s, false)", (setting, value))
        w.execute("delete from l.orders where id = 9101")  # per_store recomputes
    recomputes = [n for n in notes if "UPDATE \"tidemark_state\".\"per_store__" in n]
    assert recomputes, notes
    assert not [n for n in notes if "\nJIT:" in n], recomputes
    configs = [r[0] for r in conn.execute(
        "select p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'tidemark_state' and p.proname like '%\\_\\_apply'")]
    assert configs and all("jit=off" in (c or []) for c in configs), configs


def test_rebuild_of_an_outer_view(stack: str, conn: psycopg.Connection) -> None:
    from streaming_views.deploy import rebuild
    suffix = conn.execute("select suffix from tidemark.views where name = 'per_store'")
    conn.execute(f'delete from tidemark_state."{suffix.fetchone()[0]}"')  # damaged
    rebuild(stack, "per_store")
    _check(conn)
