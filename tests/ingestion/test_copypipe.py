"""The COPY relay: rows pass unparsed from COPY TO into one or two COPY FROM, text or binary,
with exact counts; a failing receiver aborts the copy and leaves both ends usable."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingestion.copypipe import Sink, pipe_copy
from tests.ingestion.conftest import Pair, table_rows

VALUES = """
insert into t select g, case when g % 7 = 0 then null else 'v' || g || E'\\ttab\\nline\\\\' end,
    g / 3.0, now() + g * interval '1 hour', array[g, g + 1], jsonb_build_object('g', g),
    case when g % 5 = 0 then 'NaN'::float8 else g::float8 / 7 end
from generate_series(1, 20000) g
"""
DDL = ("create table t (id int, v text, n numeric, at timestamptz, a int[], j jsonb,"
       " f float8)")


@pytest.mark.parametrize("binary", [False, True])
def test_relay_into_two_tables(pair: Pair, binary: bool) -> None:
    pair.src_exec(DDL, VALUES)
    fmt = " (format binary)" if binary else ""
    reported: list[int] = []
    with psycopg.connect(pair.land) as land:
        land.execute(DDL)
        land.execute(DDL.replace("table t", "table t2"))
        land.commit()
    with psycopg.connect(pair.src) as src, psycopg.connect(pair.land) as a, \
            psycopg.connect(pair.land) as b:
        a.execute("select 1")
        rows = pipe_copy(src, sql.SQL("copy (select * from t) to stdout" + fmt),
                         [Sink(a, sql.SQL("copy t from stdin" + fmt)),
                          Sink(b, sql.SQL("copy t2 from stdin" + fmt))], reported.append)
        a.commit()
        b.commit()
    assert rows == sum(reported) == 20000
    expected = table_rows(pair.src, "public", "t")
    assert table_rows(pair.land, "public", "t") == expected
    assert table_rows(pair.land, "public", "t2") == expected


def test_failing_receiver_aborts_and_connections_stay_usable(pair: Pair) -> None:
    """The bad row comes last: the receiver fails when the stream ends."""
    pair.src_exec("create table t (id int, v text)",
                  "insert into t select g, g::text from generate_series(1, 50000) g",
                  "insert into t values (50001, 'not a number')")
    with psycopg.connect(pair.land, autocommit=True) as land:
        land.execute("create table t (id int, v int)")
    with psycopg.connect(pair.src) as src, psycopg.connect(pair.land) as land:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            pipe_copy(src, sql.SQL("copy (select * from t) to stdout"),
                      [Sink(land, sql.SQL("copy t from stdin"))])
        land.rollback()
        src.rollback()
        assert land.execute("select count(*) from t").fetchone()[0] == 0
        assert src.execute("select count(*) from t").fetchone()[0] == 50001
        land.execute("update t set v = 1")  # both connections work on


def test_failing_source_aborts_the_receivers(pair: Pair) -> None:
    pair.src_exec("create table t (id int)")
    with psycopg.connect(pair.land, autocommit=True) as land:
        land.execute("create table t (id int)")
    with psycopg.connect(pair.src) as src, psycopg.connect(pair.land) as land:
        with pytest.raises(psycopg.errors.DivisionByZero):
            pipe_copy(src, sql.SQL("copy (select 1 / (g - 30000) from generate_series(1, 60000)"
                                   " g) to stdout"), [Sink(land, sql.SQL("copy t from stdin"))])
        land.rollback()
        src.rollback()
        assert land.execute("select count(*) from t").fetchone()[0] == 0
        assert src.execute("select 1").fetchone()[0] == 1
