"""min/max over a live view (streaming_views/layers.py, auxiliary.py): the outer view's recompute
of a dirty group looks its rows up in an index on the inner view's state table, not by scanning
the inner view; the index follows a redeploy of the inner view."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.catalog import read_catalog
from streaming_views.compiler import compile_view
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.conftest import assert_equal, deploy_text

INNER = ("select o.store, o.day, count(*) as n, sum(o.amount) as total from lr.orders o "
         "group by o.store, o.day")
# grouped by the inner view's second key: its unique key index (store, day) does not lead with it
OUTER = ("select d.day, max(d.total) as top, min(d.n) as fewest, count(*) as stores "
         "from live.daily d group by d.day")
BY_EXPR = ("select d.store % 10 as decile, max(d.total) as top from live.daily d "
           "group by d.store % 10")


@pytest.fixture(scope="module")
def stack(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema lr; create table lr.orders (id int primary key, store int, "
                 "day date, amount int)")
    conn.execute("insert into lr.orders select g, g % 400, date '2026-01-01' + g % 50, g % 997 "
                 "from generate_series(1, 60000) g")
    assert deploy_text(module_db, "daily", INNER) == "created"
    assert deploy_text(module_db, "by_day", OUTER) == "created"
    assert deploy_text(module_db, "by_decile", BY_EXPR) == "created"
    return module_db


def _recompute_plan(conn: psycopg.Connection, name: str, text: str) -> str:
    cv = compile_view(conn, parse_view_text(name, text))
    return "\n".join(r[0] for r in conn.execute(f"explain {cv.recompute_sql()}").fetchall())


def _state_index(conn: psycopg.Connection, name: str) -> str:
    entry = read_catalog(conn, target="embedded", name=name)[0]
    inner = read_catalog(conn, target="embedded", name="daily")[0]
    assert len(entry.base_indexes) == 1, entry.base_indexes
    assert entry.base_indexes[0].startswith("tidemark_state.tidemark_live_"), entry.base_indexes
    owner = conn.execute("select indrelid::regclass::text from pg_index where indexrelid = "
                         "%s::regclass", (entry.base_indexes[0],)).fetchone()[0]
    assert owner == f"tidemark_state.{inner.suffix}"
    return entry.base_indexes[0].split(".", 1)[1]


@pytest.mark.parametrize(("name", "text"), [("by_day", OUTER), ("by_decile", BY_EXPR)])
def test_the_recompute_of_an_outer_group_is_an_index_scan(stack: str, conn: psycopg.Connection,
                                                          name: str, text: str) -> None:
    index = _state_index(conn, name)
    plan = _recompute_plan(conn, name, text)
    assert f"Index Scan using {index}" in plan or f"Bitmap Index Scan on {index}" in plan, plan
    lines = plan.splitlines()
    inner = read_catalog(conn, target="embedded", name="daily")[0].suffix
    for i, line in enumerate(lines):  # a scan of the inner view only for a NULL key's group
        if f"Seq Scan on {inner}" in line:
            assert "One-Time Filter" in lines[i - 1] and "IS NULL" in lines[i - 1], plan
    # the extreme of a group leaves: the group is recomputed, exactly
    top = conn.execute("select o.id from lr.orders o order by o.amount desc, o.id limit 50")
    conn.execute("delete from lr.orders where id = any(%s)", ([r[0] for r in top],))
    conn.execute("update lr.orders set amount = 0 where id % 1000 = 7")
    assert_equal(conn, "daily", INNER)
    assert_equal(conn, name, text)


def test_the_index_follows_a_redeploy_of_the_inner_view(stack: str,
                                                       conn: psycopg.Connection) -> None:
    old = _state_index(conn, "by_day")
    changed = INNER.replace("count(*) as n", "count(o.id) as n")
    results = deploy_embedded(stack, [parse_view_text("daily", changed),
                                      parse_view_text("by_day", OUTER),
                                      parse_view_text("by_decile", BY_EXPR)])
    assert {r.name: r.action for r in results} == {
        "daily": "replaced", "by_day": "rebuilt", "by_decile": "rebuilt"}
    new = _state_index(conn, "by_day")
    assert new != old
    assert conn.execute("select to_regclass(%s)", (f"tidemark_state.{old}",)).fetchone()[0] \
        is None
    assert f"{new}" in _recompute_plan(conn, "by_day", OUTER)
    conn.execute("delete from lr.orders where day = date '2026-01-03' and amount > 900")
    assert_equal(conn, "daily", changed)
    assert_equal(conn, "by_day", OUTER)
    assert_equal(conn, "by_decile", BY_EXPR)
