"""Live views read as a BI tool reads them: sessions that hold a live view open (idle in
transaction, a WITH HOLD cursor) never stall writers, and a redeploy waits for them politely."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import pytest

from ingestion.exclusive import hold_source_lock, named
from tests.streaming_views.conftest import assert_equal, deploy_text

T = TypeVar("T")
V1 = "select t.g, count(*) as n, sum(t.v) as sv from bi.t t group by t.g"
V2 = "select t.g, count(*) as n, sum(t.v) as sv, max(t.v) as mx from bi.t t group by t.g"


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema bi; create table bi.t (id bigserial primary key, g int, v int)")
    conn.execute("insert into bi.t (g, v) select i % 5, i from generate_series(1, 200) i")
    deploy_text(module_db, "bi_v", V1)
    return module_db


# A write "stalls behind the deploy" when it waits for a lock longer than this. The writers
# run with it as their lock_timeout: a wall-clock bound on each insert (1 s, as before) also
# counted the time a loaded CI machine did not run the writer at all. A deploy's own lock
# attempts wait at most LOCK_WAIT (200 ms); its swap holds its locks for as long as the machine
# takes to run it (at load ~20 here, a live-view tick held a writer over 1 s the same way). The
# stall these tests guard against holds writers for the reader's whole transaction (>= 4 s).
STALL = "3s"


def _write_latencies(dsn: str, seconds: float) -> list[float]:
    """Insert one row at a time for ``seconds``; the latency of each insert."""
    out: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        _timed_inserts(c, seconds, out, 0.02)
    return out


def _writes_never_stall(dsn: str, seconds: float, what: str = "writers") -> None:
    """Insert one row at a time for ``seconds``, none waiting for a lock longer than
    :data:`STALL`."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"set lock_timeout = '{STALL}'")
        _unstalled(c, seconds, 0.02, what)


def _unstalled(c: psycopg.Connection, seconds: float, pause: float, what: str) -> None:
    """:func:`_timed_inserts` on ``c`` (its lock_timeout :data:`STALL`): a lock wait that long
    fails the test, saying so."""
    try:
        _timed_inserts(c, seconds, [], pause)
    except psycopg.errors.LockNotAvailable:
        raise AssertionError(f"{what} waited over {STALL} for a lock behind the deploy") \
            from None


def _timed_inserts(c: psycopg.Connection, seconds: float, out: list[float],
                   pause: float) -> None:
    """Insert a row into ``bi.t`` every ``pause`` s for ``seconds``; each latency to ``out``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        c.execute("insert into bi.t (g, v) values (1, 1)")
        out.append(time.monotonic() - t0)
        time.sleep(pause)


def _until(probe: Callable[[], T], timeout_s: float = 60.0) -> T:
    """``probe()``'s first true answer, polled (a thread's session connects and starts its
    statement when the machine lets it: a fixed sleep is too short under load)."""
    deadline = time.monotonic() + timeout_s
    while not (got := probe()):
        assert time.monotonic() < deadline, f"not seen within {timeout_s:.0f} s"
        time.sleep(0.05)
    return got


def test_redeploy_under_idle_in_transaction_reader_never_stalls_writers(
        db: str, conn: psycopg.Connection) -> None:
    with psycopg.connect(db, application_name="bi-tab") as reader:
        reader.execute("select * from live.bi_v").fetchall()  # idle in transaction from here
        done: list[str] = []
        deployer = threading.Thread(target=lambda: done.append(deploy_text(db, "bi_v", V2)))
        deployer.start()
        time.sleep(0.3)
        _writes_never_stall(db, 4.0)
        with psycopg.connect(db, autocommit=True) as other:
            other.execute(f"set lock_timeout = '{STALL}'")
            try:
                other.execute("select * from live.bi_v").fetchall()
            except psycopg.errors.LockNotAvailable:
                raise AssertionError("a new reader queued behind the deploy") from None
        assert not done, "the deploy cannot swap the view while the reader holds it"
    deployer.join(30)
    assert done == ["replaced"]
    assert_equal(conn, "bi_v", V2)


def test_redeploy_under_idle_reader_of_a_base_table_never_stalls_writers(
        db: str, conn: psycopg.Connection) -> None:
    """A BI tab idle in transaction after reading a base table (a landing mirror): dropping the
    old view's triggers needs ACCESS EXCLUSIVE on that table, so the redeploy waits for the tab
    (holding nothing), not the writers behind its locks."""
    with psycopg.connect(db, application_name="bi-tab") as reader:
        reader.execute("select count(*) from bi.t").fetchall()
        done: list[str] = []
        deployer = threading.Thread(target=lambda: done.append(deploy_text(
            db, "bi_v", f"-- base reader\n{V2}")))
        deployer.start()
        time.sleep(0.3)
        _writes_never_stall(db, 4.0)
        assert not done
    deployer.join(30)
    assert done == ["replaced"]
    assert_equal(conn, "bi_v", V2)


def test_truncate_and_ddl_under_reader_do_not_wait(db: str, conn: psycopg.Connection) -> None:
    """A TRUNCATE of a base table (the view rebuilt at commit) and an added column (DDL that
    arrives via CDC) do not wait for a session holding the live view open."""
    with psycopg.connect(db, application_name="bi-tab") as reader:
        reader.execute("set transaction isolation level repeatable read")
        reader.execute("select * from live.bi_v").fetchall()
        with psycopg.connect(db, autocommit=True) as w:
            w.execute("set lock_timeout = '2s'")
            w.execute("begin; truncate bi.t; insert into bi.t (g, v) values (3, 7); commit")
            w.execute("alter table bi.t add column if not exists note text")
            w.execute("insert into bi.t (g, v) values (3, 8)")
        assert reader.execute("select count(*) from live.bi_v").fetchone()[0] > 1  # its snapshot
    assert_equal(conn, "bi_v", V2)


def test_status_names_holders_and_waits(db: str, conn: psycopg.Connection) -> None:
    from streaming_views.holders import lock_waits, long_holders

    with psycopg.connect(db, application_name="bi-tab") as reader, \
            psycopg.connect(db, application_name="slow-writer") as holder:
        reader.execute("select * from live.bi_v").fetchall()
        pid = reader.info.backend_pid
        held = long_holders(conn, 0.0)["bi_v"]
        assert [(h.pid, h.application_name, h.state) for h in held] == [
            (pid, "bi-tab", "idle in transaction")]
        holder_pid = holder.info.backend_pid
        holder.execute("lock table bi.t in exclusive mode")
        waiting = threading.Thread(target=_write_latencies, args=(db, 0.1))
        waiting.start()
        waits = _until(lambda: lock_waits(conn))  # the writer connected and now waits
        holder.rollback()
        waiting.join()
    assert waits and f"pid {holder_pid} (application_name 'slow-writer', idle in " \
        "transaction since" in waits[0]["blocked_by"], waits


def test_deploy_gives_up_naming_the_reader(db: str, conn: psycopg.Connection,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming_views.errors import DeployError

    deploy_module = importlib.import_module("streaming_views.deploy")  # not the function
    monkeypatch.setattr(deploy_module, "DEADLINE_S", 1.0)
    with psycopg.connect(db, application_name="bi-tab") as reader:
        reader.execute("select * from live.bi_v").fetchall()
        t0 = time.monotonic()
        with pytest.raises(DeployError, match=rf"pid {reader.info.backend_pid} \(application_"
                                              r"name 'bi-tab', idle in transaction since"):
            deploy_text(db, "bi_v", V1)
        assert time.monotonic() - t0 < 5
    assert_equal(conn, "bi_v", V2)


def test_prepared_binary_statements_survive_a_redeploy_keeping_columns(
        db: str, conn: psycopg.Connection) -> None:
    """Extended protocol as a BI driver uses it: prepared at once, binary, with parameters, in
    another TimeZone/DateStyle; a redeploy that keeps the columns re-plans, it does not fail."""
    v3 = V2.replace("group by", "where t.v > -1000000 group by")
    with psycopg.connect(db, autocommit=True, prepare_threshold=0) as bi:
        bi.execute("set timezone = 'Asia/Kolkata'")
        bi.execute("set datestyle = 'SQL, DMY'")
        query = "select * from live.bi_v where g = %s"
        before = bi.execute(query, (3,), binary=True).fetchall()
        assert deploy_text(db, "bi_v", v3) == "replaced"
        assert bi.execute(query, (3,), binary=True).fetchall() == before
        bi.execute("insert into bi.t (g, v) values (3, 100)")
        assert bi.execute(query, (3,), binary=True).fetchall()[0][3] == 100
    assert_equal(conn, "bi_v", v3)


def test_repeatable_read_snapshot_older_than_a_redeploy_gets_40001_not_empty(
        db: str, conn: psycopg.Connection) -> None:
    """A REPEATABLE READ report whose snapshot predates a redeploy read the new state table as
    empty (its rows were written after the snapshot): it now gets a serialization failure
    (40001: retry), and a new transaction reads the view."""
    conn.execute("create table if not exists bi.other (x int)")
    with psycopg.connect(db) as report:
        report.execute("set transaction isolation level repeatable read")
        report.execute("select * from bi.other").fetchall()  # the snapshot is taken
        assert deploy_text(db, "bi_v", f"-- rr\n{V2}") == "replaced"
        with pytest.raises(psycopg.errors.SerializationFailure, match="redeployed after"):
            report.execute("select * from live.bi_v").fetchall()
        report.rollback()
        report.execute("set transaction isolation level repeatable read")
        assert report.execute("select count(*) from live.bi_v").fetchone() == conn.execute(
            "select count(distinct g) from bi.t").fetchone()
    assert_equal(conn, "bi_v", V2)


# A redeploy during ingestion's long transaction: ingestion applies one source transaction in
# one landing transaction (a 10M-row source transaction: minutes). The deploy waits for it as
# long as it makes progress, holding no lock (its writes never queue behind the deploy), and
# fails only for an ingestion that is stuck.
SOURCE = "ing_src"


@pytest.fixture(scope="module")
def ing(db: str) -> str:
    """``db`` with a second view ``live.ing_v`` over ``bi.t``, for ingestion's sessions."""
    deploy_text(db, "ing_v", V1)
    return db


@pytest.fixture()
def short_limit(monkeypatch: pytest.MonkeyPatch) -> float:
    """The deploy's limit (``DEADLINE_S``) made 1 s: ingestion's transactions below outlast it."""
    monkeypatch.setattr(importlib.import_module("streaming_views.deploy"), "DEADLINE_S", 1.0)
    return 1.0


def _landing(dsn: str) -> psycopg.Connection:
    """A landing session opened as ingestion/session.py opens it: its name, the source's lock."""
    landing = psycopg.connect(dsn, **named(dsn, SOURCE))
    hold_source_lock(landing, SOURCE)
    return landing


def _ingest(landing: psycopg.Connection, seconds: list[float]) -> None:
    """One landing transaction per entry of ``seconds``, one after the other with no pause:
    each writes a row every 50 ms for that long (the live view maintained in it), then commits.
    With ``landing``'s lock_timeout :data:`STALL`, a write that waits that long fails the
    test."""
    for length in seconds:
        _unstalled(landing, length, 0.05, "ingestion's writes")
        landing.commit()


def test_redeploy_waits_for_a_progressing_ingestion_transaction(
        ing: str, conn: psycopg.Connection, short_limit: float,
        caplog: pytest.LogCaptureFixture) -> None:
    """Twice the limit of ingestion's transaction, then at once a fresh one (the window between
    the wait's end and the deploy's lock attempt): the deploy waits, retries, succeeds; the
    writes never wait for it beyond its own swap."""
    with _landing(ing) as landing, caplog.at_level(logging.INFO, "tidemark.streaming_views"):
        landing.execute(f"set lock_timeout = '{STALL}'")
        landing.execute("insert into bi.t (g, v) values (2, 5)")  # holds the state from here
        done: list[str] = []
        errors: list[BaseException] = []

        def redeploy() -> None:
            try:
                done.append(deploy_text(ing, "ing_v", V2))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        deployer = threading.Thread(target=redeploy)
        t0 = time.monotonic()
        deployer.start()
        _ingest(landing, [3 * short_limit, 1.0, 1.0])
        deployer.join(30)
        waited = time.monotonic() - t0
    assert not errors, f"the deploy failed during ingestion's transaction: {errors[0]}"
    assert done == ["replaced"] and waited > 3 * short_limit
    assert f"waiting for ingestion's transaction of source '{SOURCE}'" in caplog.text
    assert_equal(conn, "ing_v", V2)


def test_create_and_rebuild_wait_for_ingestions_transaction(
        ing: str, conn: psycopg.Connection, short_limit: float) -> None:
    """A new view on a table that ingestion's long transaction writes (the deploy's SHARE ROW
    EXCLUSIVE lock waits for it), and a rebuild: both wait for it, neither fails."""
    from streaming_views.deploy import rebuild

    with _landing(ing) as landing:
        landing.execute("insert into bi.t (g, v) values (2, 5)")
        done: list[object] = []
        worker = threading.Thread(target=lambda: done.extend([
            deploy_text(ing, "ing_new", V1), rebuild(ing, "ing_new")]))
        worker.start()
        _ingest(landing, [2.5 * short_limit, 0.5, 2.5 * short_limit])
        worker.join(30)
    assert done[:1] == ["created"] and len(done) == 2, done
    assert_equal(conn, "ing_new", V1)


def test_redeploy_fails_for_a_stuck_ingestion_naming_it(
        ing: str, conn: psycopg.Connection, short_limit: float) -> None:
    """An ingestion idle in its transaction (no statement, no progress) for the limit: the
    deploy fails, naming it as a stuck ingestion, not a BI session; so does ``tidemark
    status``'s ``held_open_by``."""
    from streaming_views.errors import DeployError
    from streaming_views.holders import long_holders

    deploy_text(ing, "ing_v", V2)
    with _landing(ing) as landing:
        landing.execute("insert into bi.t (g, v) values (3, 7)")
        pid = landing.info.backend_pid
        t0 = time.monotonic()
        with pytest.raises(DeployError, match=rf"pid {pid} \(ingestion of source '{SOURCE}': "
                                              r"stuck, idle in transaction for .*\) holds"):
            deploy_text(ing, "ing_v", f"-- stuck\n{V1}")
        assert time.monotonic() - t0 < 3 * short_limit + 2
        held = long_holders(conn, 0.0)["ing_v"]
        assert [h.pid for h in held] == [pid]
        assert held[0].session().startswith(f"pid {pid} (ingestion of source '{SOURCE}': "
                                            "stuck, idle in transaction for")
        landing.execute("insert into bi.t (g, v) values (3, 8)")
        time.sleep(0.05)
        assert "ingestion of source" in long_holders(conn, 0.0)["ing_v"][0].session()
    assert_equal(conn, "ing_v", V2)


def test_status_tells_an_applying_ingestion_from_a_stuck_one(ing: str,
                                                             conn: psycopg.Connection) -> None:
    """While ingestion's statement runs, ``held_open_by`` says it is applying."""
    from streaming_views.holders import long_holders

    with _landing(ing) as landing:
        landing.execute("insert into bi.t (g, v) values (4, 1)")  # holds the state from here
        worker = threading.Thread(target=landing.execute, args=(
            "insert into bi.t (g, v) select 4, 1 from generate_series(1, 3), pg_sleep(4)",))
        idle_since = time.monotonic()
        worker.start()
        _until(lambda: conn.execute("select state = 'active' from pg_stat_activity where pid"
                                    " = %s", (landing.info.backend_pid,)).fetchone()[0])
        time.sleep(max(0.0, idle_since + 1.2 - time.monotonic()))  # idle this long: stuck
        held = long_holders(conn, 0.0)["ing_v"]
        worker.join()
        landing.rollback()
    assert len(held) == 1 and held[0].session().startswith(
        f"pid {held[0].pid} (ingestion of source '{SOURCE}': applying a transaction open since")


def test_deploy_does_not_queue_behind_a_transaction_reading_the_catalog(
        ing: str, conn: psycopg.Connection) -> None:
    """Ingestion's apply reads ``tidemark.views`` in its (long) transaction. A deploy took
    ACCESS EXCLUSIVE on it every time (``add column if not exists`` with nothing to add), so it
    waited for that transaction with no limit, and every later reader of the catalog behind
    it."""
    with _landing(ing) as landing:
        landing.execute("select count(*) from tidemark.views").fetchone()
        done: list[str] = []
        worker = threading.Thread(target=lambda: done.append(deploy_text(
            ing, "cat_v", "select t.g, count(*) as n from bi.t t group by t.g")))
        worker.start()
        worker.join(5)
        assert done == ["created"], "the deploy queued behind a reader of the catalog"
    worker.join(30)
