"""Issue 11, class 1: session-dependent expressions give the same view whatever the writer's
session settings (TimeZone, DateStyle, IntervalStyle, extra_float_digits, search_path), and
what cannot be pinned is refused with its position — checked on the resolved function, operator
or cast actually used, not on any overload of its name."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

TABLES = """
create schema z;
create table z.t (id int primary key, ts timestamptz, d date, iv interval, f float8,
                  h text, ts0 timestamp);
"""

BY_TIME = """select date_trunc('hour', t.ts) as hr, t.ts::date as day, extract(hour from t.ts) as h,
       count(*) as n
from z.t t
where t.ts >= '2026-01-01 12:00'
group by 1, 2, 3"""

AS_TEXT = """select t.d::text as dt, t.iv::text as it, t.f::text as ft, count(*) as n
from z.t t group by 1, 2, 3"""

ROWS = """select t.id, t.ts + interval '1 day' as next_day, t.ts::timestamp as local_ts,
       to_char(t.ts, 'YYYY-MM-DD HH24:MI') as label
from z.t t where t.ts::date > '2025-12-31'"""

SETTINGS = [
    "set time zone 'Asia/Kolkata'",
    "set time zone 'America/St_Johns'; set datestyle = 'SQL, DMY'",
    "set datestyle = 'German'; set intervalstyle = 'iso_8601'; set extra_float_digits = -3",
    "set intervalstyle = 'sql_standard'; set time zone 'Pacific/Chatham'",
    "set search_path = z, public; set extra_float_digits = 0; set datestyle = 'Postgres, MDY'",
]


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute(TABLES)
    for name, text in (("by_time", BY_TIME), ("as_text", AS_TEXT), ("time_rows", ROWS)):
        assert deploy_text(module_db, name, text) == "created"
    return module_db


@pytest.mark.parametrize("setting", SETTINGS)
def test_writers_in_other_sessions_keep_views_equal_to_query(db: str, conn: psycopg.Connection,
                                                               setting: str) -> None:
    conn.execute("truncate z.t")
    with psycopg.connect(db, autocommit=True) as w:
        w.execute(setting)
        # 09:30Z and 10:00Z: one UTC hour apart in Kolkata's half-hour offset; 23:30Z is the next
        # day in Kolkata; the literal in WHERE is read as UTC by the query.
        w.execute("insert into z.t values "
                  "(1, '2026-01-02 09:30:00+00', '2026-02-01', '1 day 2 hours', 0.1, 'a', "
                  "'2026-01-02 09:30'), "
                  "(2, '2026-01-02 10:00:00+00', '2026-02-01', '25 hours', 1e-7, 'b', null), "
                  "(3, '2026-01-02 23:30:00+00', '2026-12-31', '-1 mon', 1.0/3, 'c', null), "
                  "(4, '2026-01-01 11:00:00+00', '2026-01-01', '1 year', 2.5e10, 'd', null), "
                  "(5, '2026-01-01 12:10:00+00', null, null, null, 'e', null)")
        w.execute("update z.t set ts = ts + interval '1 hour' where id in (2, 4)")
        w.execute("delete from z.t where id = 5")
    for name, text in (("by_time", BY_TIME), ("as_text", AS_TEXT), ("time_rows", ROWS)):
        assert_equal(conn, name, text)
    # the query read in UTC: both 09:30Z and 10:00Z rows... 10:00Z moved to 11:00Z
    hours = conn.execute("select h, n from live.by_time order by hr").fetchall()
    assert [int(h) for h, _ in hours] == [12, 9, 11, 23]



def test_the_writers_own_settings_are_put_back(db: str, conn: psycopg.Connection) -> None:
    """The maintenance functions pin the settings only while they run (set in their body when
    the session differs): the writer's session sees its own values again after each write, in
    the transaction and after its commit (the apply), also after a SET LOCAL."""
    expected = ("Asia/Kolkata", "German, DMY", "iso_8601", "0")
    show = ("select current_setting('TimeZone'), current_setting('DateStyle'), "
            "current_setting('IntervalStyle'), current_setting('extra_float_digits')")
    with psycopg.connect(db) as w:
        w.execute("set time zone 'Asia/Kolkata'; set datestyle = 'German'; "
                  "set intervalstyle = 'iso_8601'; set extra_float_digits = 0")
        w.commit()
        w.execute("insert into z.t values (100, '2026-03-01 10:00+00', '2026-03-01', "
                  "'1 hour', 0.5, 'x', null)")
        assert w.execute(show).fetchone() == expected
        w.execute("set local time zone 'America/St_Johns'")
        w.execute("update z.t set f = 0.25 where id = 100")
        assert w.execute(show).fetchone() == ("America/St_Johns", *expected[1:])
        w.commit()  # the apply runs here
        assert w.execute(show).fetchone() == expected
    for name, text in (("by_time", BY_TIME), ("as_text", AS_TEXT), ("time_rows", ROWS)):
        assert_equal(conn, name, text)

REFUSED = [
    # a user function whose text overload is volatile (another overload is immutable)
    ("select z.pick(t.h) as p, count(*) as n from z.t t group by 1", "z.pick()", "volatile"),
    # a cast through a volatile function
    ("select t.h::z.mood as m, count(*) as n from z.t t group by 1", "cast from text to z.mood",
     "volatile"),
    # text -> timestamptz: 'now' and 'today' mean the time of the write
    ("select t.h::timestamptz as at, count(*) as n from z.t t group by 1",
     "cast from text to timestamp with time zone", "now"),
    ("select t.id from z.t t where t.ts < 'now'", "'now'", "time of"),
    ("select age(t.ts) as a, count(*) as n from z.t t group by 1", "age()", "current date"),
    ("select t.id, to_regclass(t.h) as r from z.t t", "to_regclass()", "stable"),
    # read-time (final) expressions run in the reader's session: refused when session-dependent
    ("select t.h, max(t.ts)::date as last_day from z.t t group by t.h",
     "cast from timestamp with time zone to date", "read"),
]


@pytest.mark.parametrize(("text", "construct", "reason"), REFUSED,
                         ids=[r[1] for r in REFUSED])
def test_session_dependent_or_volatile_refused(db: str, conn: psycopg.Connection, text: str,
                                               construct: str, reason: str) -> None:
    conn.execute("create or replace function z.pick(int) returns int language sql immutable "
                 "as 'select $1'")
    conn.execute("create or replace function z.pick(text) returns text language sql volatile "
                 "as 'select $1'")
    conn.execute("do $$ begin create type z.mood as enum ('a', 'b'); exception when "
                 "duplicate_object then null; end $$")
    conn.execute("create or replace function z.to_mood(text) returns z.mood language sql "
                 "volatile as $$ select $1::z.mood $$")
    conn.execute("do $$ begin create cast (text as z.mood) with function z.to_mood(text); "
                 "exception when duplicate_object then null; end $$")
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, "refused", text)
    err = info.value
    assert construct in err.construct, str(err)
    assert reason in str(err), str(err)
    assert err.line is not None and err.column is not None, str(err)
    assert conn.execute("select to_regclass('live.refused')").fetchone()[0] is None


def test_immutable_overload_and_stable_key_with_min_max(db: str, conn: psycopg.Connection):
    """Resolved per overload: date_trunc over timestamp is immutable, over timestamptz stable
    but pinned; a stable group key no longer surfaces 'functions in index expression must be
    marked IMMUTABLE' (the recompute index is skipped for it)."""
    text = ("select t.ts::date as day, date_trunc('day', t.ts0) as d0, min(t.id) as first_id, "
            "max(t.f) as top from z.t t group by 1, 2")
    assert deploy_text(db, "stable_key", text) == "created"
    with psycopg.connect(db, autocommit=True) as w:
        w.execute("set time zone 'Asia/Tokyo'")
        w.execute("insert into z.t (id, ts, ts0, f) values (10, '2026-03-01 20:00+00', "
                  "'2026-03-01 20:00', 1), (11, '2026-03-01 14:00+00', '2026-03-01 14:00', 2)")
        w.execute("delete from z.t where id = 11")
    assert_equal(conn, "stable_key", text)


def test_whole_row_reference_refused_with_an_equivalent_rewrite(db: str,
                                                                conn: psycopg.Connection):
    """``t::text``, ``to_jsonb(t)``, ``count(t)`` used to be accepted and maintained from the
    change log's row (its transaction id and sign included): wrong rows. Refused; the suggested
    rewrites give the query's values and deploy."""
    conn.execute("insert into z.t (id, ts, h) values (40, '2026-01-01 10:00+00', 'x') "
                 "on conflict do nothing")
    for text, ref in (("select t.id, t::text as r from z.t t", "t"),
                      ("select t.id, to_jsonb(t) as r from z.t t", "t"),
                      ("select t.id, row_to_json(t) as r from z.t t", "t"),
                      ("select t.h, count(t) as n from z.t t group by t.h", "t")):
        with pytest.raises(UnsupportedViewError) as info:
            deploy_text(db, "whole_row", text)
        err = info.value
        assert err.construct == f"whole-row reference {ref}", str(err)
        assert err.line == 1 and err.column is not None, str(err)
        assert conn.execute("select to_regclass('live.whole_row')").fetchone()[0] is None
    message = str(err)
    row = message[message.index("row(t.id"):].split(") in place", 1)[0] + ")"
    pairs = message[message.index("jsonb_build_object("):].split(") in place", 1)[0] + ")"
    for name, original, rewritten in (
            ("as_text", "select t.id, t::text as r from z.t t",
             f"select t.id, {row}::text as r from z.t t"),
            ("as_jsonb", "select t.id, to_jsonb(t) as r from z.t t",
             f"select t.id, {pairs} as r from z.t t")):
        assert deploy_text(db, f"rewritten_{name}", rewritten) == "created"
        with psycopg.connect(db, autocommit=True) as w:
            w.execute("set time zone 'Asia/Kolkata'; set datestyle = 'German'")
            w.execute("update z.t set h = h || '!' where id = 40")
        assert_equal(conn, f"rewritten_{name}", rewritten)
        assert sorted(conn.execute(f"select * from live.rewritten_{name}").fetchall()) \
            == sorted(conn.execute(original).fetchall())


def test_enum_labels_printed_by_any_function_refused(db: str, conn: psycopg.Connection):
    """An enum cast to text was refused (a label can be renamed with no write), but ``||``,
    ``concat()``, ``format()``, ``to_jsonb()`` and an array's text print labels too and were
    accepted: the view kept the old label after ALTER TYPE ... RENAME VALUE. Now each is refused
    at its position; the enum itself as a key stays exact through a rename."""
    conn.execute("create type z.feel as enum ('calm', 'busy'); "
                 "create table z.e (id int primary key, f z.feel, h text)")
    for text, construct in (("select e.id, e.h || e.f as x from z.e e", "operator ||"),
                            ("select e.id, concat(e.f, '!') as x from z.e e", "concat()"),
                            ("select e.id, format('%s', e.f) as x from z.e e", "format()"),
                            ("select e.id, to_jsonb(e.f) as x from z.e e", "to_jsonb()"),
                            ("select e.id, array[e.f]::text as x from z.e e", "cast from")):
        with pytest.raises(UnsupportedViewError, match="labels") as info:
            deploy_text(db, "labels", text)
        assert info.value.construct.startswith(construct), str(info.value)
        assert info.value.line == 1 and info.value.column is not None, str(info.value)
        assert text[info.value.column - 1:].startswith(("||", "concat", "format", "to_jsonb",
                                                        "::")), str(info.value)
    text = "select e.f, count(*) as n, max(e.h) as h from z.e e group by e.f"
    assert deploy_text(db, "by_feel", text) == "created"
    conn.execute("insert into z.e values (1, 'calm', 'a'), (2, 'busy', 'b'), (3, 'calm', 'c')")
    conn.execute("alter type z.feel rename value 'calm' to 'still'")
    assert_equal(conn, "by_feel", text)
    assert conn.execute("select f::text, n from live.by_feel order by n desc").fetchall() \
        == [("still", 2), ("busy", 1)]
