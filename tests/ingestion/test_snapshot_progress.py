"""What a user sees of a long snapshot (bench/RESULTS.md, s36: 20M rows, a landing at default
settings): the ETA once every row is in, ``ingest status`` while a table's indexes build, and
index builds that sorted on disk."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up, progress
from ingestion.progress import ProgressTracker, read_progress
from tests.ingestion.conftest import Pair, assert_mirror_equals, wait_until


def test_eta_is_unknown_not_zero_while_the_copied_tables_finish(pair: Pair) -> None:
    """At 10x the ETA said 0 s for the last 54 s of a 314 s snapshot: it timed the rows, and
    every row was in while the checks and index builds ran. Once no table is left to copy it
    is now unknown, and the tables still finishing are named."""
    pair.src_exec("create table big (id int primary key, v text)",
                  "insert into big select g, md5(g::text) from generate_series(1, 50000) g",
                  "analyze big")
    reports: list[dict] = []
    catch_up(pair.src, pair.land, pair.source, timeout_s=120,
             on_progress=lambda p: reports.append(p.as_dict()))
    after_copy = [r for r in reports if not r["done"] and r["rows"] >= 50_000]
    assert after_copy, reports
    assert all(r["eta_s"] is None for r in after_copy), after_copy
    assert any(r["finishing"] == ["big"] for r in after_copy), after_copy
    assert reports[-1]["done"] and reports[-1]["eta_s"] == 0.0
    assert_mirror_equals(pair, "big")


def test_status_says_running_while_a_table_builds_its_indexes(pair: Pair,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A table passes no row on while its indexes build (74 s for 18M rows at 10x); after
    ``STALE_S`` without progress, ``ingest status`` called the running snapshot interrupted
    (the process died). The tracker now reports its tables while they run."""
    monkeypatch.setattr(progress, "STALE_S", 2.0)  # a heartbeat every 0.33 s
    tracker = ProgressTracker(pair.land, pair.source, 1, [("big", 1000)])
    try:
        tracker.start("big")
        tracker.add("big", 1000)
        tracker.copied("big")
        time.sleep(4.5)  # the index builds: no row for longer than STALE_S
        with psycopg.connect(pair.land, autocommit=True) as conn:
            shown = read_progress(conn, pair.source)
        assert shown is not None
        assert (shown["state"], shown["finishing"], shown["eta_s"]) == ("running", ["big"], None)
    finally:
        tracker.close(done=False)


def _temp_files(url: str) -> int:
    """Temporary files written in ``url``'s database, once its other backends have exited
    (a backend reports its counts when it ends)."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert wait_until(lambda: conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and"
            " pid <> pg_backend_pid()").fetchone()[0] == 0, 30)
        time.sleep(0.2)
        conn.execute("select pg_stat_clear_snapshot()")
        return conn.execute("select temp_files from pg_stat_database"
                            " where datname = current_database()").fetchone()[0]


def test_index_builds_sort_in_memory_on_a_server_with_little_maintenance_memory(
        pair: Pair) -> None:
    """At the server default (64 MB) the builds of an 18M-row table sorted on disk (1.2 GB of
    temporary files in one snapshot). They now raise ``maintenance_work_mem`` for their own
    transaction, sized to the table: here a landing with 1 MB and 100,000 rows."""
    pair.src_exec("create table big (id int primary key, v int)",
                  "insert into big select g, g from generate_series(1, 100000) g", "analyze big")
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set maintenance_work_mem = '1MB'").format(
            sql.Identifier(conn.info.dbname)))
    before = _temp_files(pair.land)
    catch_up(pair.src, pair.land, pair.source, timeout_s=120)
    assert _temp_files(pair.land) == before
    assert_mirror_equals(pair, "big")
