"""Change logs: a large statement is logged as one batch row (an array per column) and applied
exactly at commit, with the types users have, beside small statements, savepoints and tables
whose columns cannot be batched."""

from __future__ import annotations

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

VIEW = """select d.region, f.g, count(*) as n, sum(f.x) as sx, avg(f.x) as ax, min(f.ts) as mts,
       max(f.dt) as mdt, sum(f.iv) as siv, count(f.j) as cj, max(f.g) as mg
from b.f f join b.d d on d.g = f.g
where f.x is distinct from 0
group by d.region, f.g"""

ROWS = ("select i, 'g' || (i %% 7), case when i %% 11 = 0 then null when i %% 13 = 0 then 'NaN' "
        "when i %% 17 = 0 then 0 else (i %% 97) / 7.0 end, "
        "case when i %% 5 = 0 then null "
        "else timestamptz '2026-01-01 00:00Z' + i * interval '1 min' end, "
        "date '2026-01-01' + i %% 40, (i %% 9) * interval '1 hour', "
        "case when i %% 3 = 0 then null else jsonb_build_object('i', i) end "
        "from generate_series(%s::int, %s::int) i")


def _log(conn: psycopg.Connection, name: str, j: int) -> str:
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (name,)).fetchone()[0]
    return f'tidemark_state."{suffix}__l{j}"'


def _batch_rows(conn: psycopg.Connection, log: str) -> int:
    return conn.execute(f"select count(*) from {log} where __tm_sign = 2").fetchone()[0]


@pytest.fixture(scope="module")
def batch_view(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema b; create table b.d (g text collate \"C\" primary key, "
                 "region text); create table b.f (id int primary key, g text collate \"C\", "
                 "x numeric, ts timestamptz, dt date, iv interval, j jsonb)")
    conn.execute("insert into b.d select 'g' || i, 'r' || (i % 3) from generate_series(0, 6) i")
    deploy_text(module_db, "batch_view", VIEW)
    return _log(conn, "batch_view", 0)


def test_large_statements_are_logged_as_one_batch_row(conn: psycopg.Connection,
                                                      batch_view: str) -> None:
    with conn.transaction():
        conn.execute(f"insert into b.f {ROWS}", (1, 3000))
        assert _batch_rows(conn, batch_view) == 1
    left = conn.execute(f"select count(*) from {batch_view} where __tm_tx <> '0'").fetchone()
    assert left == (0,)
    assert_equal(conn, "batch_view", VIEW)
    conn.execute("update b.f set x = x + 1, ts = ts + interval '1 day' where id <= 2500")
    assert_equal(conn, "batch_view", VIEW)
    conn.execute("delete from b.f where id %% 2 = 0", ())
    assert_equal(conn, "batch_view", VIEW)


def test_batches_beside_small_statements_and_the_other_table(conn: psycopg.Connection,
                                                             batch_view: str) -> None:
    with conn.transaction():
        conn.execute(f"insert into b.f {ROWS}", (10001, 12000))  # large
        conn.execute("update b.d set region = 'moved' where g = 'g3'")  # small, other table
        conn.execute(f"insert into b.f {ROWS}", (12001, 12003))  # small
        conn.execute("update b.f set x = 0 where id between 10001 and 11500")  # most leave
        # a large statement of which only a few rows pass the view's filter
        conn.execute("update b.f set iv = iv * 2 where id between 10001 and 11505")
    assert_equal(conn, "batch_view", VIEW)
    with conn.transaction():
        conn.execute("update b.d set region = 'r9'")  # every group moves
        conn.execute("update b.f set g = 'g1' where id > 10000")
    assert_equal(conn, "batch_view", VIEW)


def test_a_batch_rolled_back_to_a_savepoint(conn: psycopg.Connection, batch_view: str) -> None:
    class Undo(Exception):
        pass

    with conn.transaction():
        conn.execute("update b.f set x = x * 3 where id > 10000")
        with pytest.raises(Undo), conn.transaction():
            conn.execute("delete from b.f where id > 5")
            raise Undo
        conn.execute("update b.f set dt = dt + 1 where id < 20")
    assert_equal(conn, "batch_view", VIEW)
    with conn.transaction():
        with pytest.raises(Undo), conn.transaction():
            conn.execute("delete from b.f")
            raise Undo
    assert_equal(conn, "batch_view", VIEW)


ARRAYS = "select a.g, count(*) as n, count(a.tags) as ct, max(a.tags) as mt from b.a a group by a.g"


def test_array_columns_are_logged_row_by_row(module_db: str, conn: psycopg.Connection) -> None:
    """``unnest`` would flatten an array column: such a table keeps one log row per row."""
    conn.execute("create table b.a (id int primary key, g int, tags int[])")
    deploy_text(module_db, "array_view", ARRAYS)
    log = _log(conn, "array_view", 0)
    columns = conn.execute("select count(*) from pg_attribute where attrelid = %s::regclass "
                           "and attname like '\\_\\_tm\\_b%%'", (log,)).fetchone()
    assert columns == (0,)
    conn.execute("insert into b.a select i, i %% 5, case when i %% 4 = 0 then null "
                 "else array[i, i + 1] end from generate_series(1, 3000) i", ())
    assert_equal(conn, "array_view", ARRAYS)
    conn.execute("update b.a set tags = tags || 7 where id > 100")
    conn.execute("delete from b.a where id %% 3 = 0", ())
    assert_equal(conn, "array_view", ARRAYS)


PARTS = "select e.day, count(*) as n, sum(e.v) as sv from b.e e group by e.day"


def test_batches_through_partitions_and_prepare_transaction(module_db: str,
                                                            conn: psycopg.Connection) -> None:
    """A large statement into the parent and into a partition straight, and one in a prepared
    transaction (its batch row applied at PREPARE, under the view's lock)."""
    conn.execute("create table b.e (id int, day date, v int) partition by range (day);"
                 "create table b.e1 partition of b.e for values from ('2026-01-01') to "
                 "('2026-02-01'); create table b.e2 partition of b.e for values from "
                 "('2026-02-01') to ('2026-03-01')")
    deploy_text(module_db, "parts_view", PARTS)
    conn.execute("insert into b.e select i, date '2026-01-01' + i %% 59, i "
                 "from generate_series(1, 3000) i", ())
    conn.execute("insert into b.e2 select i, date '2026-02-01' + i %% 28, -i "
                 "from generate_series(1, 2000) i", ())
    assert_equal(conn, "parts_view", PARTS)
    conn.execute("begin")
    conn.execute("update b.e1 set v = v + 1")
    conn.execute("prepare transaction 'p11_batch'")
    conn.execute("commit prepared 'p11_batch'")
    assert_equal(conn, "parts_view", PARTS)
    conn.execute("delete from b.e where v < 0")
    assert_equal(conn, "parts_view", PARTS)
