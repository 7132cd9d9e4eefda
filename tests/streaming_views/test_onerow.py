"""The one-row write's maintenance: the statements it runs, and exactness where they were cut.

The statements a write runs in its triggers are counted with ``auto_explain`` (every nested
statement's plan sent to the client as a NOTICE), not timed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from streaming_views.expiry import tick
from streaming_views.session import NAMES_ONLY as ALL_NAMES
from streaming_views.session import PINNED as ALL_PINNED
from streaming_views.session import SCS
from tests.streaming_views.conftest import assert_equal, deploy_text

# What a function whose text holds no backslash pins: no standard_conforming_strings.
NAMES_ONLY = tuple(n for n in ALL_NAMES if n != SCS)
PINNED = {n: v for n, v in ALL_PINNED.items() if n != SCS}

LEFT = """select o.store_id, count(*) as n, sum(o.amount) as amount, count(p.id) as paid,
       count(o.note) as notes, count(o.at) as dated
from one.orders o left join one.payments p on p.order_id = o.id
group by o.store_id"""
FLOATS = "select f.k, count(*) as n, max(f.x) as x from one.floats f group by f.k"
SLIDING = """select e.kind, count(*) as n, sum(e.amount) as amount from one.events e
where e.amount > 0 and mz_now() >= e.ts and mz_now() < e.ts + interval '5 minutes'
group by e.kind"""
T0 = datetime(2031, 5, 1, 12, tzinfo=UTC)


def _plans(conn: psycopg.Connection, statement: str) -> list[str]:
    """The plans of every statement ``statement`` runs, its triggers' and its commit's."""
    plans: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        plans.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    conn.execute("load 'auto_explain'")
    conn.execute("set auto_explain.log_min_duration = 0; set auto_explain.log_level = notice;"
                 "set auto_explain.log_nested_statements = on")
    try:
        conn.execute(statement)
    finally:
        conn.execute("reset auto_explain.log_min_duration")
        conn.remove_notice_handler(keep)
    return [p for p in plans if "plan:" in p]


@pytest.fixture(scope="module")
def orders(module_db: str, conn: psycopg.Connection) -> psycopg.Connection:
    """``one.orders`` LEFT JOIN ``one.payments`` and the live view ``one_left`` over them."""
    conn.execute("create schema one; create table one.orders (id int primary key, store_id int "
                 "not null, amount numeric(10, 2) not null, note text, at timestamptz, "
                 "other int); create table one.payments (id int primary key, order_id int)")
    conn.execute("insert into one.orders select i, i % 4, i, 'n' || i, timestamptz "
                 "'2030-01-01' + i * interval '1 hour', 0 from generate_series(1, 40) i")
    conn.execute("insert into one.payments select i, i from generate_series(1, 40, 3) i")
    deploy_text(module_db, "one_left", LEFT)
    return conn


def _proconfig(conn: psycopg.Connection, view: str, function: str) -> list[str]:
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (view,)).fetchone()[0]
    row = conn.execute("select proconfig from pg_proc where proname = %s",
                       (f"{suffix}__{function}",)).fetchone()
    return sorted(s.split("=", 1)[0] for s in row[0])


def test_a_one_row_update_runs_no_probe(orders: psycopg.Connection) -> None:
    """A one-row UPDATE runs its own statement, the SELECT of its pair of rows (which tells one
    row from several itself), the log INSERT from the pair, the view's lock and the apply: no
    other probe of the transition tables. UPDATEs of several rows, of no row, and of no column
    the view reads stay exact."""
    conn = orders
    for _ in range(3):  # plans cached: what every commit runs
        conn.execute("update one.orders set amount = amount + 1 where id = 7")
    plans = _plans(conn, "update one.orders set amount = amount + 1 where id = 8")
    # the UPDATE, the pair's SELECT, the log INSERT, the apply (the view's lock is an advisory
    # lock taken by a simple expression since engine 26: no planned statement)
    assert len(plans) == 4, [p[:160] for p in plans]
    assert_equal(conn, "one_left", LEFT)
    for update in ("update one.orders set amount = amount * 2 where id between 3 and 9",
                   "update one.orders set amount = amount where id = 10",
                   "update one.orders set other = 5 where id = 11",
                   "update one.orders set amount = 1 where id < 0",
                   "update one.orders set store_id = 3, note = null where id = 12",
                   "update one.orders set at = null where id in (13, 14)"):
        conn.execute(update)
        assert_equal(conn, "one_left", LEFT)


def test_an_update_of_columns_the_view_does_not_read_inserts_nothing(
        orders: psycopg.Connection) -> None:
    """A one-row UPDATE of a column the view does not read (a dimension row's counter) runs its
    own statement and the SELECT of its pair of rows only: no log INSERT (which cost most of its
    trigger's instructions though it logged no row), no view lock, no apply at commit."""
    conn = orders
    for _ in range(3):
        conn.execute("update one.orders set other = other + 1 where id = 15")
    plans = _plans(conn, "update one.orders set other = other + 1 where id = 16")
    assert not [p for p in plans if "Insert on" in p], [p[:160] for p in plans]
    assert len(plans) == 2, [p[:160] for p in plans]  # the UPDATE, the pair's SELECT
    with conn.transaction():  # then a change the view reads, in the same transaction
        conn.execute("update one.orders set other = other + 1 where id = 17")
        conn.execute("update one.orders set amount = amount + 3 where id = 17")
    assert_equal(conn, "one_left", LEFT)


FILTERED = """select o.store_id, count(*) as n, sum(o.amount) as amount from one.orders o
where o.amount > 20 group by o.store_id"""


def test_a_one_row_insert_or_delete_is_logged_by_one_statement(
        module_db: str, orders: psycopg.Connection) -> None:
    """A one-row INSERT (or DELETE) runs its own statement, one log INSERT (its row, as the
    transaction's marker: no size probe of the transition table, no row numbering), the view's
    lock and the apply. Statements of no row, of several rows, rows failing a filter pushed to
    the table, and mixes of them in one transaction stay exact."""
    conn = orders
    for i in range(3):  # plans cached: what every commit runs
        conn.execute("insert into one.payments values (%s, 1)", (1000 + i,))
        conn.execute("delete from one.payments where id = %s", (1000 + i,))
    for statement in ("insert into one.payments values (1100, 2)",
                      "delete from one.payments where id = 1100"):
        plans = _plans(conn, statement)
        # the statement, the log INSERT, the apply (the view's lock: no statement, engine 26)
        assert len(plans) == 3, [p[:160] for p in plans]
        assert not [p for p in plans if "WindowAgg" in p], [p[:160] for p in plans]
        assert_equal(conn, "one_left", LEFT)
    deploy_text(module_db, "one_filtered", FILTERED)
    steps = [
        ["insert into one.orders values (101, 1, 50, null, null, 0)"],  # passes the filter
        ["insert into one.orders values (102, 1, 5, null, null, 0)"],  # fails it
        ["insert into one.orders select i, i % 3, i, null, null, 0 "
         "from generate_series(103, 110) i"],  # several rows
        ["insert into one.orders select 1, 1, 1, null, null, 0 where false"],  # none
        ["delete from one.orders where id = 101"], ["delete from one.orders where id = 102"],
        ["delete from one.orders where id = -1"], ["delete from one.orders where id > 105"],
        # in one transaction: a row failing the filter first (not the marker), then one passing
        ["insert into one.orders values (111, 2, 1, null, null, 0)",
         "insert into one.orders values (112, 2, 70, null, null, 0)"],
        # several rows first (the marker), then one row; one row, then several
        ["insert into one.orders select i, 0, i, null, null, 0 from generate_series(113, 115) i",
         "insert into one.orders values (116, 0, 30, null, null, 0)",
         "delete from one.orders where id = 113"],
        ["delete from one.orders where id = 116",
         "delete from one.orders where id in (114, 115)",
         "insert into one.orders values (117, 3, 90, null, null, 0)"],
    ]
    for step in steps:
        with conn.transaction():
            for statement in step:
                conn.execute(statement)
        assert_equal(conn, "one_filtered", FILTERED)
        assert_equal(conn, "one_left", LEFT)


def _function(conn: psycopg.Connection, view: str, function: str) -> str:
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (view,)).fetchone()[0]
    return conn.execute("select prosrc from pg_proc where proname = %s",
                        (f"{suffix}__{function}",)).fetchone()[0]


def test_a_one_row_update_reads_whether_rows_pass_only_with_a_filter(
        module_db: str, orders: psycopg.Connection) -> None:
    """The pair SELECT of a one-row UPDATE reads whether each row passes the filter pushed to
    the table (``__ook``, ``__wok``: record columns, each a type lookup per transaction) only
    when there is such a filter. Without one both rows pass and are logged; with one, rows
    crossing the filter either way stay exact."""
    conn = orders
    deploy_text(module_db, "one_filtered", FILTERED)
    assert "__ook" not in _function(conn, "one_left", "l0_upd")  # l0: one.orders
    assert "__ook" in _function(conn, "one_filtered", "l0_upd")
    conn.execute("insert into one.orders values (201, 1, 10, null, null, 0)")
    for update in ("update one.orders set amount = 30 where id = 201",  # comes in
                   "update one.orders set amount = 40 where id = 201",  # stays in
                   "update one.orders set store_id = 2 where id = 201",  # moves group
                   "update one.orders set amount = 3 where id = 201",  # goes out
                   "update one.orders set amount = 4 where id = 201",  # stays out
                   "update one.orders set other = 9 where id = 201"):  # unread column
        conn.execute(update)
        assert_equal(conn, "one_filtered", FILTERED)
        assert_equal(conn, "one_left", LEFT)


def test_log_functions_pin_only_the_settings_they_read(module_db: str,
                                                      orders: psycopg.Connection) -> None:
    """A log function that copies and compares values printed alike under every setting (int,
    numeric, text, timestamptz...) pins only the names it resolves; one comparing floats by their
    text keeps every pinned setting: a writer with ``extra_float_digits = -15`` still logs a
    change in the last digit."""
    conn = orders
    conn.execute("create table one.floats (k int, x float8)")
    conn.execute("insert into one.floats values (1, 1.0), (2, 2.0)")
    deploy_text(module_db, "one_floats", FLOATS)
    for event in ("ins", "upd", "del"):
        assert _proconfig(conn, "one_left", f"l0_{event}") == sorted(NAMES_ONLY)
        assert _proconfig(conn, "one_floats", f"l0_{event}") == sorted(PINNED)
    with psycopg.connect(module_db, autocommit=True) as writer:
        writer.execute("set extra_float_digits = -15; set TimeZone = 'America/St_Johns';"
                       "set DateStyle = 'SQL, DMY'; set IntervalStyle = 'sql_standard';"
                       "set search_path = public")
        writer.execute("update one.floats set x = 1.0000000000000002 where k = 1")
        writer.execute("update one.orders set at = at + interval '1 day', amount = 0.5 "
                       "where id = 15")
    assert_equal(conn, "one_floats", FLOATS)
    assert conn.execute("select x::text from live.one_floats where k = 1").fetchone() == (
        "1.0000000000000002",)
    assert_equal(conn, "one_left", LEFT)


def test_the_timed_table_log_reads_the_clock_once(module_db: str,
                                                   orders: psycopg.Connection) -> None:
    """A log statement of a temporal filter's timed table reads (and locks) the clock once, and
    only when a row reaches the comparison: a write whose rows all fail the rest of the filter
    leaves the clock unlocked, so a tick does not wait for it."""
    conn = orders
    conn.execute("create table one.events (id int primary key, kind text, amount int, "
                 "ts timestamptz)")
    deploy_text(module_db, "one_first", "select e.kind from one.events e")  # tidemark schema
    tick(module_db, T0)
    conn.cursor().executemany("insert into one.events values (%s, %s, %s, %s)",
                              [(i, "ab"[i % 2], i % 5, T0 - timedelta(seconds=20 * i))
                               for i in range(30)])
    deploy_text(module_db, "one_sliding", SLIDING)
    for _ in range(3):
        conn.execute("update one.events set amount = amount + 1 where id = 3")
    plans = _plans(conn, "update one.events set amount = amount + 1 where id = 4")
    clock = [p for p in plans if "tidemark.live_clock" in p]  # the pair's SELECT reads it
    assert len(clock) == 1 and clock[0].count("LockRows") == 1, clock
    assert_equal(conn, "one_sliding", SLIDING)
    with psycopg.connect(module_db) as writer:
        writer.execute("update one.events set amount = 0 where id = 5")  # fails amount > 0
        writer.execute("update one.events set kind = 'c' where id = 30")  # no such row
        with psycopg.connect(module_db, autocommit=True) as ticker:
            ticker.execute("set lock_timeout = '2s'")
            ticker.execute("select now from tidemark.live_clock for update")  # not blocked
        writer.execute("update one.events set amount = 9 where id = 6")  # passes: locks it
        with psycopg.connect(module_db, autocommit=True) as ticker:
            ticker.execute("set lock_timeout = '100ms'")
            try:
                ticker.execute("select now from tidemark.live_clock for update")
                blocked = False
            except psycopg.errors.LockNotAvailable:
                blocked = True
        assert blocked
        writer.commit()
    for step in range(1, 6):
        tick(module_db, T0 + timedelta(seconds=45 * step))
        conn.execute("update one.events set amount = amount + 1, ts = ts + interval '10 "
                     "seconds' where id = %s", (step,))
        conn.execute("update one.events set amount = amount - 1 where id between 10 and 14")
        assert_equal(conn, "one_sliding", SLIDING)


ZONED = """select o.store_id, o.at::date as day, count(*) as n, sum(o.amount) as amount
from one.orders o group by 1, 2"""
DAYS = """select e.kind, count(*) as n from one.events e
where mz_now() >= e.ts and mz_now() < e.ts + interval '1 day' group by e.kind"""
STYLED = """select e.kind, count(*) as n from one.events e
where mz_now() >= e.ts + interval '-0 1:00' and mz_now() < e.ts + interval '5 minutes'
group by e.kind"""
OTHER_SESSION = ("set extra_float_digits = -15; set TimeZone = 'America/St_Johns';"
                 "set DateStyle = 'SQL, DMY'; set IntervalStyle = 'sql_standard';"
                 "set bytea_output = 'escape'; set search_path = public")


def test_the_apply_pins_only_the_names_when_the_view_reads_no_setting(
        module_db: str, orders: psycopg.Connection) -> None:
    """The commit-time apply of a view whose expressions read no session setting pins only the
    names it resolves (and its planner settings); ``timestamptz::date`` reads TimeZone only, and
    the views stay equal to their queries when written from a session with other settings."""
    conn = orders
    names = sorted([*NAMES_ONLY, "enable_seqscan", "jit"])
    assert _proconfig(conn, "one_left", "apply") == names
    deploy_text(module_db, "one_zoned", ZONED)
    assert _proconfig(conn, "one_zoned", "apply") == sorted([*names, "TimeZone"])
    with psycopg.connect(module_db, autocommit=True) as writer:
        writer.execute(OTHER_SESSION)
        writer.execute("update one.orders set at = at + interval '20 hours', amount = 0.25 "
                       "where id between 16 and 18")
        writer.execute("insert into one.payments values (1000, 17)")
        writer.execute("insert into one.orders values (41, 1, 3.5, 'x', "
                       "'2030-03-10 03:30:00+00', 0)")
    assert_equal(conn, "one_left", LEFT)
    assert_equal(conn, "one_zoned", ZONED)


def test_a_temporal_filter_pins_time_zone_only_for_days_and_months(
        module_db: str, orders: psycopg.Connection) -> None:
    """``ts + interval '5 minutes'`` reads no setting (the sliding view's functions pin only the
    names); ``ts + interval '1 day'`` reads TimeZone (a day across a DST change is 23 or 25
    hours), an interval literal that another IntervalStyle reads otherwise IntervalStyle. A
    writer under America/New_York and sql_standard keeps every view equal to its query."""
    conn = orders
    if conn.execute("select to_regclass('one.events')").fetchone()[0] is None:
        conn.execute("create table one.events (id int primary key, kind text, amount int, "
                     "ts timestamptz)")
        deploy_text(module_db, "one_first", "select e.kind from one.events e")
        conn.execute("insert into one.events select i, 'ab', i, null from "
                     "generate_series(1, 3) i")
        deploy_text(module_db, "one_sliding", SLIDING)
    names = sorted([*NAMES_ONLY, "enable_seqscan", "jit"])
    assert _proconfig(conn, "one_sliding", "apply") == names
    assert _proconfig(conn, "one_sliding", "l0_upd") == sorted(NAMES_ONLY)
    deploy_text(module_db, "one_days", DAYS)
    assert _proconfig(conn, "one_days", "apply") == sorted([*names, "TimeZone"])
    assert _proconfig(conn, "one_days", "l0_ins") == sorted([*NAMES_ONLY, "TimeZone"])
    deploy_text(module_db, "one_styled", STYLED)
    assert _proconfig(conn, "one_styled", "l0_ins") == sorted([*NAMES_ONLY, "IntervalStyle"])
    dst = datetime(2031, 3, 9, 12, tzinfo=UTC)  # New York's clocks go forward that night
    tick(module_db, dst)
    with psycopg.connect(module_db, autocommit=True) as writer:
        writer.execute(OTHER_SESSION.replace("America/St_Johns", "America/New_York"))
        writer.execute("insert into one.events select 100 + i, 'c', i, "
                       "%s - i * interval '23 hours 10 minutes' - interval '20 minutes' "
                       "from generate_series(0, 2) i", (dst,))
        writer.execute("insert into one.events values (110, 'd', 1, %s), (111, 'd', 1, %s)",
                       (dst + timedelta(minutes=30), dst - timedelta(minutes=2)))
        writer.execute("update one.events set ts = %s where id = 1", (dst - timedelta(hours=23,
                                                                              minutes=30),))
    for view, query in (("one_sliding", SLIDING), ("one_days", DAYS), ("one_styled", STYLED)):
        assert_equal(conn, view, query)
    tick(module_db, dst + timedelta(minutes=40))
    for view, query in (("one_sliding", SLIDING), ("one_days", DAYS), ("one_styled", STYLED)):
        assert_equal(conn, view, query)


BACKSLASH = r"""select o.store_id, count(*) filter (where o.note = 'a\b') as marked
from one.orders o where o.note <> 'x\y' group by o.store_id"""


def test_a_backslash_in_the_view_keeps_standard_conforming_strings(
        module_db: str, orders: psycopg.Connection) -> None:
    """A function whose text holds a backslash (a literal of the view) still pins
    standard_conforming_strings: a writer with it off maintains the view as the deploy read it."""
    conn = orders
    deploy_text(module_db, "one_backslash", BACKSLASH)
    assert SCS in _proconfig(conn, "one_backslash", "apply")
    assert SCS in _proconfig(conn, "one_backslash", "l0_ins")  # the WHERE, pushed to the log
    assert SCS not in _proconfig(conn, "one_left", "apply")
    with psycopg.connect(module_db, autocommit=True) as writer:
        writer.execute("set standard_conforming_strings = off")
        writer.execute("insert into one.orders values (90, 1, 1, %s, null, 0), "
                       "(91, 1, 1, %s, null, 0), (92, 1, 1, %s, null, 0)",
                       ("a\\b", "x\\y", "ab"))
        writer.execute("update one.orders set note = %s where id = 92", ("a\\b",))
    assert conn.execute("select marked from live.one_backslash where store_id = 1"
                        ).fetchone()[0] == 2
    assert_equal(conn, "one_backslash", BACKSLASH)


SCALED = "select s.k, sum(s.x) as sx, max(s.x) as mx, sum(s.y) as sy from one.scaled s group by s.k"


def test_a_one_row_update_to_an_equal_numeric_of_another_scale_is_logged(
        module_db: str, orders: psycopg.Connection) -> None:
    """1.0 -> 1.00 (equal, another display scale) changes sum's and max's text: the update
    is logged; NaN -> NaN and 2.50 -> 2.50 in numeric(6, 2) are not changes."""
    conn = orders
    conn.execute("create table one.scaled (id int primary key, k int, x numeric, "
                 "y numeric(6, 2))")
    conn.execute("insert into one.scaled values (1, 1, 1.0, 2.5), (2, 2, 'NaN', 'NaN')")
    deploy_text(module_db, "one_scaled", SCALED)
    for update in ("update one.scaled set x = 1.00 where id = 1",
                   "update one.scaled set x = 1.0, y = 2.500 where id = 1",
                   "update one.scaled set x = 'NaN', y = 'NaN' where id = 2",
                   "update one.scaled set x = 'Infinity' where id = 2",
                   "update one.scaled set x = 3 where id = 2"):
        conn.execute(update)
        assert_equal(conn, "one_scaled", SCALED)
        texts = "select k, sx::text, mx::text, sy::text from {} order by k"
        assert conn.execute(texts.format("live.one_scaled")).fetchall() == conn.execute(
            texts.format(f"({SCALED}) as q")).fetchall()


def _noted(conn: psycopg.Connection, view: str, tables: int = 2) -> tuple[str, int]:
    """In the open transaction: the view's tokens in ``tidemark.pending`` (other views over the
    same tables left out), and how many rows of the logs of the view (of ``tables`` base
    tables) are the transaction's marker (``__tm_first``)."""
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (view,)).fetchone()[0]
    listed = conn.execute("select coalesce(current_setting('tidemark.pending', true), '')"
                          ).fetchone()[0]
    pending = "".join(f" {t} " for t in listed.split() if t.startswith(f"{view}/"))
    count = sql.SQL("select count(*) from {} where __tm_first and __tm_tx = "
                    "pg_current_xact_id()")
    markers = sum(conn.execute(count.format(sql.Identifier("tidemark_state", f"{suffix}__l{j}"))
                               ).fetchone()[0] for j in range(tables))
    return pending, markers


def test_a_one_row_write_notes_its_table_in_the_statement_that_logs_it(
        module_db: str, orders: psycopg.Connection) -> None:
    """A one-row UPDATE logs its pair and notes its table in ``tidemark.pending`` in one
    statement (no PL/pgSQL IF nor set_config after it), beside one-row INSERTs and DELETEs
    (noted after their statement): each table is noted once, the first row logged in the
    transaction is its only marker, a write that logs nothing notes nothing, and after ``SET
    CONSTRAINTS ALL IMMEDIATE`` has applied the view, the next write logs a new marker (the
    apply emptied the list). A session whose first UPDATE changed several rows or none (the
    pair's record then holds NULLs) stays exact."""
    with psycopg.connect(module_db, autocommit=True) as fresh:  # a new session: no plan yet
        fresh.execute("update one.orders set amount = amount + 1 where id between 20 and 22")
        fresh.execute("update one.orders set amount = amount + 1 where id < 0")
        fresh.execute("update one.orders set amount = amount + 1 where id = 23")
        assert_equal(fresh, "one_left", LEFT)
    conn = orders
    with conn.transaction():
        conn.execute("update one.orders set other = other + 1 where id = 24")  # unread column
        assert _noted(conn, "one_left") == ("", 0)
        conn.execute("update one.orders set amount = amount + 1 where id = 24")
        # only a summed column changed: a net pair (streaming_views.netpair); the writes after
        # it note the tables as usual, so the transaction is applied from the log's pairs
        assert _noted(conn, "one_left") == (" one_left/0~ ", 1)
        conn.execute("insert into one.payments values (2400, 24)")
        conn.execute("delete from one.orders where id = 25")
        conn.execute("update one.payments set order_id = 26 where id = 2400")
        assert _noted(conn, "one_left") == (" one_left/0~  one_left/1  one_left/0 ", 1)
        conn.execute("set constraints all immediate")  # applies the view now
        conn.execute("set constraints all deferred")
        assert _noted(conn, "one_left") == ("", 0)
        conn.execute("delete from one.payments where id = 2400")
        assert _noted(conn, "one_left") == (" one_left/1 ", 1)
        conn.execute("insert into one.orders values (25, 1, 7, null, null, 0)")
        assert _noted(conn, "one_left") == (" one_left/1  one_left/0 ", 1)
    assert_equal(conn, "one_left", LEFT)
    deploy_text(module_db, "one_filtered", FILTERED)  # amount > 20 is pushed to the log
    conn.execute("insert into one.orders values (301, 1, 10, null, null, 0)")
    for update, noted in (("update one.orders set amount = 11 where id = 301", False),  # out
                          ("update one.orders set amount = 31 where id = 301", True),  # in
                          ("update one.orders set amount = 32 where id = 301", True),
                          ("update one.orders set amount = 5 where id = 301", True)):  # out
        with conn.transaction():
            conn.execute("update one.payments set order_id = order_id where id = 1")  # unread
            conn.execute(update)
            pending, markers = _noted(conn, "one_filtered", tables=1)
            assert (" one_filtered/0 " in pending, markers) == (noted, int(noted)), update
        assert_equal(conn, "one_filtered", FILTERED)
        assert_equal(conn, "one_left", LEFT)
