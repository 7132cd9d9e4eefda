"""Servers that die under ingestion: the landing server killed (``kill -9`` of the postmaster
and its children, as the OOM killer or a power cut does) in the middle of a large applied
transaction, and the source server restarted in the middle of the initial snapshot. ``run``
recovers by itself: landing equals the source, and no change lands twice."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import psutil
import psycopg

from ingestion import catch_up, run
from tests.ingestion.conftest import (
    Pair,
    assert_mirror_equals,
    changelog,
    drop_slot,
    wait_until,
)
from tests.pgversions import WHEEL_MAJOR, session_major
from tests.support import create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer


def _server(home: Path) -> EmbeddedServer:
    major = session_major()
    return start_test_server(home, major=None if major == WHEEL_MAJOR else major)


def _kill9(server: EmbeddedServer) -> None:
    """SIGKILL the postmaster and every process of it at once."""
    master = psutil.Process(server._postmaster_pid())
    children = master.children(recursive=True)
    for proc in [master, *children]:  # the postmaster first: it must not start a recovery
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs([master, *children], timeout=10)


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(f"select count(*) from {table}").fetchone()[0]
        except psycopg.Error:
            return -1


def _streaming(pair: Pair, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "max_backoff_s": 1.0}, daemon=True)
    thread.start()
    return thread


def _recovers(pair: Pair, stop: threading.Event, thread: threading.Thread, rows: int) -> None:
    """After the crash: more changes; ``run`` lands them by itself, stops cleanly, and landing
    equals the source with no change twice."""
    pair.src_exec("update r set v = 'after' where id % 1000 = 0", "delete from r where id < 6")
    table = f"{pair.source}.r"
    assert wait_until(lambda: _count(pair.land, table) == rows - 5, 120), \
        _count(pair.land, table)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "r")
    changes = changelog(pair.land, pair.source, "r", "_commit_lsn, _seq")
    assert len(changes) == len(set(changes)), "a change landed twice"


def test_landing_killed_in_a_large_applied_transaction(pg, tmp_path: Path) -> None:
    landing = _server(tmp_path / "landhome")
    stop = threading.Event()
    thread = None
    pair = Pair("k9", create_database(pg, "src_kill9"), create_database(landing, "land"))
    try:
        pair.src_exec("create table r (id int primary key, v text)",
                      "insert into r select g, 'seed' from generate_series(1, 10) g")
        catch_up(pair.src, pair.land, pair.source)
        thread = _streaming(pair, stop)
        pair.src_exec("insert into r select g, repeat('x', 40) from generate_series(11, 300000) g")

        def applying() -> bool:
            with psycopg.connect(landing.admin_url("postgres")) as conn:
                return conn.execute(
                    "select count(*) from pg_stat_activity where state = 'active' and"
                    " datname = 'land' and backend_xid is not null").fetchone()[0] > 0

        assert wait_until(applying, 30), "the landing never applied the large transaction"
        _kill9(landing)
        time.sleep(1.0)
        landing.start()
        _recovers(pair, stop, thread, 300000)
    finally:
        stop.set()
        if thread is not None:
            thread.join(60)
        drop_slot(pair.src, "tidemark_k9")
        landing.stop()


def test_source_restarted_in_the_middle_of_the_snapshot(pg, tmp_path: Path) -> None:
    source = _server(tmp_path / "srchome")
    stop = threading.Event()
    thread = None
    pair = Pair("rs", create_database(source, "src"), create_database(pg, "land_midsnap"))
    try:
        pair.src_exec("create table r (id int primary key, v text)",
                      "insert into r select g, repeat('y', 60) from generate_series(1, 400000) g")
        thread = _streaming(pair, stop)

        def copying() -> bool:
            with psycopg.connect(pair.land) as conn:
                try:
                    return conn.execute("select count(*) from tidemark.snapshot_progress where"
                                        " state in ('copying', 'copied')").fetchone()[0] > 0
                except psycopg.Error:
                    return False

        assert wait_until(copying, 60), "the snapshot never started"
        source.stop()
        time.sleep(1.0)
        source.start()
        _recovers(pair, stop, thread, 400000)
    finally:
        stop.set()
        if thread is not None:
            thread.join(60)
        source.stop()
