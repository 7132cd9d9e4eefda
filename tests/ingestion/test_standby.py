"""A standby as the source: PostgreSQL 16 and later decode logical changes on a standby.

Users point CDC at a replica to keep its reads off the primary. The stream's URL names the
standby (its slot is its own); ``--admin-url`` names the primary, where the publication and the
heartbeats are written and reach the standby by WAL. Each test runs a primary and its streaming
standby of one major version (tests/pgversions.py; a version not available here is skipped),
and lands on the session server:

- the snapshot, the stream and ``status`` work from the standby, and an idle catch-up ends on
  the primary's heartbeat;
- a slot the standby invalidated (its primary's VACUUM removed catalog rows the slot needed:
  ``hot_standby_feedback`` off) is named as that, not as ``max_slot_wal_keep_size``, and
  ``resync --all`` recovers: it drops the slot on the standby, where it is, not on the primary;
- before 16, and for a source added without an admin URL, the error says what to point where.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up, run
from ingestion.errors import PermanentSourceError, SourceError
from ingestion.names import slot_name
from ingestion.resync import resync
from ingestion.source_admin import add_source, describe_sources, remove_source
from ingestion.sources import SourceSpec, save_source
from ingestion.status import status
from ingestion.target import emit_heartbeat
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tests.support import create_database, start_standby, start_test_server
from tidemark.stack.embedded import EmbeddedServer

CHURN = ("create table churn (a int, b text)", "drop table churn")


@pytest.fixture(params=[16, 17, None], ids=["pg16", "pg17", "pg18"])
def servers(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """A primary and its standby (18: the wheel's own), database ``src`` on both."""
    primary = start_test_server(tmp_path / "primary", major=request.param)
    standby = None
    try:
        create_database(primary, "src")
        standby = start_standby(primary, tmp_path / "standby")
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _replayed(primary_url: str, standby_url: str, timeout_s: float = 30) -> None:
    """Wait until the standby has replayed everything the primary has written."""
    with psycopg.connect(primary_url, autocommit=True) as conn:
        target = conn.execute("select pg_current_wal_insert_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while conn.execute("select pg_last_wal_replay_lsn() < %s::pg_lsn",
                           (str(target),)).fetchone()[0]:
            assert time.monotonic() < deadline, "the standby did not replay the primary's WAL"
            time.sleep(0.1)


def _conflicting(standby_url: str, slot: str, timeout_s: float = 30) -> bool:
    with psycopg.connect(standby_url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = conn.execute("select conflicting from pg_replication_slots where slot_name = %s",
                               (slot,)).fetchone()
            if row is not None and row[0]:
                return True
            time.sleep(0.2)
    return False


def test_a_standby_streams_and_its_invalidated_slot_is_named_and_resynced(
        servers: tuple[EmbeddedServer, EmbeddedServer], pg: EmbeddedServer) -> None:
    primary, standby = servers
    major = primary.status().version.split(".")[0]
    p = Pair(f"sb{major}", primary.admin_url("src"), create_database(pg, f"land_sb{major}"))
    replica = standby.admin_url("src")
    p.src_exec("create table items (id int primary key, name text)",
               "insert into items select i, 'n' || i from generate_series(1, 200) i")
    _replayed(p.src, replica)

    stats = catch_up(replica, p.land, p.source, setup_dsn=p.src)
    assert stats.snapshot_rows == 200
    p.src_exec("update items set name = 'renamed' where id <= 10",
               "delete from items where id > 190", "insert into items values (500, 'new')")
    catch_up(replica, p.land, p.source, setup_dsn=p.src)  # ends on the primary's heartbeat
    assert_mirror_equals(p, "items")
    # Without an admin URL the heartbeats fall to the standby: it answers none, and its log
    # gets no error for each (round 45 logged "cannot assign TransactionIds during recovery").
    assert emit_heartbeat(replica) is None
    assert emit_heartbeat(p.src) is not None
    assert "during recovery" not in standby.log_file.read_text(errors="replace")
    seen = status(replica, p.land, p.source)  # WAL positions read as a standby can
    assert seen["slot_exists"] and seen["lag_bytes"] is not None
    save_source(p.land, SourceSpec(p.source, url=replica, admin_url=p.src))
    listed = {item["name"]: item for item in describe_sources(p.land)}  # `tidemark source list`
    assert listed[p.source]["slot"] == "idle", listed[p.source]

    # The slot falls behind while nothing streams; the primary's VACUUM removes the catalog
    # rows it still needs (hot_standby_feedback is off): the standby invalidates it.
    p.src_exec(*CHURN, *CHURN, "vacuum pg_class, pg_attribute, pg_type, pg_depend")
    assert _conflicting(replica, slot_name(p.source)), "the standby kept the slot valid"
    p.src_exec("insert into items values (501, 'after')")
    with pytest.raises(PermanentSourceError) as lost:
        catch_up(replica, p.land, p.source, setup_dsn=p.src)
    message = str(lost.value)
    assert "standby" in message and "hot_standby_feedback = on" in message, message
    assert "max_slot_wal_keep_size" not in message, message
    assert f"tidemark ingest resync --all --source {p.source}" in message, message

    said = resync(replica, p.land, p.source, setup_dsn=p.src)
    assert "new slot and snapshot" in said, said
    assert_mirror_equals(p, "items")
    p.src_exec("update items set name = 'again' where id = 501")
    catch_up(replica, p.land, p.source, setup_dsn=p.src)
    assert_mirror_equals(p, "items")


@pytest.mark.timeout(180)
def test_a_tables_resync_on_a_standby_of_an_idle_primary_ends(tmp_path: Path,
                                                              pg: EmbeddedServer) -> None:
    # The resync's temporary slot, made on the standby, waits for a running-transactions
    # record from the primary. An idle primary writes none (round 45: the resync waited for
    # good); the resync asks for one, as the source's own slot creation does. (18 only.)
    primary = start_test_server(tmp_path / "primary", conf={"autovacuum": "off"})  # idle
    standby = None
    try:
        p = Pair("sbrs", create_database(primary, "src"), create_database(pg, "land_sbrs"))
        standby = start_standby(primary, tmp_path / "standby")
        replica = standby.admin_url("src")
        p.src_exec("create table items (id int primary key, name text)",
                   "insert into items select i, 'n' || i from generate_series(1, 50) i")
        _replayed(p.src, replica)
        catch_up(replica, p.land, p.source, setup_dsn=p.src)
        p.src_exec("update items set name = 'changed' where id <= 5")
        # The primary's background writer logs its last record within 15 s of a write, then
        # nothing while the primary is idle.
        time.sleep(16)
        _replayed(p.src, replica)
        said = resync(replica, p.land, p.source, "items", setup_dsn=p.src)
        assert "rebuilt from a snapshot" in said and "50 rows" in said, said
        assert_mirror_equals(p, "items")
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def test_a_standby_without_an_admin_url_is_refused_with_the_way_forward(
        servers: tuple[EmbeddedServer, EmbeddedServer], pg: EmbeddedServer) -> None:
    primary, standby = servers
    p = Pair("sbadd", primary.admin_url("src"), create_database(pg, "land_sbadd"))
    p.src_exec("create table items (id int primary key)")
    _replayed(p.src, standby.admin_url("src"))
    with pytest.raises(PermanentSourceError) as refused:
        add_source(p.land, SourceSpec(p.source, url=standby.admin_url("src")))
    assert "--admin-url naming the primary" in str(refused.value), str(refused.value)


def test_a_standby_before_16_is_refused_with_the_way_forward(tmp_path: Path,
                                                              pg: EmbeddedServer) -> None:
    primary = start_test_server(tmp_path / "primary", major=15)
    standby = None
    try:
        src = create_database(primary, "src")
        standby = start_standby(primary, tmp_path / "standby")
        land = create_database(pg, "land_sb15")
        with pytest.raises(PermanentSourceError) as refused:
            catch_up(standby.admin_url("src"), land, "sb15", setup_dsn=src)
        message = str(refused.value)
        assert "PostgreSQL 16" in message and "primary" in message, message
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def test_a_promoted_standby_is_named_and_registered_again_without_loss(
        tmp_path: Path, pg: EmbeddedServer, caplog: pytest.LogCaptureFixture) -> None:
    """A failover under a running ingestion: the primary goes, the standby source is promoted
    and written to. On main the run said only "connection lost (... port N ...)" for good, and
    `source remove` named the stream's URL for the admin URL that failed; now the run says what
    happened and what to do, and doing it (remove --force, add) lands every change."""
    primary = start_test_server(tmp_path / "primary")
    standby = None
    try:
        create_database(primary, "src")
        standby = start_standby(primary, tmp_path / "standby")
        p = Pair("sbpromo", primary.admin_url("src"), create_database(pg, "land_sbpromo"))
        replica = standby.admin_url("src")
        p.src_exec("create table items (id int primary key, name text)",
                   "insert into items select i, 'n' || i from generate_series(1, 50) i")
        _replayed(p.src, replica)
        catch_up(replica, p.land, p.source, setup_dsn=p.src)
        save_source(p.land, SourceSpec(p.source, url=replica, admin_url=p.src))
        primary.stop()
        with psycopg.connect(replica, autocommit=True) as conn:
            conn.execute("select pg_promote()")
            conn.execute("insert into items values (100, 'after the failover')")
        stop = threading.Event()
        runner = threading.Thread(target=run, args=(replica, p.land, p.source), kwargs={
            "setup_dsn": p.src, "stop": stop, "max_backoff_s": 0.5}, daemon=True)
        with caplog.at_level(logging.WARNING, logger="tidemark.ingestion"):
            runner.start()
            deadline = time.monotonic() + 30
            while "is a primary" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.2)
            stop.set()
            runner.join(30)
        assert f"the admin URL's server 127.0.0.1:{primary.port} cannot be reached" \
            in caplog.text, caplog.text
        assert f"`tidemark source remove {p.source} --force`" in caplog.text
        with pytest.raises(SourceError, match=f"cannot reach {re.escape(p.src)} now"):
            remove_source(p.land, p.source)
        remove_source(p.land, p.source, force=True)
        add_source(p.land, SourceSpec(p.source, url=replica))
        catch_up(replica, p.land, p.source)
        assert_mirror_equals(Pair(p.source, replica, p.land), "items")
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
