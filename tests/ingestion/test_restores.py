"""What operations teams do to databases: landing restored from an older ``pg_dump``, landing
re-created empty, the source restored from a dump or its server from a base backup, two
ingestions of one source at once. Afterwards landing equals the source, or ingestion refuses to
stream with a hole and says what to do (``tidemark ingest resync --all``): it never streams on
with changes missing, and never twice."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ingestion import catch_up, resync
from ingestion.errors import (
    IngestionRunningError,
    LandingRestoredError,
    SlotMissingError,
    SourceBehindError,
    SourceReplacedError,
)
from ingestion.names import slot_name
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text
from tests.ingestion.conftest import (
    Pair,
    assert_mirror_equals,
    changelog,
    drop_slot,
    spawn_run,
    wait_until,
)
from tests.pgversions import WHEEL_MAJOR, session_major
from tests.support import create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer, server_binary


def _binary(pg: EmbeddedServer, name: str) -> str:
    return str((pg.bin_dir / name) if pg.bin_dir is not None else server_binary(name))


def _dump(pg: EmbeddedServer, url: str) -> bytes:
    """``pg_dump`` of a database (plain SQL), as an operator takes a backup."""
    return subprocess.run([_binary(pg, "pg_dump"), "-d", url], check=True,
                          capture_output=True).stdout


def _restore(pg: EmbeddedServer, url: str, dump: bytes) -> None:
    """Drop the database, create it empty and load ``dump`` into it with psql."""
    create_database(pg, conninfo_to_dict(url)["dbname"])
    subprocess.run([_binary(pg, "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
                   input=dump, check=True, capture_output=True)


def _insert(p: Pair, start: int, count: int) -> None:
    p.src_exec(f"insert into r select g, 'v' || g from generate_series({start},"
               f" {start + count - 1}) g")


def _landed(p: Pair) -> int:
    with psycopg.connect(p.land) as conn:
        return conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(p.source, "r"))).fetchone()[0]


def _assert_once(p: Pair) -> None:
    """Mirror == source, and no change twice in the changelog."""
    assert_mirror_equals(p, "r")
    rows = changelog(p.land, p.source, "r", "_commit_lsn, _seq")
    assert len(rows) == len(set(rows)), "a change landed twice"


def test_landing_restored_from_an_older_dump_is_refused_then_resynced(pg, pair: Pair) -> None:
    """Landing restored from a pg_dump taken before changes that were applied and acknowledged:
    the slot is past the restored checkpoint, those changes are gone from it. Streaming on left
    them out of landing for ever, silently; now ingestion refuses and names the resync."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    view = f"select left(r.v, 2) as head, count(*) as n from {pair.source}.r r group by 1"
    deploy_embedded(pair.land, [parse_view_text("heads", view)])
    backup = _dump(pg, pair.land)
    _insert(pair, 10, 10)
    pair.src_exec("update r set v = 'changed' where id < 5")
    catch_up(pair.src, pair.land, pair.source)  # applied and acknowledged
    _restore(pg, pair.land, backup)
    _insert(pair, 20, 10)
    with pytest.raises(LandingRestoredError, match="resync --all") as info:
        catch_up(pair.src, pair.land, pair.source)
    assert "restored from a backup" in str(info.value)
    resync(pair.src, pair.land, pair.source)
    _insert(pair, 30, 10)
    pair.src_exec("update r set v = 'later' where id % 4 = 0")
    catch_up(pair.src, pair.land, pair.source)
    _assert_once(pair)
    with psycopg.connect(pair.land) as conn:  # the live view equals its query again
        diff = conn.execute(f"(select * from live.heads except all ({view})) union all"
                            f" (({view}) except all select * from live.heads)").fetchall()
        assert diff == [] and conn.execute("select count(*) from live.heads").fetchone()[0] > 1


def test_an_ordinary_restart_after_idle_wal_streams_on(pair: Pair) -> None:
    """The slot moves past the checkpoint over WAL with nothing published (psycopg2 forwards
    the acknowledged position to the keepalives' WAL end): not a restored landing."""
    pair.src_exec("create table r (id int primary key, v text)", "create table other (x int)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("insert into other select generate_series(1, 20000)")
    catch_up(pair.src, pair.land, pair.source)
    _insert(pair, 10, 10)
    catch_up(pair.src, pair.land, pair.source)
    _assert_once(pair)


def test_a_slot_behind_landing_on_a_source_that_ran_all_along_is_not_called_a_crash(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    # The stream ended before the acknowledgement of landing's last commit reached the source
    # (here: landing's checkpoint moved past the slot over WAL holding no change). Before, the
    # restart logged "normal after the source server crashed" although no server had (p38: a
    # resync longer than wal_sender_timeout ended the stream).
    import logging

    pair.src_exec("create table t (id int primary key)", "insert into t values (1)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        lsn = conn.execute("select pg_logical_emit_message(false, 'z38', 'x')::text"
                           ).fetchone()[0]
    with psycopg.connect(pair.land) as conn:
        conn.execute("update tidemark.checkpoints set lsn = %s, last_applied_at ="
                     " clock_timestamp() where source = %s", (lsn, pair.source))
    pair.src_exec("insert into t values (2)")
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source)
    assert "behind landing's checkpoint" in caplog.text  # the case it is about
    assert "crashed" not in caplog.text and "no crash, nothing lost" in caplog.text
    assert "wal_sender_timeout" in caplog.text
    assert_mirror_equals(pair, "t")


def test_landing_recreated_empty_takes_a_fresh_snapshot(pg, pair: Pair) -> None:
    """Landing dropped and re-created empty while the slot stays: a new snapshot, not a stream
    from the old slot position into empty tables."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    _insert(pair, 10, 10)
    create_database(pg, conninfo_to_dict(pair.land)["dbname"])
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.snapshot_rows == 20
    _insert(pair, 20, 10)
    catch_up(pair.src, pair.land, pair.source)
    _assert_once(pair)


def test_source_restored_from_a_dump_is_refused_then_resynced(pg, pair: Pair) -> None:
    """The source database dropped (its slot first: PostgreSQL insists) and restored from a
    dump: new OIDs, no slot. Ingestion says so and names the resync, which lands it again."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    _insert(pair, 10, 10)
    catch_up(pair.src, pair.land, pair.source)
    backup = _dump(pg, pair.src)
    drop_slot(pair.src, slot_name(pair.source))
    _restore(pg, pair.src, backup)
    _insert(pair, 20, 10)
    with pytest.raises(SlotMissingError,
                       match="re-created .its OID.*restored from a dump.*resync --all"):
        catch_up(pair.src, pair.land, pair.source)
    resync(pair.src, pair.land, pair.source)
    pair.src_exec("update r set v = 'after' where id % 3 = 0", "delete from r where id = 7")
    catch_up(pair.src, pair.land, pair.source)
    _assert_once(pair)


def test_a_slot_made_again_in_a_re_created_source_database_is_refused(pg, pair: Pair) -> None:
    """The source database restored from a dump (its slot dropped first: PostgreSQL insists),
    then a DBA makes the slot again by hand: on main ingestion streamed on from the new slot,
    silently without the changes made before it (and landing kept rows the source no longer
    had). The database's OID recorded with the checkpoint tells: refused, the resync named."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    backup = _dump(pg, pair.src)
    _insert(pair, 10, 10)
    catch_up(pair.src, pair.land, pair.source)
    drop_slot(pair.src, slot_name(pair.source))
    _restore(pg, pair.src, backup)  # rows 10..19 gone from the source, in landing
    _insert(pair, 20, 5)  # before the slot: in no stream
    pair.src_exec(f"select pg_create_logical_replication_slot('{slot_name(pair.source)}',"
                  f" 'pgoutput')")
    _insert(pair, 30, 5)
    with pytest.raises(SourceReplacedError, match="re-created.*resync --all"):
        catch_up(pair.src, pair.land, pair.source)
    resync(pair.src, pair.land, pair.source)
    pair.src_exec("update r set v = 'after' where id % 3 = 0")
    catch_up(pair.src, pair.land, pair.source)
    _assert_once(pair)


@pytest.mark.parametrize("written, refusal", [
    (5, "behind landing.*resync --all"),
    (3000, "different history.*resync --all"),
], ids=["behind", "written_past"])
def test_source_server_restored_from_a_base_backup_is_refused_then_resynced(
        pg, tmp_path: Path, written: int, refusal: str) -> None:
    """The source's server restarted from a file-level backup (a copy, a disk snapshot) taken
    before changes landing has: its slot and WAL are behind the checkpoint. Streamed on, the
    source's new changes (reusing those WAL positions) were skipped and landing kept rows the
    source no longer has; now ingestion refuses, and the resync makes landing equal the source.

    ``written_past``: the restored server is written until its WAL passes landing's checkpoint
    before ingestion comes back, so the WAL-position check passes and the slot is behind the
    checkpoint as after a crash: on main its transactions below the checkpoint (rows 5000..5004)
    were skipped with a warning only. Now the replay must hold landing's last transaction."""
    major = session_major()
    server = start_test_server(tmp_path / "srchome", major=None if major == WHEEL_MAJOR
                               else major)
    try:
        pair = Pair("bb", create_database(server, "src"), create_database(pg, "land_basebackup"))
        pair.src_exec("create table r (id int primary key, v text)")
        _insert(pair, 0, 10)
        catch_up(pair.src, pair.land, pair.source)
        server.stop()
        backup = tmp_path / "backup"
        subprocess.run(["cp", "-a", str(server.pgdata), str(backup)], check=True)
        server.start()
        _insert(pair, 10, 1000)
        catch_up(pair.src, pair.land, pair.source)
        server.stop()
        subprocess.run(["rm", "-rf", str(server.pgdata)], check=True)
        subprocess.run(["cp", "-a", str(backup), str(server.pgdata)], check=True)
        server.start()
        _insert(pair, 5000, 5)
        if written > 5:  # one transaction past landing's checkpoint
            _insert(pair, 6000, written)
        with pytest.raises(SourceBehindError, match=refusal):
            catch_up(pair.src, pair.land, pair.source)
        resync(pair.src, pair.land, pair.source)
        _insert(pair, 9500, 5)
        catch_up(pair.src, pair.land, pair.source)
        _assert_once(pair)
    finally:
        server.stop()


def test_a_second_ingestion_of_a_source_is_refused_naming_the_first(pair: Pair,
                                                                     tmp_path: Path) -> None:
    """A forgotten `ingest run` in another terminal: a second one is refused within seconds,
    with the first's process id and since when (it waited half a minute and named a server
    process)."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    log = tmp_path / "first.log"
    first = spawn_run(pair, log)
    try:
        _insert(pair, 10, 10)
        assert wait_until(lambda: _landed(pair) == 20, 30), log.read_text()
        started = time.monotonic()
        with pytest.raises(IngestionRunningError) as info:
            catch_up(pair.src, pair.land, pair.source)
        assert time.monotonic() - started < 15
        assert f"pid {first.pid}" in str(info.value) and "since" in str(info.value)
        assert first.poll() is None, log.read_text()
        _insert(pair, 20, 10)  # the first one streams on, alone
        assert wait_until(lambda: _landed(pair) == 30, 30), log.read_text()
    finally:
        first.terminate()
        first.wait(30)
    catch_up(pair.src, pair.land, pair.source)  # the lock went with the first process
    _assert_once(pair)


def test_the_landing_session_of_a_killed_ingestion_does_not_block_a_restart(
        pair: Pair) -> None:
    """An ingestion killed in a long landing statement leaves its backend, and the lock, until
    that statement ends: the restarted process ends that session instead of being refused."""
    pair.src_exec("create table r (id int primary key, v text)")
    _insert(pair, 0, 10)
    catch_up(pair.src, pair.land, pair.source)
    gone = subprocess.Popen(["true"])
    gone.wait()
    name = f"tidemark ingest (pid {gone.pid} on {socket.gethostname()}) {pair.source}"
    locked = threading.Event()
    errors: list[str] = []

    def long_statement() -> None:
        with psycopg.connect(pair.land, autocommit=True, application_name=name) as conn:
            conn.execute("select pg_advisory_lock(hashtext('tidemark:ingest-process'),"
                         " hashtext(%s))", (pair.source,))
            locked.set()
            try:
                conn.execute("select pg_sleep(120)")
            except psycopg.Error as exc:
                errors.append(type(exc).__name__)

    holder = threading.Thread(target=long_statement, daemon=True)
    holder.start()
    assert locked.wait(10)
    _insert(pair, 10, 10)
    started = time.monotonic()
    catch_up(pair.src, pair.land, pair.source)
    assert time.monotonic() - started < 60  # not after the 120 s statement
    holder.join(10)
    assert errors == ["AdminShutdown"]
    _assert_once(pair)
