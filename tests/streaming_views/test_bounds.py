"""Temporal-filter bounds that cannot be computed for a row (:mod:`streaming_views.bounds`): the
write succeeds, ``live.<view>`` raises SQLSTATE 22008 naming the view, the table and the bound
while such a row is in the timed table (as the query raises), and equals its query again once
the row is updated away, deleted or truncated; ticks never fail. Both infinities (PostgreSQL
17+ infinite intervals) and a finite overflow (near 294276 AD), through the single-row, paired
UPDATE and batch (bulk) log paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from streaming_views.expiry import tick
from tests.streaming_views.conftest import assert_equal, deploy_text

T0 = (datetime.now(UTC) + timedelta(days=120)).replace(microsecond=0)
NOT_INVERTIBLE = """select f.g, count(*) as n from tb.f f
where mz_now() <= f.ts + f.iv and mz_now() >= f.ts group by f.g
"""
INVERTIBLE = """select f.g, count(*) as n from tb.f f
where mz_now() < f.ts + interval '5 minutes' and mz_now() >= f.ts group by f.g
"""
FINITE = "('294276-12-31 23:58:00+00', '2 days')"  # finite, and past the range once added


@pytest.fixture(scope="module")
def tb(conn: psycopg.Connection, module_db: str) -> psycopg.Connection:
    conn.execute("drop schema if exists tb cascade; create schema tb; "
                 "create table tb.f (id int primary key, g int, ts timestamptz, iv interval)")
    conn.execute("insert into tb.f select i, i %% 3, %s + (i - 50) * interval '10 seconds', "
                 "interval '3 minutes' from generate_series(0, 99) i", (T0,))
    deploy_text(module_db, "first", "select f.g from tb.f f")  # the tidemark schema
    tick(module_db, T0)
    assert deploy_text(module_db, "nv", NOT_INVERTIBLE) == "created"
    assert deploy_text(module_db, "iv", INVERTIBLE) == "created"
    return conn


def _bad_values(conn: psycopg.Connection) -> list[str]:
    infinite = conn.info.server_version >= 170000  # infinite intervals
    values = [FINITE]
    if infinite:
        values += ["('infinity', '-infinity')", "('-infinity', 'infinity')"]
    return values


def _raises(conn: psycopg.Connection, name: str) -> None:
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow) as info:
        conn.execute(f"select * from live.{name}").fetchall()  # type: ignore[arg-type]
    message = str(info.value)
    assert f"live view {name}" in message and "tb.f" in message and "f.ts" in message
    assert "delete" in (info.value.diag.message_hint or "").lower()


def _check_ok(conn: psycopg.Connection) -> None:
    assert_equal(conn, "nv", NOT_INVERTIBLE)
    assert_equal(conn, "iv", INVERTIBLE)


def test_query_itself_raises(tb: psycopg.Connection) -> None:
    """The oracle: the query raises 22008 on such a row (so the view must too)."""
    with tb.transaction(force_rollback=True):
        tb.execute(f"insert into tb.f values (900, 0, {FINITE[1:]}")
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
            tb.execute("select * from tb.f f where now() <= f.ts + f.iv").fetchall()


@pytest.mark.parametrize("how", ["delete", "update", "truncate"])
def test_bad_row_goes_to_the_view_not_the_writer(tb: psycopg.Connection, module_db: str,
                                                 how: str) -> None:
    _check_ok(tb)
    for n, value in enumerate(_bad_values(tb)):
        ident = 1000 + 10 * ["delete", "update", "truncate"].index(how) + n
        tb.execute(f"insert into tb.f values ({ident}, 1, {value[1:]}")  # type: ignore[arg-type]
        _raises(tb, "nv")
        if "infinity" not in value:  # ts + 5 minutes overflows only for the finite one
            _raises(tb, "iv")
        assert tick(module_db, tick_at(tb, 1)) is not None  # a tick does not fail
        _raises(tb, "nv")
        if how == "delete":
            tb.execute("delete from tb.f where id = %s", (ident,))
        elif how == "update":  # updated away: a single-row UPDATE, then a bulk one
            tb.execute("update tb.f set ts = %s, iv = '1 minute' where id = %s", (T0, ident))
        else:
            tb.execute("create temp table keep as select * from tb.f where id < 2000 and id <> %s",
                       (ident,))
            tb.execute("truncate tb.f")
            tb.execute("insert into tb.f select * from keep; drop table keep")
        _check_ok(tb)
    # many rows in one statement (the batch log path), then deleted in one statement
    tb.execute(f"insert into tb.f select 2000 + i, i % 3, v.ts::timestamptz, v.iv::interval "
               f"from generate_series(0, 1200) i, (values {_bad_values(tb)[-1]}) v(ts, iv)")
    _raises(tb, "nv")
    tb.execute("update tb.f set g = g + 1 where id >= 2000")  # bad before and after
    _raises(tb, "nv")
    tb.execute("delete from tb.f where id >= 2000")
    _check_ok(tb)
    tick(module_db, tick_at(tb, 2))
    _check_ok(tb)


def tick_at(conn: psycopg.Connection, seconds: int) -> datetime:
    """The clock moved forward by ``seconds``."""
    now = conn.execute("select now from tidemark.live_clock where id").fetchone()[0]
    return now + timedelta(seconds=seconds)


def test_deploy_counts_rows_already_there(tb: psycopg.Connection, module_db: str) -> None:
    tb.execute(f"insert into tb.f values (3000, 2, {FINITE[1:]}")
    assert deploy_text(module_db, "nv2", NOT_INVERTIBLE) == "created"
    _raises(tb, "nv2")
    if tb.execute("select 1 from pg_roles where rolname = 'tidemark_reader'").fetchone():
        with tb.transaction(force_rollback=True):  # the reader role gets the same error
            tb.execute("set local role tidemark_reader")
            _raises(tb, "nv2")
    tb.execute("update tb.f set iv = '1 second' where id = 3000")
    assert_equal(tb, "nv2", NOT_INVERTIBLE)
    tb.execute("delete from tb.f where id = 3000")
    assert_equal(tb, "nv2", NOT_INVERTIBLE)
    with tb.transaction(force_rollback=True):
        tb.execute("set local role tidemark_reader")
        tb.execute("select * from live.nv2").fetchall()


OVER = "select x.n, count(*) as c from live.nv x group by x.n\n"


def test_views_over_the_view_raise_too(tb: psycopg.Connection, module_db: str) -> None:
    """A view over ``live.nv``: deployed while a bad row is there, its writes go on (the
    engine's own reads of live.nv are not stopped), and reading it raises as its query does."""
    tb.execute(f"insert into tb.f values (4000, 1, {FINITE[1:]}")
    assert deploy_text(module_db, "over", OVER) == "created"
    _raises(tb, "nv")
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match="live view nv"):
        tb.execute("select * from live.over").fetchall()
    tb.execute("update tb.f set g = (g + 1) % 3 where id < 40")  # the inner view changes
    tb.execute("delete from tb.f where id = 4000")
    _check_ok(tb)
    assert_equal(tb, "over", OVER)


def test_the_check_is_once_per_read(tb: psycopg.Connection) -> None:
    """Reading live.<view> checks the count once (a one-time filter), not per row."""
    plan = "\n".join(r[0] for r in tb.execute("explain select * from live.nv").fetchall())
    assert "One-Time Filter" in plan and "live_temporal" in plan


# ---------------------------------------------------------------- rows the view's WHERE leaves out
# The generator's shape (seed 3220629): PostgreSQL tests the cheap ``f.b`` first and never
# computes the bound of a row with ``b`` false, so such a row must not make the view raise.
GATED = """select d.region, count(*) as n from tg.f f join tg.d d on d.k = f.k
where mz_now() <= f.ts + f.iv and mz_now() >= f.ts and f.b group by 1
"""
BAD = FINITE[1:-1]  # ts, iv of a row whose bound cannot be computed (any version)


@pytest.fixture(scope="module")
def tg(tb: psycopg.Connection, module_db: str) -> psycopg.Connection:
    """``live.gated`` deployed while the timed table holds a bad row that fails ``f.b``."""
    tb.execute("drop schema if exists tg cascade; create schema tg; "
               "create table tg.d (k int primary key, region text); "
               "create table tg.f (id int primary key, k int, ts timestamptz, iv interval, "
               "b boolean)")
    tb.execute("insert into tg.d select k, 'r' || (k % 2) from generate_series(0, 3) k")
    tb.execute("insert into tg.f select i, i %% 4, %s + (i - 50) * interval '10 seconds', "
               "interval '3 minutes', i %% 5 <> 0 from generate_series(0, 99) i", (T0,))
    tb.execute(f"insert into tg.f values (1000, 1, {BAD}, false)")  # type: ignore[arg-type]
    assert deploy_text(module_db, "gated", GATED) == "created"
    return tb


def _gated(conn: psycopg.Connection, bad: int) -> None:
    """``live.gated`` equals its query (``bad`` 0) or raises 22008 for ``bad`` rows."""
    if bad == 0:
        assert_equal(conn, "gated", GATED)
        return
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow, match=f": {bad} row\\(s\\) of tg.f"):
        conn.execute("select * from live.gated").fetchall()


def test_a_row_failing_the_other_conjuncts_does_not_raise(tg: psycopg.Connection,
                                                          module_db: str) -> None:
    """Counted at deploy only when ``f.b`` holds: the view reads, and equals its query (which
    does not raise either); a tick does not change that."""
    _gated(tg, 0)
    assert tick(module_db, tick_at(tg, 1)) is not None
    _gated(tg, 0)


def test_update_flipping_the_conjunct(tg: psycopg.Connection) -> None:
    """An UPDATE of ``b`` on a bad row makes the view raise, and read again (one row: the
    paired UPDATE; many: the batch log), NULL counting as false."""
    tg.execute("update tg.f set b = true where id = 1000")
    _gated(tg, 1)
    tg.execute("update tg.f set b = null where id = 1000")
    _gated(tg, 0)
    tg.execute("update tg.f set b = true where id = 1000")
    _gated(tg, 1)
    tg.execute("update tg.f set b = false where id = 1000")
    _gated(tg, 0)
    tg.execute(f"insert into tg.f select 3000 + i, i % 4, {BAD}, false "  # type: ignore[arg-type]
               "from generate_series(0, 1200) i")
    _gated(tg, 0)
    tg.execute("update tg.f set b = (id % 2 = 0) where id >= 3000")
    _gated(tg, 601)
    tg.execute("update tg.f set b = false where id >= 3000")
    _gated(tg, 0)
    tg.execute("delete from tg.f where id >= 3000")
    _gated(tg, 0)


def test_delete_of_a_row_failing_the_conjunct(tg: psycopg.Connection) -> None:
    """Deleting bad rows, counted or not, leaves the count exact."""
    tg.execute(f"insert into tg.f values (1001, 2, {BAD}, false), "  # type: ignore[arg-type]
               f"(1002, 2, {BAD}, true)")
    _gated(tg, 1)
    tg.execute("delete from tg.f where id = 1001")
    _gated(tg, 1)
    tg.execute("delete from tg.f where id = 1002")
    _gated(tg, 0)
    tg.execute(f"insert into tg.f values (1002, 2, {BAD}, true)")  # type: ignore[arg-type]
    _gated(tg, 1)  # one, not two nor zero
    tg.execute("update tg.f set b = false where id = 1002")
    _gated(tg, 0)


def test_truncate_counts_only_rows_passing_the_conjunct(tg: psycopg.Connection) -> None:
    """A TRUNCATE's rebuild counts the table again with the same rule."""
    with tg.transaction():
        tg.execute("create temp table keep on commit drop as select * from tg.f")
        tg.execute("truncate tg.f")
        tg.execute("insert into tg.f select * from keep")
        tg.execute(f"insert into tg.f values (1003, 3, {BAD}, true), "  # type: ignore[arg-type]
                   f"(1004, 3, {BAD}, false)")
    _gated(tg, 1)
    tg.execute("truncate tg.f")
    _gated(tg, 0)
    tg.execute("insert into tg.f select i, i %% 4, %s, interval '3 minutes', true "
               "from generate_series(0, 9) i", (T0,))
    tg.execute(f"insert into tg.f values (1004, 3, {BAD}, false)")  # type: ignore[arg-type]
    _gated(tg, 0)


def test_a_row_left_out_only_by_the_join_raises(tg: psycopg.Connection) -> None:
    """The count does not follow the join (as Materialize filters before it): a bad row
    passing ``f.b`` with no ``tg.d`` row raises, whatever the query's plan does."""
    tg.execute(f"insert into tg.f values (1005, 99, {BAD}, true)")  # type: ignore[arg-type]
    _gated(tg, 1)
    tg.execute("delete from tg.f where id = 1005")
    _gated(tg, 0)
