"""Restarts of the server holding source and landing, and dropped connections, while ``run``
streams under load: it reconnects with backoff (and says so in the log) and loses nothing."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up, run
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, spawn_run
from tests.support import create_database, start_test_server


def write(url: str, start: int, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(start, start + count):
            conn.execute("insert into r values (%s, 'x')", (i,))


def landed_pair(server, source: str, rows: int) -> Pair:
    """Source and landing databases on ``server``, table ``r`` with ``rows`` rows, landed."""
    pair = Pair(source, create_database(server, "src"), create_database(server, "land"))
    pair.src_exec("create table r (id int primary key, v text)")
    write(pair.src, 0, rows)
    catch_up(pair.src, pair.land, pair.source)
    return pair


def test_server_restart_and_dropped_connections(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    server = start_test_server(tmp_path / "home")
    stop = threading.Event()
    thread = None
    try:
        pair = landed_pair(server, "res", 50)
        caplog.set_level(logging.INFO, logger="tidemark.ingestion")
        thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                                  kwargs={"stop": stop, "max_backoff_s": 1.0})
        thread.start()
        write(pair.src, 100, 50)
        server.stop()   # source and landing go away together
        time.sleep(1.0)
        server.start()
        write(pair.src, 200, 50)
        with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
            time.sleep(1.0)
            # dropped connections: the walsender and the landing session
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where"
                         " backend_type = 'walsender' or (datname = 'land' and pid <>"
                         " pg_backend_pid())")
        write(pair.src, 300, 50)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with psycopg.connect(pair.land) as conn:
                try:
                    n = conn.execute("select count(*) from res.r").fetchone()[0]
                except psycopg.Error:
                    n = 0
            if n == 200:
                break
            time.sleep(0.3)
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        assert "connection lost" in caplog.text and "reconnecting" in caplog.text
        catch_up(pair.src, pair.land, pair.source)
        assert_mirror_equals(pair, "r")
        rows = changelog(pair.land, pair.source, "r", "id, _op")
        assert len(rows) == len(set(rows)) == 200
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        server.stop()


def test_a_paused_process_reconnects_after_the_walsender_timed_out(tmp_path: Path) -> None:
    """Ingestion paused longer than ``wal_sender_timeout`` (SIGSTOP here; a suspended laptop or
    VM, a long stall in production): the server ends the replication connection, and on
    resuming libpq reports an error without a message. That is a lost connection, retried — it
    used to be reported as permanent, which stopped ingestion and with it all of `tidemark up`.
    """
    import os
    import signal

    server = start_test_server(tmp_path / "home")
    proc = None
    try:
        pair = landed_pair(server, "pz", 10)
        with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
            conn.execute("alter system set wal_sender_timeout = '2s'")
            conn.execute("select pg_reload_conf()")
        log = tmp_path / "run.log"
        proc = spawn_run(pair, log)
        write(pair.src, 100, 1)
        _wait_rows(pair, 11)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(5)  # well past wal_sender_timeout
        os.kill(proc.pid, signal.SIGCONT)
        write(pair.src, 200, 1)
        landed = _wait_rows(pair, 12)
        assert proc.poll() is None, log.read_text()
        assert landed == 12 and "reconnecting" in log.read_text(), log.read_text()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        server.stop()


def _wait_rows(pair: Pair, n: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(pair.land) as conn:
            count = conn.execute("select count(*) from pz.r").fetchone()[0]
        if count >= n or time.monotonic() > deadline:
            return count
        time.sleep(0.3)
