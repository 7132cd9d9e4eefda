"""Live views read as a BI tool reads them: sessions that hold a live view open (idle in
transaction, a WITH HOLD cursor) never stall writers, and a redeploy waits for them politely."""

from __future__ import annotations

import importlib
import threading
import time

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

V1 = "select t.g, count(*) as n, sum(t.v) as sv from bi.t t group by t.g"
V2 = "select t.g, count(*) as n, sum(t.v) as sv, max(t.v) as mx from bi.t t group by t.g"


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema bi; create table bi.t (id bigserial primary key, g int, v int)")
    conn.execute("insert into bi.t (g, v) select i % 5, i from generate_series(1, 200) i")
    deploy_text(module_db, "bi_v", V1)
    return module_db


def _write_latencies(dsn: str, seconds: float) -> list[float]:
    """Insert one row at a time for ``seconds``; the latency of each insert."""
    out: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            c.execute("insert into bi.t (g, v) values (1, 1)")
            out.append(time.monotonic() - t0)
            time.sleep(0.02)
    return out


def test_redeploy_under_idle_in_transaction_reader_never_stalls_writers(
        db: str, conn: psycopg.Connection) -> None:
    with psycopg.connect(db, application_name="bi-tab") as reader:
        reader.execute("select * from live.bi_v").fetchall()  # idle in transaction from here
        done: list[str] = []
        deployer = threading.Thread(target=lambda: done.append(deploy_text(db, "bi_v", V2)))
        deployer.start()
        time.sleep(0.3)
        latencies = _write_latencies(db, 4.0)
        assert max(latencies) < 1.0, f"writers stalled {max(latencies):.2f} s behind the deploy"
        with psycopg.connect(db, autocommit=True) as other:
            t0 = time.monotonic()
            other.execute("select * from live.bi_v").fetchall()
            assert time.monotonic() - t0 < 1.0, "a new reader queued behind the deploy"
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
        latencies = _write_latencies(db, 4.0)
        assert max(latencies) < 1.0, f"writers stalled {max(latencies):.2f} s behind the deploy"
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
        time.sleep(0.5)
        waits = lock_waits(conn)
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
