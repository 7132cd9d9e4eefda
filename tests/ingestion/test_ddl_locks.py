"""Ingestion's DDL on a mirror (an added column, a source TRUNCATE, a resync) against a reader of
the mirror (ingestion/ddl_locks.py): it never queues other readers behind its lock request,
lands once the reader ends, says who holds the lock (``tidemark ingest status``), and interrupts
only Tidemark's own verify, which reports the view as interrupted."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import streaming_views
from ingestion import catch_up
from ingestion.resync import resync
from ingestion.status import status
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text
from tests.ingestion.conftest import Pair, assert_mirror_equals, source_columns, wait_until
from tests.netproxy import Pgbouncer, needs_pgbouncer
from tidemark.cli.ingest import _show_status

QUEUED = ("select exists (select 1 from pg_locks where relation = to_regclass(%s)"
          " and mode = 'AccessExclusiveLock' and not granted)")
RECORDED = ("select exists (select 1 from tidemark.lock_waits where source = %s"
            " and ended_at is null)")


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _ingestion_waits(p: Pair, mirror: str) -> bool:
    """Whether ingestion waits for the mirror's lock: queued for it (as main did), or retrying
    (recorded in ``tidemark.lock_waits``)."""
    with psycopg.connect(p.land, autocommit=True) as conn:
        if conn.execute(QUEUED, (mirror,)).fetchone()[0]:
            return True
        return conn.execute("select to_regclass('tidemark.lock_waits')").fetchone()[0] \
            is not None and conn.execute(RECORDED, (p.source,)).fetchone()[0]


def _start(p: Pair, action: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Make ingestion run ``action``'s DDL on the mirror of ``t`` (in a thread)."""
    if action == "resync":
        return _in_thread(lambda: resync(p.src, p.land, p.source, "t"))
    if action == "add column":
        p.src_exec("alter table t add column y text", "insert into t values (101, 1, 'new')")
    else:
        p.src_exec("truncate t", "insert into t values (101, 1)")
    return _in_thread(lambda: catch_up(p.src, p.land, p.source, timeout_s=120))


@pytest.mark.parametrize("action", ["add column", "truncate", "resync"])
def test_ddl_waits_for_a_reader_without_blocking_other_readers(
        pair: Pair, action: str, capsys: pytest.CaptureFixture[str]) -> None:
    pair.src_exec("create table t (id int primary key, x int)",
                  "insert into t select g, g from generate_series(1, 100) g")
    catch_up(pair.src, pair.land, pair.source)
    mirror = f"{pair.source}.t"
    reader = psycopg.connect(pair.land, application_name="bi tool")
    ingest = None
    try:
        # A BI tab left idle in its transaction, holding ACCESS SHARE on the mirror.
        reader.execute(f"select count(*) from {mirror}").fetchone()
        ingest, result = _start(pair, action)
        assert wait_until(lambda: _ingestion_waits(pair, mirror), timeout=60)
        # (a) other readers of the mirror go on: a queued ALTER would block them all.
        with psycopg.connect(pair.land, autocommit=True) as other:
            other.execute("set lock_timeout = '5s'")
            for _ in range(3):
                assert other.execute(f"select count(*) from {mirror}").fetchone()[0] == 100
        # (c) status names the holder, and what to do.
        assert wait_until(lambda: status(pair.src, pair.land, pair.source)["lock_wait"]
                          is not None, timeout=30)
        payload = status(pair.src, pair.land, pair.source)
        wait = payload["lock_wait"]
        assert wait["table"] == mirror
        [holder] = wait["holders"]
        assert holder["pid"] == reader.info.backend_pid
        assert holder["application_name"] == "bi tool"
        assert holder["state"] == "idle in transaction"
        assert holder["query"] == f"select count(*) from {mirror}"
        assert f"so far for a lock on {mirror}, to " in wait["message"]
        assert f"pid {reader.info.backend_pid}" in wait["message"]
        assert f"pg_terminate_backend({reader.info.backend_pid})" in wait["message"]
        capsys.readouterr()
        _show_status(payload)  # `tidemark ingest status`
        shown = " ".join(capsys.readouterr().out.split())
        assert f"stalled source {pair.source}: waiting" in shown
        assert f"for a lock on {mirror}" in shown
        assert f"pid {reader.info.backend_pid} (application_name 'bi tool'" in shown
        # A user's session is never cancelled: its transaction is still there.
        assert reader.execute("select 1").fetchone() == (1,)
        assert ingest.is_alive()
    finally:
        reader.rollback()  # the reader ends
        reader.close()
        if ingest is not None:
            ingest.join(timeout=120)
    # (b) the change lands once the reader is gone.
    assert not ingest.is_alive() and "error" not in result, result.get("error")
    assert_mirror_equals(pair, "t")
    assert source_columns(pair.land, "t", pair.source) == source_columns(pair.src, "t")
    assert status(pair.src, pair.land, pair.source)["lock_wait"] is None


@needs_pgbouncer
def test_behind_a_session_pool_the_wait_names_the_reader_only(pair: Pair, tmp_path) -> None:
    """Ingestion leaves its own session out of the lock's holders by the server's process id:
    behind pgbouncer libpq's is the pooler's own key, which no server process has."""
    pair.src_exec("create table t (id int primary key, x int)",
                  "insert into t select g, g from generate_series(1, 100) g")
    catch_up(pair.src, pair.land, pair.source)
    mirror = f"{pair.source}.t"
    bouncer = Pgbouncer(pair.land, "session", str(tmp_path / "pgbouncer"))
    reader = psycopg.connect(pair.land, application_name="bi tool")
    ingest = None
    try:
        reader.execute(f"select count(*) from {mirror}").fetchone()
        pair.src_exec("insert into t values (101, 1)", "alter table t add column y text",
                      "insert into t values (102, 1, 'new')")
        ingest, result = _in_thread(lambda: catch_up(pair.src, bouncer.url(pair.land),
                                                     pair.source, timeout_s=120))
        assert wait_until(lambda: status(pair.src, pair.land, pair.source)["lock_wait"]
                          is not None, timeout=60)
        wait = status(pair.src, pair.land, pair.source)["lock_wait"]
        assert [h["application_name"] for h in wait["holders"]] == ["bi tool"], wait
        assert [h["pid"] for h in wait["holders"]] == [reader.info.backend_pid]
    finally:
        reader.rollback()
        reader.close()
        if ingest is not None:
            ingest.join(timeout=120)
        bouncer.stop()
    assert "error" not in result, result.get("error")
    assert_mirror_equals(pair, "t")


VIEW = "select t.id, t.x, g.note from {m} t join public.gate g on g.id = t.x"


def test_running_verify_is_interrupted_by_the_schema_change_and_says_so(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, x int)",
                  "insert into t select g, 1 from generate_series(1, 50) g")
    catch_up(pair.src, pair.land, pair.source)
    mirror = f"{pair.source}.t"
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("create table public.gate (id int primary key, note text)")
        conn.execute("insert into public.gate values (1, 'one')")
    deploy_embedded(pair.land, [parse_view_text("gated", VIEW.format(m=mirror))])
    # The verify's comparison reads the mirror first, then waits for `gate` (locked here): it
    # holds ACCESS SHARE on the mirror for as long as this test wants.
    gate = psycopg.connect(pair.land)
    ingest = verify = None
    try:
        gate.execute("lock table public.gate in access exclusive mode")
        verify, checked = _in_thread(lambda: streaming_views.verify(pair.land, "gated"))
        with psycopg.connect(pair.land, autocommit=True) as conn:
            assert wait_until(lambda: conn.execute(
                "select exists (select 1 from pg_stat_activity where wait_event_type = 'Lock'"
                " and query ilike '%%except all%%')").fetchone()[0], timeout=60)
        pair.src_exec("alter table t add column y text", "insert into t values (51, 1, 'y')")
        ingest, result = _in_thread(lambda: catch_up(pair.src, pair.land, pair.source,
                                                     timeout_s=120))
        verify.join(timeout=60)
        assert not verify.is_alive(), "the verify was not interrupted"
        assert "error" not in checked, checked.get("error")
        [outcome] = checked["value"]
        assert outcome.interrupted == f"a schema change on {mirror}"
        assert outcome.ok and not outcome.extra and not outcome.missing
        assert outcome.problem is None
    finally:
        gate.rollback()  # the view's maintenance of the new row reads `gate` too
        gate.close()
        for thread in (verify, ingest):
            if thread is not None:
                thread.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert_mirror_equals(pair, "t")
    assert [r.ok and r.interrupted is None
            for r in streaming_views.verify(pair.land, "gated")] == [True]
