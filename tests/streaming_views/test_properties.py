"""Property tests: random multi-row writes keep every supported construct equal to its query.

All views are deployed on the same generic tables (not the demo schema); each test draws random
sequences of multi-row INSERTs, UPSERTs, UPDATEs, DELETEs, TRUNCATEs and multi-table writable
CTEs, and checks the oracle ``(live EXCEPT ALL query) UNION ALL (query EXCEPT ALL live)`` after
every statement.
"""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.streaming_views.conftest import assert_equal, deploy_text

TABLES = """
create schema p;
create table p.t1 (id int primary key, g int, h text, v int, b boolean, ts timestamptz,
                   amount numeric(10, 2));
create table p.t2 (k int primary key, region text);
create table p.t3 (k int primary key, label text);
"""

VIEWS = {
    "bag_projection": """
        select t.g, coalesce(t.h, 'none') as h2,
               case when t.v > 5 then 'big' when t.v is null then null else 'small' end as size,
               t.v * 2 + 1 as v2, (t.amount / 3)::numeric(12, 4) as third,
               cast(t.v as text) as vtext
        from p.t1 t where t.v is distinct from 3""",
    "distinct_rows": "select distinct t.g, t.h from p.t1 t",
    "count_sum_avg": """
        select t.g, count(*) as n, count(t.v) as nv, sum(t.v) as sv, avg(t.v) as av,
               sum(t.amount) as samount, avg(t.amount) as aamount
        from p.t1 t group by t.g""",
    "min_max": """
        select t.h, min(t.v) as mn, max(t.v) as mx, max(t.ts) as last_ts, min(t.h) as mh
        from p.t1 t group by t.h""",
    "distinct_aggs": """
        select t.g, count(distinct t.v) as dv, sum(distinct t.v) as sdv,
               count(distinct t.h) filter (where t.b) as dh
        from p.t1 t group by t.g""",
    "bool_filter_having": """
        select t.g, bool_and(t.b) as ba, bool_or(t.b) as bo, count(*) filter (where t.b) as nb,
               sum(t.v) filter (where t.v > 2) as sv, max(t.v) filter (where t.b) as mb
        from p.t1 t group by t.g having count(*) >= 2 and sum(t.v) > 0""",
    "join_aggregate": """
        select j.region, count(*) as n, sum(t.v) as sv, min(t.v) as mn, avg(t.amount) as aa
        from p.t1 t join p.t2 j on j.k = t.g where t.v > -2 group by j.region""",
    "three_way_join": """
        select t.id, j.region, l.label from p.t1 t join p.t2 j on j.k = t.g
        join p.t3 l on l.k = j.k where t.v > 0""",
    "global_aggregate": """
        select count(*) as n, sum(t.v) as sv, max(t.v) as mx, bool_or(t.b) as bo from p.t1 t""",
    "time_buckets": """
        select date_bin('10 minutes', t.ts, '2000-01-01') as w,
               date_trunc('hour', t.ts at time zone 'UTC') as hr, count(*) as n,
               sum(t.amount) as total
        from p.t1 t where t.ts is not null group by 1, 2""",
    "union_all_subquery": """
        select u.g, count(*) as n, sum(u.v) as sv, max(u.v) as mx
        from (select t.g, t.v from p.t1 t where t.b
              union all
              select j.k, t.v + 100 from p.t2 j join p.t1 t on t.g = j.k) u
        group by u.g""",
    "subquery_bag": """
        select x.g, x.v2 from (select t.g, t.v * 2 as v2 from p.t1 t) x where x.v2 > 0""",
    "comma_join_keys": """
        select t.g as key, l.label, count(*) as n from p.t1 t, p.t3 l
        where l.k = t.g group by t.g, l.label""",
}

small_int = st.one_of(st.none(), st.integers(0, 4))
rows = st.lists(st.tuples(
    st.integers(0, 25), small_int, st.sampled_from([None, "a", "b", "c"]),
    st.one_of(st.none(), st.integers(-3, 9)), st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.integers(0, 50)), st.one_of(st.none(), st.integers(0, 999))),
    min_size=1, max_size=6)
ids = st.lists(st.integers(0, 25), min_size=1, max_size=8)
ops = st.one_of(
    st.tuples(st.just("insert"), rows),
    st.tuples(st.just("upsert"), rows),
    st.tuples(st.just("update"), ids, st.sampled_from(["g", "h", "v", "b", "shift"]),
              small_int),
    st.tuples(st.just("delete"), ids),
    st.tuples(st.just("truncate")),
    st.tuples(st.just("dim"), st.integers(0, 4), st.sampled_from([None, "x", "y"]),
              st.sampled_from(["upsert", "delete"])),
    st.tuples(st.just("cte"), st.integers(0, 4), ids),
)

INSERT = ("insert into p.t1 select * from unnest(%s::int[], %s::int[], %s::text[], %s::int[], "
          "%s::bool[], %s::int[], %s::int[]) as r(id, g, h, v, b, m, c)")


def _row_columns(batch):
    dedup = {r[0]: r for r in batch}
    return [list(c) for c in zip(*dedup.values(), strict=True)]


def apply(conn: psycopg.Connection, op: tuple) -> None:
    """Run one random statement."""
    kind = op[0]
    if kind in {"insert", "upsert"}:
        cols = _row_columns(op[1])
        select = INSERT.replace("select * from", "select id, g, h, v, b, "
                                "timestamptz '2026-01-01' + m * interval '1 minute', c / 10.0 from")
        tail = (" on conflict (id) do nothing" if kind == "insert" else
                " on conflict (id) do update set g = excluded.g, v = excluded.v, h = excluded.h")
        conn.execute(select + tail, cols)
    elif kind == "update":
        _, targets, column, value = op
        if column == "shift":
            conn.execute("update p.t1 set v = v + 1, amount = amount + 0.5, "
                         "ts = ts + interval '7 minutes' where id = any(%s)", (targets,))
        elif column == "h":
            conn.execute("update p.t1 set h = %s where id = any(%s)",
                         (None if value is None else "abc"[value % 3], targets))
        elif column == "b":
            conn.execute("update p.t1 set b = %s where id = any(%s)",
                         (None if value is None else value % 2 == 0, targets))
        else:
            conn.execute(f"update p.t1 set {column} = %s where id = any(%s)", (value, targets))
    elif kind == "delete":
        conn.execute("delete from p.t1 where id = any(%s)", (op[1],))
    elif kind == "truncate":
        conn.execute("truncate p.t1")
    elif kind == "dim":
        _, key, region, how = op
        if how == "upsert":
            conn.execute("insert into p.t2 values (%s, %s) on conflict (k) do update set "
                         "region = excluded.region", (key, region))
            conn.execute("insert into p.t3 values (%s, %s) on conflict (k) do update set "
                         "label = excluded.label", (key, region or "none"))
        else:
            conn.execute("delete from p.t2 where k = %s", (key,))
    elif kind == "cte":
        _, key, targets = op
        conn.execute("with a as (update p.t2 set region = coalesce(region, '') || 'z' "
                     "where k = %s returning k) update p.t1 set g = %s where id = any(%s)",
                     (key, key, targets))


@pytest.fixture(scope="module")
def deployed(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute(TABLES)
    for name, text in VIEWS.items():
        assert deploy_text(module_db, name, text) == "created"
    return module_db


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_random_writes_keep_view_equal_to_query(deployed: str, conn: psycopg.Connection,
                                                name: str) -> None:
    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.lists(ops, min_size=1, max_size=8))
    def run(sequence: list[tuple]) -> None:
        conn.execute("truncate p.t1, p.t2, p.t3")
        conn.execute("insert into p.t2 values (0, 'x'), (1, 'y'), (2, null), (3, 'x')")
        conn.execute("insert into p.t3 values (0, 'l0'), (1, 'l1'), (3, 'l3')")
        assert_equal(conn, name, VIEWS[name])
        for op in sequence:
            apply(conn, op)
            assert_equal(conn, name, VIEWS[name])

    run()
