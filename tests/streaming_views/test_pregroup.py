"""A large delta of one table of a join, summed per join partner before the join
(streaming_views/pregroup.py): exact for every additive aggregate, with NULLs, NaN, intervals,
FILTER, conditions across tables, key changes and deletes; views of another shape keep the
plain statement and stay exact too."""

from __future__ import annotations

import random

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

GROUPED = """select d.region, f.g, count(*) as n, count(f.x) as nx, sum(f.x) as sx, avg(f.x) as ax,
       sum(f.iv) as siv, avg(f.k) as ak, sum(f.k) as sk, bool_and(f.ok) as all_ok,
       bool_or(f.ok) as any_ok, count(*) filter (where f.k > 5) as big,
       sum(f.x) filter (where f.ok) as sx_ok
from p.f f join p.d d on d.g = f.g
where f.x is distinct from 0 and (d.active or f.k > d.limit_k)
group by d.region, f.g"""

COMMA = """select f.g, d.region, count(*) as n, sum(f.k) as sk
from p.f f, p.d d
where d.g = f.g and f.k <> 3
group by f.g, d.region"""

EXTREME = """select d.region, count(*) as n, min(f.x) as mx, sum(f.k) as sk, avg(f.y) as ay
from p.f f join p.d d on d.g = f.g
group by d.region"""

TEXT_KEY = """select d.region, f.y::text as yt, count(*) as n, sum(f.k) as sk
from p.f f join p.d d on d.g = f.g
group by d.region, f.y::text"""

VIEWS = {"pg_grouped": GROUPED, "pg_comma": COMMA, "pg_extreme": EXTREME, "pg_text_key": TEXT_KEY}

ROWS = ("select i, 'g' || (i %% 9), case when i %% 11 = 0 then null when i %% 13 = 0 then 'NaN' "
        "when i %% 17 = 0 then 0 else (i %% 97) / 7.0 end, (i %% 9) * interval '1 hour', "
        "i %% 10, case when i %% 7 = 0 then null else i %% 4 <> 0 end, "
        "case when i %% 5 = 0 then null else i / 3.0 end "
        "from generate_series(%s::int, %s::int) i")


def _apply_source(conn: psycopg.Connection, name: str) -> str:
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (name,)).fetchone()[0]
    return conn.execute("select prosrc from pg_proc where proname = %s",
                        (f"{suffix}__apply",)).fetchone()[0]


def _check(conn: psycopg.Connection) -> None:
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


@pytest.fixture(scope="module")
def views(module_db: str, conn: psycopg.Connection) -> None:
    conn.execute("create schema p; create table p.d (g text primary key, region text, "
                 "active boolean, limit_k int); create table p.f (id int primary key, g text, "
                 "x numeric(12, 3), iv interval, k int, ok boolean, y numeric)")
    conn.execute("insert into p.d select 'g' || i, 'r' || (i % 3), i % 4 <> 1, i "
                 "from generate_series(0, 7) i")  # g8 has no partner: its rows never count
    for name, text in VIEWS.items():
        deploy_text(module_db, name, text)


def test_the_grouped_path_is_used_where_it_applies(conn: psycopg.Connection,
                                                   views: None) -> None:
    assert "__pg0" in _apply_source(conn, "pg_grouped")
    assert "__pg0" in _apply_source(conn, "pg_comma")
    assert "__pg1" not in _apply_source(conn, "pg_grouped")  # d: the sums read f
    # min, and avg over an unconstrained numeric (its display scale): not sums of rows
    assert "__pg" not in _apply_source(conn, "pg_extreme")
    # grouping by an unconstrained numeric would merge 1.0 and 1.00 (its text differs)
    assert "__pg" not in _apply_source(conn, "pg_text_key")


def test_large_statements_of_one_table(conn: psycopg.Connection, views: None) -> None:
    conn.execute(f"insert into p.f {ROWS}", (1, 4000))
    _check(conn)
    # values change, rows move between join partners (and to g8, which has none), NULLs
    conn.execute("update p.f set x = x + 1, k = k + 3, g = 'g' || ((id * 7) %% 10) "
                 "where id <= 3000", ())
    _check(conn)
    conn.execute("update p.f set ok = not ok, iv = iv * 2, y = y * 10 where id %% 3 = 0", ())
    _check(conn)
    conn.execute("update p.f set y = round(y, 1) * 1.00 where id %% 5 = 1", ())
    _check(conn)
    conn.execute("delete from p.f where id %% 2 = 0", ())
    _check(conn)
    conn.execute("update p.d set active = not active, limit_k = limit_k + 2")  # small, d
    _check(conn)


def test_grouped_delta_beside_other_changes_in_one_transaction(conn: psycopg.Connection,
                                                               views: None) -> None:
    with conn.transaction():
        conn.execute(f"insert into p.f {ROWS}", (10001, 13000))
        conn.execute("update p.f set x = 'NaN' where id between 10001 and 10003")  # small
        conn.execute("delete from p.f where id between 12001 and 13000")  # large
    _check(conn)
    with conn.transaction():  # both tables changed: the plain inclusion-exclusion
        conn.execute("update p.f set k = k + 1 where id > 10000")
        conn.execute("update p.d set region = 'moved' where g in ('g1', 'g2')")
    _check(conn)
    with conn.transaction():  # a large delta that cancels out: groups left unchanged
        conn.execute("update p.f set k = k + 1 where id > 10000")
        conn.execute("update p.f set k = k - 1 where id > 10000")
    _check(conn)
    conn.execute("delete from p.f")
    _check(conn)
    rows = conn.execute("select count(*) from live.pg_grouped").fetchone()
    assert rows == (0,)


def test_a_nan_added_and_removed_in_a_new_group_of_a_large_delta(conn: psycopg.Connection,
                                                                 views: None) -> None:
    """A numeric(p, s) sum keeps NaN in the sum (no counter): a group new to the state whose
    partial sums are NaN is recomputed (the NaN row was added and removed)."""
    conn.execute("delete from p.f where g = 'g7'")
    conn.execute("update p.d set active = true where g = 'g7'")  # (earlier tests flip it)
    _check(conn)
    with conn.transaction():
        conn.execute("insert into p.f select 200000 + i, 'g7', case when i = 1 then 'NaN' "
                     "else i / 8.0 end, null, i %% 10, true, null "
                     "from generate_series(1, 3000) i", ())
        conn.execute("delete from p.f where id = 200001")
    assert "__pg0" in _apply_source(conn, "pg_grouped")
    assert conn.execute("select sx from live.pg_grouped where g = 'g7'").fetchone()[0] > 0
    _check(conn)
    conn.execute("delete from p.f where g = 'g7'")
    _check(conn)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_large_statements(conn: psycopg.Connection, views: None, seed: int) -> None:
    """Seeded random large statements (more rows than a batch's threshold) on either table,
    alone or two in a transaction, the oracle after each transaction."""
    rng = random.Random(seed)
    base = 100_000 * seed
    conn.execute(f"insert into p.f {ROWS}", (base, base + 2999))
    updates = {"x": ["x * -1", "null"], "g": ["'g' || ((id + {n}) %% 10)", "null"],
               "k": ["(k + {n}) %% 12"], "ok": ["not ok"], "iv": ["iv + interval '{n} min'"],
               "y": ["y + 0.5"]}
    for _ in range(6):
        with conn.transaction():
            for _ in range(rng.choice([1, 1, 2])):
                lo = base + rng.randrange(0, 1500)
                if rng.random() < 0.15:
                    conn.execute("update p.d set limit_k = %s, active = not active "
                                 "where g = %s", (rng.randrange(10), f"g{rng.randrange(9)}"))
                elif rng.random() < 0.2:
                    conn.execute("delete from p.f where id between %s and %s",
                                 (lo, lo + 1200))
                else:
                    sets = ", ".join(f"{c} = {rng.choice(updates[c])}" for c in rng.sample(
                        sorted(updates), 2)).format(n=rng.randrange(1, 9))
                    conn.execute(f"update p.f set {sets} where id between %s and %s",
                                 (lo, lo + 1400))
        _check(conn)
