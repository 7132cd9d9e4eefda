"""Servers that die under ingestion: the landing server killed (``kill -9`` of the postmaster
and its children, as the OOM killer or a power cut does) in the middle of a large applied
transaction, the source server restarted in the middle of the initial snapshot, the source
server killed while streaming. ``run`` recovers by itself: landing equals the source, and no
change lands twice."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up, run
from ingestion.names import slot_name
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


def _kill9(server: EmbeddedServer) -> None:
    """SIGKILL the postmaster and every process of it at once."""
    master = psutil.Process(server._postmaster_pid())
    children = master.children(recursive=True)
    for proc in [master, *children]:  # the postmaster first: it must not start a recovery
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs([master, *children], timeout=10)


@dataclass
class Case:
    """A source and a landing, one of them on a server of the test's own (``server``), and
    ``run`` streaming in a thread once :meth:`stream` is called."""

    pair: Pair
    server: EmbeddedServer
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def stream(self) -> None:
        p = self.pair
        self.thread = threading.Thread(target=run, args=(p.src, p.land, p.source),
                                       kwargs={"stop": self.stop, "max_backoff_s": 1.0},
                                       daemon=True)
        self.thread.start()

    def landed(self) -> int:
        with psycopg.connect(self.pair.land) as conn:
            try:
                return conn.execute(sql.SQL("select count(*) from {}").format(
                    sql.Identifier(self.pair.source, "r"))).fetchone()[0]
            except psycopg.Error:
                return -1

    def crash(self, kill: bool = True) -> None:
        """The own server killed (or stopped), and started again a second later."""
        if kill:
            _kill9(self.server)
        else:
            self.server.stop()
        time.sleep(1.0)
        self.server.start()

    def recovers(self, rows: int) -> None:
        """More changes; ``run`` lands them by itself and stops cleanly; landing equals the
        source with no change twice."""
        p = self.pair
        p.src_exec("update r set v = 'after' where id % 1000 = 0", "delete from r where id < 6")
        assert wait_until(lambda: self.landed() == rows - 5, 120), self.landed()
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        catch_up(p.src, p.land, p.source)
        assert_mirror_equals(p, "r")
        changes = changelog(p.land, p.source, "r", "_commit_lsn, _seq")
        assert len(changes) == len(set(changes)), "a change landed twice"


@contextlib.contextmanager
def _case(pg: EmbeddedServer, home: Path, source: str, own: str) -> Iterator[Case]:
    """A :class:`Case` with the ``own`` side ("source" or "landing") on a server of its own."""
    major = session_major()
    server = start_test_server(home, major=None if major == WHEEL_MAJOR else major)
    mine, shared = create_database(server, own), create_database(pg, f"{own}_{source}")
    case = Case(Pair(source, *((mine, shared) if own == "source" else (shared, mine))), server)
    try:
        case.pair.src_exec("create table r (id int primary key, v text)")
        yield case
    finally:
        case.stop.set()
        if case.thread is not None:
            case.thread.join(60)
        with contextlib.suppress(psycopg.Error):
            drop_slot(case.pair.src, slot_name(source))
        server.stop()


def test_landing_killed_in_a_large_applied_transaction(pg, tmp_path: Path) -> None:
    with _case(pg, tmp_path / "home", "k9", own="landing") as case:
        case.pair.src_exec("insert into r select g, 'seed' from generate_series(1, 10) g")
        catch_up(case.pair.src, case.pair.land, case.pair.source)
        case.stream()
        case.pair.src_exec("insert into r select g, repeat('x', 40) from"
                           " generate_series(11, 300000) g")

        def applying() -> bool:
            with psycopg.connect(case.server.admin_url("postgres")) as conn:
                return conn.execute(
                    "select count(*) from pg_stat_activity where state = 'active' and"
                    " datname = 'landing' and backend_xid is not null").fetchone()[0] > 0

        assert wait_until(applying, 30), "the landing never applied the large transaction"
        case.crash()
        case.recovers(300000)


def test_source_restarted_in_the_middle_of_the_snapshot(pg, tmp_path: Path) -> None:
    with _case(pg, tmp_path / "home", "rs", own="source") as case:
        case.pair.src_exec("insert into r select g, repeat('y', 60) from"
                           " generate_series(1, 400000) g")
        case.stream()

        def copying() -> bool:
            with psycopg.connect(case.pair.land) as conn:
                try:
                    return conn.execute("select count(*) from tidemark.snapshot_progress where"
                                        " state in ('copying', 'copied')").fetchone()[0] > 0
                except psycopg.Error:
                    return False

        assert wait_until(copying, 60), "the snapshot never started"
        case.crash(kill=False)
        case.recovers(400000)


def test_source_killed_while_streaming_is_not_taken_for_a_restore(
        pg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A source server killed while its changes stream comes back with its slot behind what
    landing acknowledged (slot state is saved at checkpoints) but its WAL past the checkpoint:
    an ordinary crash, streamed on (the restore checks do not refuse it)."""
    with _case(pg, tmp_path / "home", "sk", own="source") as case:
        case.pair.src_exec("insert into r select g, 'seed' from generate_series(1, 1000) g")
        catch_up(case.pair.src, case.pair.land, case.pair.source)
        case.stream()
        for start in range(1001, 51001, 5000):
            case.pair.src_exec(f"insert into r select g, 'x' from generate_series({start},"
                               f" {start + 4999}) g")
        assert wait_until(lambda: case.landed() == 51000, 60)
        caplog.set_level(logging.WARNING, logger="tidemark.ingestion")
        case.crash()
        case.recovers(51000)
        assert "behind landing's checkpoint" in caplog.text  # the case it is about
        assert "normal after the source server crashed" in caplog.text
