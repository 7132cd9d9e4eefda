"""A lone one-row UPDATE that changes only columns read by the view's sums is logged as a net
pair and applied from its new row alone, without the aggregate (:mod:`streaming_views.netpair`);
any change of a column that decides the row's group, join, WHERE or window falls back to the
pair, and so does anything else the transaction logs for the view."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from streaming_views.expiry import tick
from tests.streaming_views.conftest import deploy_text

JOINED = """select d.region, f.g, count(*) as n, sum(f.amount) as total, avg(f.amount) as mean,
       count(f.note) as notes, count(*) filter (where f.flag) as flagged,
       sum(f.qty) as qty, sum(f.iv) as span
from np.joined f join np.dim d on d.k = f.k
where f.status <> 'x'
group by d.region, f.g"""
SINGLE = """select f.g, count(*) as n, sum(f.amount) as total, sum(f.qty) as qty
from np.single f group by f.g"""
# a float read as numeric(20, 4): -0 and NaN (sum(float8) itself is refused)
FLOAT = """select f.g, count(*) as n, sum(f.x::numeric(20, 4)) as total from np.floaty f
group by f.g"""
# a sum of an unconstrained numeric keeps its display scale by windows: the pair
SCALED = """select f.g, count(*) as n, sum(f.n) as total from np.scaled f group by f.g"""
# max() is not a sum: the pair
EXTREME = """select f.g, max(f.amount) as top, sum(f.amount) as total
from np.extreme f group by f.g"""
WINDOW = """select f.g, count(*) as n, sum(f.amount) as total from np.timed f
where mz_now() >= f.at and mz_now() < f.at + interval '5 minutes' group by f.g"""
# np.multi has two rows of most k: a row meets several (the aggregate stays, zero sums folded)
FANOUT = """select f.g, m.tag, count(*) as n, sum(f.amount) as total, sum(m.w) as w,
       sum((f.amount * m.w)::numeric(14, 2)) as weighted
from np.fanout f join np.multi m on m.k = f.k group by f.g, m.tag"""
LEFT = """select f.g, count(*) as n, sum(f.amount) as total, count(m.w) as ws, sum(m.w) as w,
       count(*) filter (where m.k is null) as unmatched
from np.lefty f left join np.multi m on m.k = f.k where f.status <> 'x' group by f.g"""
# the NULL-extended side's delta recounts: the pair
RIGHT = """select m.tag, count(*) as n, sum(f.amount) as total
from np.multi m left join np.righty f on f.k = m.k group by m.tag"""
VIEWS = {"np_joined": JOINED, "np_single": SINGLE, "np_floaty": FLOAT, "np_extreme": EXTREME,
         "np_timed": WINDOW, "np_scaled": SCALED, "np_fanout": FANOUT, "np_lefty": LEFT,
         "np_righty": RIGHT}
NET = {"np_joined": ["amount", "note", "flag", "qty", "iv"], "np_single": ["amount", "qty"],
       "np_timed": ["amount"], "np_floaty": ["x"], "np_extreme": [], "np_scaled": [],
       "np_fanout": ["amount"], "np_lefty": ["amount"], "np_righty": []}
BASE = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema np; create table np.dim (k int primary key, region text)")
    conn.execute("insert into np.dim select i, 'r' || (i % 3) from generate_series(0, 9) i")
    conn.execute("create table np.multi (k int, tag text, w int)")
    conn.execute("insert into np.multi select i % 7, 't' || (i % 2), i "
                 "from generate_series(0, 11) i")
    for name in ("joined", "single", "floaty", "extreme", "timed", "scaled", "fanout", "lefty",
                 "righty"):
        conn.execute(f"create table np.{name} (id int primary key, k int, g int, "
                     "amount numeric(12, 2), qty int, note text, flag boolean, status text, "
                     "x float8, at timestamptz, n numeric, iv interval)")
        conn.execute(f"insert into np.{name} select i, i %% 10, i %% 3, i * 1.5, i, 'n' || i, "
                     "i %% 2 = 0, 'ok', i * 0.5, %s::timestamptz + i * interval '1 second', "
                     "i * 0.25, i * interval '1 hour' from generate_series(1, 30) i", (BASE,))
    deploy_text(module_db, "np_clock", "select d.k from np.dim d where d.k = 0")
    tick(module_db, BASE + timedelta(seconds=100))  # rows 1..30 inside the 5-minute window
    for name, text in VIEWS.items():
        deploy_text(module_db, name, text)
    return module_db


def _query(name: str) -> str:
    return VIEWS[name].replace("mz_now()", "(select now from tidemark.live_clock)")


def assert_same_text(conn: psycopg.Connection, name: str) -> None:
    """The view equals its query row for row, compared by text (display scales, -0)."""
    live, want = (conn.execute(f"select coalesce(array_agg(t::text order by t::text), '{{}}') "
                               f"from ({q}) t").fetchone()[0]
                  for q in (f"select * from live.{name}", _query(name)))
    assert live == want, f"live.{name}: {live} != {want}"


def _table(name: str) -> str:
    return "np." + name.removeprefix("np_")


def _log_columns(conn: psycopg.Connection, name: str) -> list[str]:
    suffix = conn.execute("select suffix from tidemark.views where name = %s and "
                          "target = 'embedded'", (name,)).fetchone()[0]
    return [r[0] for r in conn.execute(
        "select a.attname from pg_attribute a where a.attrelid = %s::regclass "
        "and a.attnum > 0 and a.attname like '\\_\\_tm\\_v%%' order by a.attnum",
        (f"tidemark_state.{suffix}__l0",))]


def _net_statement(conn: psycopg.Connection, name: str) -> str | None:
    suffix = conn.execute("select suffix from tidemark.views where name = %s and "
                          "target = 'embedded'", (name,)).fetchone()[0]
    body = conn.execute("select prosrc from pg_proc where proname = %s",
                        (f"{suffix}__apply",)).fetchone()[0]
    found = re.search(r"__tm_sign = 1\)[^\n]*", body)
    return found.group(0) if found else None


def test_only_sums_of_aggregated_only_columns_take_the_net_pair(
        db: str, conn: psycopg.Connection) -> None:
    """The log holds the old values of exactly the columns read only by sums; the net
    statement has no GROUP BY and no aggregate where a row meets at most one row, else one
    sum per sum of those columns; a view with max() keeps the pair."""
    for name, columns in NET.items():
        assert len(_log_columns(conn, name)) == len(columns), name
        statement = _net_statement(conn, name)
        assert (statement is not None) == bool(columns), name
        if statement is None:
            continue
        sums = len(re.findall(r"\bsum\(", statement.split(" FROM ")[0], re.IGNORECASE))
        if name in ("np_fanout", "np_lefty"):  # the sums reading amount (and their counts)
            assert " GROUP BY " in statement and sums > 0, name
        else:
            assert " GROUP BY " not in statement and sums == 0, name


UPDATES = [
    # aggregated-only columns: net pairs
    "update {t} set amount = amount + 1.25 where id = 3",
    "update {t} set amount = null where id = 4",  # a value leaves the sum and the count
    "update {t} set amount = 7.500 where id = 4",  # ... and comes back with its own scale
    "update {t} set qty = qty * 2, note = null where id = 5",
    "update {t} set flag = not flag, note = 'z' where id = 6",
    "update {t} set amount = 'NaN' where id = 7",  # the group recomputed
    "update {t} set amount = 2 where id = 7",
    "update {t} set n = 'Infinity' where id = 8",  # np_scaled's sum
    "update {t} set n = 1.000, iv = '1 day' where id = 8",
    "update {t} set n = 'NaN', iv = null where id = 8",
    "update {t} set n = 0, iv = '24 hours' where id = 8",
    "update {t} set x = '-0', amount = amount where id = 9",  # x: np_floaty's sum
    "update {t} set x = 'NaN' where id = 10",
    "update {t} set x = 1.5 where id = 10",
    # a deciding column changes too: the pair
    "update {t} set g = g + 1, amount = amount + 1 where id = 11",  # the group
    "update {t} set k = 9, amount = 3 where id = 12",  # the join
    "update {t} set k = 42, qty = 1 where id = 13",  # meets no dimension row
    "update {t} set status = 'x', amount = 1 where id = 14",  # leaves WHERE
    "update {t} set status = 'ok', amount = 2 where id = 14",  # comes back
    "update {t} set at = at + interval '1 hour', amount = 5 where id = 15",  # leaves the window
    "update {t} set at = at - interval '1 hour', amount = 6 where id = 15",  # comes back
    "update {t} set g = null, amount = null where id = 16",
    "update {t} set g = 1 where id = 16",
]


@pytest.mark.parametrize("update", UPDATES)
def test_one_row_updates_stay_exact(db: str, conn: psycopg.Connection, update: str) -> None:
    for name in VIEWS:
        conn.execute(update.format(t=_table(name)))
        assert_same_text(conn, name)


def test_a_net_pair_then_more_in_the_transaction(db: str, conn: psycopg.Connection) -> None:
    """After the net pair the transaction writes another row of the table, the dimension, or
    the same row again: the whole log is applied as pairs."""
    for name in VIEWS:
        t = _table(name)
        for more in (f"update {t} set amount = amount * 3 where id = 20",
                     f"insert into {t} (id, k, g, amount, qty, status, x, at) "
                     f"values (100, 1, 1, 4, 4, 'ok', 1, '{BASE.isoformat()}')",
                     "update np.dim set region = 'r7' where k = 1",
                     f"update {t} set g = 2 where id = 21"):
            with conn.transaction():
                conn.execute(f"update {t} set amount = amount + 10 where id = 20")
                conn.execute(more)
            assert_same_text(conn, name)
            conn.execute(f"delete from {t} where id = 100")
        with conn.transaction():  # a second view's pending write first
            conn.execute("update np.single set amount = amount + 1 where id = 22")
            conn.execute(f"update {t} set amount = amount + 1 where id = 23")
        assert_same_text(conn, name)
        assert_same_text(conn, "np_single")
