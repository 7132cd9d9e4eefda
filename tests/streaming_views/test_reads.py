"""Which pinned settings a view's maintenance expressions read (streaming_views.reads), told
from the trees PostgreSQL builds: each verdict checked against PostgreSQL itself."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views import reads
from streaming_views.probes import run_probe


@pytest.fixture(scope="module")
def tables(conn: psycopg.Connection) -> psycopg.Connection:
    """``r.t`` with a column of each kind the expressions read."""
    conn.execute("create schema r; create table r.t (ts timestamptz, d date, n numeric, "
                 "f float8, b bytea, s text, iv interval, ldt timestamp)")
    return conn


def _read(conn: psycopg.Connection, expr: str, strings: tuple[str, ...] = ()) -> frozenset[str]:
    with conn.transaction():
        _, tree = run_probe(conn, f"SELECT {expr} AS c FROM r.t AS t", tree=True)
        return reads.settings_read(conn, tree, list(strings))


@pytest.mark.parametrize(("expr", "strings", "expected"), [
    ("t.n * 2 + 1", (), set()),
    ("t.s = 'cancelled'", ("cancelled",), set()),
    ("(t.ts AT TIME ZONE 'UTC')::date", ("UTC",), set()),
    ("t.ts + interval '5 minutes' > t.ts", ("5 minutes",), set()),
    ("t.ts + interval '1 day' > t.ts", ("1 day",), {"TimeZone"}),
    ("t.ts + interval '1 month'", ("1 month",), {"TimeZone"}),
    ("t.ts + t.iv", (), {"TimeZone"}),
    ("t.ts::date", (), {"TimeZone"}),
    ("t.d < t.ts", (), {"TimeZone"}),
    ("t.ts > '2030-01-02 03:00'", ("2030-01-02 03:00",), {"TimeZone", "DateStyle"}),
    ("t.ts + interval '-0 1:00'", ("-0 1:00",), {"IntervalStyle"}),
    ("t.f::text", (), {"extra_float_digits"}),
    ("t.b::text", (), {"bytea_output"}),
    ("date_trunc('day', t.ts)", ("day",), {"TimeZone"}),
    ("date_trunc('hour', t.ts)", ("hour",), {"TimeZone"}),
    ("date_trunc(t.s, t.ts)", (), {"TimeZone"}),
    ("date_trunc('hour', t.ts, 'UTC')", ("hour", "UTC"), set()),
    ("date_trunc('day', t.ts, t.s)", ("day",), set()),
    ("date_trunc('hour', t.ldt)", ("hour",), set()),
    ("date_trunc('hour', t.ts) > '2030-01-02'", ("hour", "2030-01-02"),
     {"TimeZone", "DateStyle"}),
    ("t.iv::text", (), reads.ALL),
    ("t.n::money", (), reads.ALL),
])
def test_the_settings_an_expression_reads(tables: psycopg.Connection, expr: str,
                                         strings: tuple[str, ...], expected: set[str]) -> None:
    assert _read(tables, expr, strings) == frozenset(expected)


def _under_utc_and(conn: psycopg.Connection, query: str, setting: tuple[str, str]
                   ) -> list[list[tuple]]:
    """The rows of ``query`` under TimeZone UTC, then under ``setting`` (name, value)."""
    values = []
    for name, value in (("TimeZone", "UTC"), setting):
        with conn.transaction():
            conn.execute("select set_config('TimeZone', 'UTC', true), "
                         "set_config(%s, %s, true)", (name, value))
            values.append(conn.execute(query).fetchall())
    return values


@pytest.mark.parametrize("setting", [("TimeZone", "America/New_York"), ("DateStyle", "SQL, DMY"),
                                     ("IntervalStyle", "sql_standard"),
                                     ("extra_float_digits", "-15"), ("bytea_output", "escape")])
def test_an_expression_said_to_read_no_setting_gives_the_same_value_under_other_settings(
        tables: psycopg.Connection, setting: tuple[str, str]) -> None:
    """The expressions said to read no setting (above) give the same values under another
    setting, on times across New York's DST change (values compared, not their text)."""
    conn = tables
    conn.execute("truncate r.t; insert into r.t select timestamptz '2031-03-09 06:00+00' + "
                 "k * interval '20 minutes', date '2031-03-09', k / 7.0, k / 3.0, "
                 "'\\x0102'::bytea, 'x', k * interval '1 hour', timestamp '2031-03-09' "
                 "from generate_series(0, 40) k")
    query = ("select t.n * 2 + 1, (t.ts AT TIME ZONE 'UTC')::date - date '2000-01-01', "
             "extract(epoch from t.ts + interval '5 minutes'), t.s = 'cancelled', "
             "extract(epoch from date_trunc('hour', t.ts, 'UTC')), "
             "extract(epoch from date_trunc('day', t.ts, 'Asia/Kolkata')) "
             "from r.t as t order by t.ts")
    values = _under_utc_and(conn, query, setting)
    assert len(values[0]) == 41 and values[0] == values[1]


@pytest.mark.parametrize("setting", [("DateStyle", "SQL, DMY"), ("IntervalStyle", "sql_standard"),
                                     ("extra_float_digits", "-15"), ("bytea_output", "escape"),
                                     ("TimeZone", "Asia/Kolkata")])
def test_date_trunc_of_a_timestamptz_reads_only_the_time_zone(
        tables: psycopg.Connection, setting: tuple[str, str]) -> None:
    """``date_trunc('hour', ts)`` (said to read TimeZone only, above) gives the same values
    under another DateStyle, IntervalStyle, float digits or bytea output, and other values
    under a zone half an hour off UTC (on main it was said to read every setting)."""
    conn = tables
    conn.execute("truncate r.t; insert into r.t (ts) select timestamptz '2031-03-09 06:10+00' "
                 "+ k * interval '20 minutes' from generate_series(0, 40) k")
    query = ("select extract(epoch from date_trunc('hour', t.ts)), "
             "extract(epoch from date_trunc('day', t.ts)) from r.t as t order by t.ts")
    values = _under_utc_and(conn, query, setting)
    assert len(values[0]) == 41
    assert (values[0] == values[1]) == (setting[0] != "TimeZone")


def test_strings_that_are_no_interval_log_no_error(tables: psycopg.Connection, pg) -> None:
    # Each string literal of a view was cast to interval under four IntervalStyles: a string
    # that is no interval ('cancelled', 'UTC', a column name...) logged four ERROR lines in the
    # server's log at every deploy (over 1,000 per `tidemark up` of the demo).
    if tables.info.server_version < 160000:
        pytest.skip("pg_input_is_valid is PostgreSQL 16+; older servers still log the casts")
    before = pg.log_file.stat().st_size
    strings = ("5 minutes", "cancelled", "no interval here", "UTC")  # the view's strings
    assert _read(tables, "t.ts + interval '5 minutes' > t.ts and (t.s = 'cancelled' or t.s = "
                         "'no interval here' or (t.ts AT TIME ZONE 'UTC')::date < t.d)",
                 strings) == frozenset()
    assert _read(tables, "t.ts + interval '-0 1:00'", ("-0 1:00",)) == {"IntervalStyle"}
    with open(pg.log_file, "rb") as log:
        log.seek(before)
        logged = log.read().decode(errors="replace")
    assert "invalid input syntax for type interval" not in logged
