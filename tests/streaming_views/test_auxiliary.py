"""Auxiliary state: distinct-value multiplicity tables and base-table key indexes.

Property tests drive random multi-row writes (duplicates, NULL values and keys, FILTER, deletes
to zero, truncates) through views with ``count/sum/avg(DISTINCT ...)`` and check after every
statement that the view equals its query AND that each auxiliary table holds exactly the
query's (group, value, multiplicity) multiset — no zero or stale rows.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from streaming_views.catalog import read_catalog
from streaming_views.deploy import deploy_embedded, rebuild
from streaming_views.viewfile import load_views, parse_view_text
from tests.streaming_views.conftest import assert_equal, deploy_text

TABLES = """
create schema a;
create table a.ev (id int primary key, doc jsonb, kind text, v int, note text);
"""

VIEWS = {
    "carts": """
        select e.doc ->> 'cart' as cart,
               count(distinct e.v) filter (where e.kind = 'add') as nv,
               count(distinct e.doc ->> 'product') filter (where e.kind = 'add') as np,
               min(e.v) as mn, max(e.note) as mx
        from a.ev as e where e.kind in ('add', 'checkout') group by 1
        having not bool_or(e.kind = 'checkout')""",
    "sums": """
        select e.kind, count(distinct e.note) as dn, sum(distinct e.v) as sv,
               avg(distinct e.v) as av, count(*) as n
        from a.ev as e group by e.kind""",
    "global_distinct": "select count(distinct e.v) as dv, sum(distinct e.v) as sv from a.ev e",
}

# (view, aggregate index) -> the query of its multiset: group keys, value, multiplicity
MULTISETS = {
    ("carts", 0): "select e.doc ->> 'cart', e.v, count(*) from a.ev e where e.kind in ('add', "
                  "'checkout') and e.kind = 'add' and e.v is not null group by 1, 2",
    ("sums", 1): "select e.kind, e.v, count(*) from a.ev e where e.v is not null group by 1, 2",
    ("global_distinct", 0): "select e.v, count(*) from a.ev e where e.v is not null group by 1",
}

value = st.one_of(st.none(), st.integers(0, 3))
row = st.tuples(st.integers(0, 15), st.one_of(st.none(), st.integers(0, 2)), value,
                st.sampled_from(["add", "checkout", "view", None]), value)
ops = st.one_of(
    st.tuples(st.just("insert"), st.lists(row, min_size=1, max_size=6)),
    st.tuples(st.just("update"), st.lists(st.integers(0, 15), min_size=1, max_size=6), value),
    st.tuples(st.just("retag"), st.lists(st.integers(0, 15), min_size=1, max_size=6),
              st.sampled_from(["add", "checkout", None])),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 15), min_size=1, max_size=8)),
    st.tuples(st.just("delete_all")),
    st.tuples(st.just("truncate")),
)


def apply(conn: psycopg.Connection, op: tuple) -> None:
    """Run one random statement on ``a.ev``."""
    if op[0] == "insert":
        rows = list({r[0]: r for r in op[1]}.values())
        for r in rows:
            conn.execute(
                "insert into a.ev values (%s, case when %s::int is null then '{}'::jsonb else "
                "jsonb_build_object('cart', %s::text, 'product', %s::int) end, %s, %s, %s) "
                "on conflict (id) do update set v = excluded.v, note = excluded.note",
                (r[0], r[1], None if r[1] is None else f"c{r[1]}", r[2], r[3], r[2],
                 None if r[4] is None else f"n{r[4]}"))
    elif op[0] == "update":
        conn.execute("update a.ev set v = %s where id = any(%s)", (op[2], op[1]))
    elif op[0] == "retag":
        conn.execute("update a.ev set kind = %s where id = any(%s)", (op[2], op[1]))
    elif op[0] == "delete":
        conn.execute("delete from a.ev where id = any(%s)", (op[1],))
    elif op[0] == "delete_all":
        conn.execute("delete from a.ev")
    else:
        conn.execute("truncate a.ev")


def aux_table(conn: psycopg.Connection, view: str, index: int) -> sql.Composable:
    entry = read_catalog(conn, target="embedded", name=view)[0]
    return sql.Identifier("tidemark_state", f"{entry.suffix}__d{index}")


def assert_multiset(conn: psycopg.Connection, view: str, index: int) -> None:
    """The auxiliary table equals the query's (group, value, multiplicity) multiset."""
    table = aux_table(conn, view, index)
    # every column but the last (__d, the change last added to the multiplicity)
    kept = [r[:-1] for r in
            conn.execute(sql.SQL("select * from {} order by 1, 2").format(table)).fetchall()]
    assert all(r[-1] > 0 for r in kept), f"zero or negative multiplicities kept: {kept}"
    expected = conn.execute(MULTISETS[(view, index)]).fetchall()  # type: ignore[arg-type]
    assert sorted(map(str, kept)) == sorted(map(str, expected))


@pytest.fixture(scope="module")
def deployed(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute(TABLES)
    for name, text in VIEWS.items():
        assert deploy_text(module_db, name, text) == "created"
    return module_db


def test_distinct_multisets_follow_random_writes(deployed: str, conn: psycopg.Connection):
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(ops, min_size=1, max_size=10))
    def run(sequence: list[tuple]) -> None:
        conn.execute("truncate a.ev")
        for op in sequence:
            apply(conn, op)
            for name, text in VIEWS.items():
                assert_equal(conn, name, text)
            for view, index in MULTISETS:
                assert_multiset(conn, view, index)

    run()


def test_catalog_tracks_aux_tables_and_base_index(deployed: str, conn: psycopg.Connection):
    entry = read_catalog(conn, target="embedded", name="carts")[0]
    assert entry.aux_tables == [f"tidemark_state.{entry.suffix}__d0",
                                f"tidemark_state.{entry.suffix}__d1"]
    assert len(entry.base_indexes) == 1 and entry.base_indexes[0].startswith("a.tidemark_live_")
    definition = conn.execute("select pg_get_indexdef(%s::regclass)",
                              (entry.base_indexes[0],)).fetchone()[0]
    assert "((doc ->> 'cart'::text))" in definition
    # the recompute of a dirty group (min/max after deleting the extreme) uses that index
    conn.execute("insert into a.ev select i, jsonb_build_object('cart', 'c' || (i % 500)), "
                 "'add', i, 'n' from generate_series(1000, 30999) i")
    conn.execute("analyze a.ev")
    index_name = entry.base_indexes[0].split(".", 1)[1]
    plan = "\n".join(r[0] for r in conn.execute(
        "explain select min(e.v) from a.ev e where (e.doc ->> 'cart') = 'c7'").fetchall())
    assert index_name in plan
    conn.execute("delete from a.ev where id = 1007")  # c7's current min
    assert_equal(conn, "carts", VIEWS["carts"])
    conn.execute("truncate a.ev")
    assert_equal(conn, "carts", VIEWS["carts"])


def test_redeploy_and_prune_drop_aux_tables_and_unused_index(
        deployed: str, conn: psycopg.Connection):
    conn.execute("insert into a.ev values (1, '{\"cart\": \"x\"}', 'add', 1, 'n')")
    old = read_catalog(conn, target="embedded", name="carts")[0]
    [result] = deploy_embedded(deployed, [parse_view_text("carts", "-- v2\n" + VIEWS["carts"])])
    assert result.action == "replaced"
    new = read_catalog(conn, target="embedded", name="carts")[0]
    assert new.suffix != old.suffix and new.base_indexes == old.base_indexes
    for table in old.aux_tables:
        assert conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is None
    for table in new.aux_tables:
        assert conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is not None
    assert_equal(conn, "carts", VIEWS["carts"])
    # --prune with only the other views left: carts' tables and its base index go
    others = [parse_view_text(n, t) for n, t in VIEWS.items() if n != "carts"]
    actions = {r.name: r.action for r in deploy_embedded(deployed, others, prune=True)}
    assert actions["carts"] == "dropped"
    for name in [*new.aux_tables, *new.base_indexes]:
        assert conn.execute("select to_regclass(%s)", (name,)).fetchone()[0] is None
    assert deploy_text(deployed, "carts", VIEWS["carts"]) == "created"


def test_rebuild_refills_aux_tables(deployed: str, conn: psycopg.Connection) -> None:
    conn.execute("truncate a.ev")
    conn.execute("alter table a.ev disable trigger user")
    try:
        conn.execute("insert into a.ev values (1, '{\"cart\": \"y\"}', 'add', 2, 'n'), "
                     "(2, '{\"cart\": \"y\"}', 'add', 2, 'm'), (3, '{}', 'view', 5, null)")
    finally:
        conn.execute("alter table a.ev enable trigger user")
    for name in VIEWS:
        rebuild(deployed, name)
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)
    for view, index in MULTISETS:
        assert_multiset(conn, view, index)


def test_concurrent_writers_on_the_same_group_and_values(deployed: str,
                                                         conn: psycopg.Connection) -> None:
    conn.execute("truncate a.ev")
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            with psycopg.connect(deployed, autocommit=True) as c:
                for i in range(40):
                    rid = worker * 1000 + i
                    c.execute("insert into a.ev values (%s, '{\"cart\": \"same\", \"product\": "
                              "1}', 'add', %s, 'n')", (rid, i % 3))
                    if i % 4 == 3:
                        c.execute("delete from a.ev where id in (%s, %s)", (rid, rid - 2))
                    if i % 10 == 9:
                        c.execute("update a.ev set v = v + 1 where id = %s", (rid - 1,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)
    for view, index in MULTISETS:
        assert_multiset(conn, view, index)


def test_shipped_distinct_views_keep_no_recompute(deployed: str) -> None:
    from streaming_views.compiler import compile_view
    shipped = {v.name: v for v in load_views()}
    with psycopg.connect(deployed, autocommit=True) as c:
        c.execute("create schema if not exists shop")
        c.execute("create table if not exists shop.app_events (outbox_id bigint primary key, "
                  "event_id uuid, event_type text, customer_id bigint, payload jsonb, "
                  "event_time timestamptz)")  # keyed like the demo's: @retention needs a key
        cv = compile_view(c, shipped["active_carts"])
    assert [r.kind for r in cv.rules if r.call.distinct] == ["distinct", "distinct"]
    assert "count(DISTINCT" not in cv.recompute_sql()


JOIN_VIEW = """
    select u.store_id, sum(u.refund) as refunds, count(*) as n
    from (select o.store_id, 0 as refund from j.orders as o
          union all
          select o.store_id, p.amount as refund from j.payments as p
          join j.orders as o on o.order_id = p.order_id where p.kind = 'refund') as u
    group by u.store_id"""


def test_a_join_view_indexes_the_join_column_each_batch_probes(deployed: str,
                                                               conn: psycopg.Connection):
    # live.daily_store_revenue at 30 days x 20,000 orders: each batch of orders was joined
    # with a full scan of payments (0.4 s a batch); payments(order_id) had no index.
    conn.execute("create schema j; create table j.orders (order_id int primary key, "
                 "store_id int); create table j.payments (payment_id int primary key, "
                 "order_id int, kind text, amount int)")
    conn.execute("insert into j.orders select i, i % 40 from generate_series(1, 20000) i")
    conn.execute("insert into j.payments select i, i, case when i % 20 = 0 then 'refund' "
                 "else 'charge' end, i % 7 from generate_series(1, 20000) i")
    assert deploy_text(deployed, "join_refunds", JOIN_VIEW) == "created"
    entry = read_catalog(conn, target="embedded", name="join_refunds")[0]
    [index] = entry.base_indexes  # orders.order_id is the primary key already
    assert index.startswith("j.tidemark_live_")
    assert "(order_id)" in conn.execute("select pg_get_indexdef(%s::regclass)",
                                        (index,)).fetchone()[0]
    conn.execute("analyze j.payments")
    conn.execute("create temp table changed as select * from j.orders where order_id <= 5")
    conn.execute("analyze changed")
    plan = "\n".join(r[0] for r in conn.execute(
        "explain select o.store_id, p.amount from j.payments as p join changed as o"
        " on o.order_id = p.order_id where p.kind = 'refund'").fetchall())
    assert index.split(".", 1)[1] in plan, plan
    conn.execute("update j.orders set store_id = store_id + 1 where order_id <= 100")
    conn.execute("delete from j.payments where order_id between 50 and 60")
    assert_equal(conn, "join_refunds", JOIN_VIEW)
    # deployed by a version without join indexes: the next deploy, unchanged, adds it
    conn.execute(sql.SQL("drop index {}").format(sql.Identifier(*index.split("."))))
    conn.execute("update tidemark.views set base_indexes = '{}' where name = 'join_refunds'")
    assert deploy_text(deployed, "join_refunds", JOIN_VIEW) == "unchanged"
    assert read_catalog(conn, target="embedded", name="join_refunds")[0].base_indexes == [index]
    assert conn.execute("select to_regclass(%s)", (index,)).fetchone()[0] is not None
    actions = {r.name: r.action for r in deploy_embedded(
        deployed, [parse_view_text(n, t) for n, t in VIEWS.items()], prune=True)}
    assert actions["join_refunds"] == "dropped"
    assert conn.execute("select to_regclass(%s)", (index,)).fetchone()[0] is None
