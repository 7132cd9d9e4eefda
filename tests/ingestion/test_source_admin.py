"""`source add` checks the database and publishes safe tables only; `source remove` drops the
slot and the publication and says what stays in landing; permanent problems are refused with
what to do (database missing, wal_level, slot in another database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up
from ingestion.catalog import wait_slot_free
from ingestion.errors import PermanentSourceError, SourceBusyError, SourceError
from ingestion.source_admin import add_source, describe_sources, remove_source
from ingestion.sources import SourceSpec, get_source, list_sources, save_source
from tests.ingestion.conftest import Pair
from tests.support import (
    FEW_LOCKS_CONF,
    TEST_CONF,
    create_database,
    create_databases,
    free_port,
    other_database,
    start_test_server,
)
from tidemark.settings import Settings
from tidemark.stack.embedded import EmbeddedServer


def _slots(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select slot_name from pg_replication_slots")]


def _publications(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select pubname from pg_publication")]


def test_add_list_remove(pair: Pair) -> None:
    pair.src_exec("create schema sales", "create table sales.orders (id int primary key)",
                  "create table public.c (id int primary key)",
                  "create table public.log (x int)", "insert into sales.orders values (1)")
    spec = SourceSpec(pair.source, url=pair.src, schemas=("public", "sales"))
    report = add_source(pair.land, spec)
    assert set(report.publication.published) == {"public.c", "sales.orders"}
    assert [t.qualified for t in report.publication.unpublishable] == ["public.log"]
    assert [s.name for s in list_sources(pair.land)] == [pair.source]
    assert get_source(pair.land, pair.source).selection.schemas == ("public", "sales")
    with pytest.raises(SourceError, match="registered already"):
        add_source(pair.land, spec)

    catch_up(pair.src, pair.land, pair.source)
    described = describe_sources(pair.land)[0]
    assert described["slot"] == "idle" and described["tables"] == 2
    assert described["snapshot"]["state"] == "done"
    slot = f"tidemark_{pair.source}"
    assert slot in _slots(pair.src) and slot in _publications(pair.src)

    removed = remove_source(pair.land, pair.source)
    assert slot not in _slots(pair.src) and slot not in _publications(pair.src)
    assert removed.dropped == [f"replication slot {slot}", f"publication {slot}"]
    assert any("2 mirror tables" in line for line in removed.landing_left)
    assert list_sources(pair.land) == []
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f'select count(*) from "{pair.source}".sales__orders'
                            ).fetchone()[0] == 1, "landing data is kept"
        assert conn.execute("select count(*) from tidemark.checkpoints where source = %s",
                            (pair.source,)).fetchone()[0] == 0

    # Added again, it starts over with a new slot and snapshot into the tables landing has.
    add_source(pair.land, spec)
    pair.src_exec("insert into sales.orders values (2)")
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.snapshot_rows == 2
    remove_source(pair.land, pair.source, drop_landing=True)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select to_regnamespace(%s)", (pair.source,)).fetchone()[0] is None


def _stream(pair: Pair):
    """A replication connection streaming from the source's slot (as `ingest run` does)."""
    import psycopg2
    import psycopg2.extras

    repl = psycopg2.connect(pair.src,
                            connection_factory=psycopg2.extras.LogicalReplicationConnection)
    repl.cursor().start_replication(slot_name=f"tidemark_{pair.source}", decode=False,
                                    options={"proto_version": "1", "publication_names":
                                             f"tidemark_{pair.source}"})
    return repl


def test_remove_refuses_while_streaming(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key)")
    add_source(pair.land, SourceSpec(pair.source, url=pair.src))
    catch_up(pair.src, pair.land, pair.source)
    # catch_up's walsender may hold the slot a moment longer (CI at load: "slot is active")
    wait_slot_free(pair.src, f"tidemark_{pair.source}")
    repl = _stream(pair)
    try:
        # `tidemark up` streams every registered source: before, the message named only
        # `tidemark ingest run`, which a user of `tidemark up` never started.
        with pytest.raises(SourceBusyError, match="`tidemark ingest run`, or `tidemark up`"):
            remove_source(pair.land, pair.source)
    finally:
        repl.close()
    assert [s.name for s in list_sources(pair.land)] == [pair.source]


def test_remove_right_after_the_stream_ended_waits_for_its_walsender(pair: Pair) -> None:
    """A walsender outlives its client by a moment: a `source remove` right after an ingestion
    ended is not refused as "streaming right now" (on main it was, when the walsender lingered)."""
    import threading

    pair.src_exec("create table t (id int primary key)")
    add_source(pair.land, SourceSpec(pair.source, url=pair.src))
    catch_up(pair.src, pair.land, pair.source)
    wait_slot_free(pair.src, f"tidemark_{pair.source}")
    repl = _stream(pair)
    closer = threading.Timer(1.0, repl.close)  # the stream ends while remove is looking
    closer.start()
    try:
        report = remove_source(pair.land, pair.source)
    finally:
        closer.join()
    assert f"replication slot tidemark_{pair.source}" in report.dropped
    assert list_sources(pair.land) == []


def test_add_refuses_what_cannot_work(pair: Pair, pg: EmbeddedServer) -> None:
    pair.src_exec("create table t (id int primary key)")
    with pytest.raises(SourceError, match="schema.*nope.*do not exist"):
        add_source(pair.land, SourceSpec(pair.source, url=pair.src, schemas=("nope",)))
    with pytest.raises(SourceError, match="public.missing"):
        add_source(pair.land, SourceSpec(pair.source, url=pair.src, tables=("missing",)))
    missing_db = other_database(pair.src, "no_such_database")
    with pytest.raises(PermanentSourceError, match="does not exist"):
        add_source(pair.land, SourceSpec(pair.source, url=missing_db))
    # The source's slot name is taken in another database of the same server.
    other = create_database(pg, f"other_{pair.source}")
    try:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')",
                         (f"tidemark_{pair.source}",))
        with pytest.raises(PermanentSourceError, match="exists on this server but in database"):
            add_source(pair.land, SourceSpec(pair.source, url=pair.src))
        with pytest.raises(PermanentSourceError, match="in database"):
            catch_up(pair.src, pair.land, pair.source, timeout_s=20)
    finally:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("select pg_drop_replication_slot(%s)", (f"tidemark_{pair.source}",))
    assert list_sources(pair.land) == []
    assert f"tidemark_{pair.source}" not in _slots(pair.src)


def test_a_lost_slot_says_to_resync_all_and_resync_all_recovers(tmp_path: Path) -> None:
    # A slot invalidated by max_slot_wal_keep_size stopped ingestion with "can no longer access
    # replication slot ... Fix the registered URL.": the URL was fine; the README's remedy is
    # `tidemark ingest resync --all`.
    from ingestion import resync
    from tests.pgversions import WHEEL_MAJOR, session_major
    from tests.support import start_test_server

    major = session_major()  # the messages differ: 17+ and 13 to 16
    server = start_test_server(tmp_path / "home", major=None if major == WHEEL_MAJOR else major,
                               conf={"max_slot_wal_keep_size": "16MB"})
    try:
        src, land = create_database(server, "src"), create_database(server, "land")
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table t (id int primary key, v text)")
            conn.execute("insert into t select g, 'x' from generate_series(1, 100) g")
        catch_up(src, land, "lostslot", timeout_s=60)
        with psycopg.connect(src, autocommit=True) as conn:  # more WAL than the slot may keep
            conn.execute("insert into t select g, 'y' from generate_series(101, 200) g")
            conn.execute("create table filler (id int primary key, v text)")
            for n in range(6):  # ~20 MB of WAL a step, until the slot is lost (at most 120 MB)
                conn.execute("insert into filler select g, repeat('z', 1000) from"
                             " generate_series(%s::int, %s::int) g", (n * 20000, n * 20000 + 19999))
                conn.execute("checkpoint")
                conn.execute("select pg_switch_wal()")
                conn.execute("checkpoint")
                status = conn.execute("select wal_status from pg_replication_slots").fetchone()
                if status == ("lost",):
                    break
            assert status == ("lost",)
        with pytest.raises(PermanentSourceError) as caught:
            catch_up(src, land, "lostslot", timeout_s=60)
        message = str(caught.value)
        assert "tidemark ingest resync --all --source lostslot" in message, message
        assert "Fix the registered URL" not in message
        resync(src, land, "lostslot")
        catch_up(src, land, "lostslot", timeout_s=60)
        with psycopg.connect(land) as conn:
            assert conn.execute("select count(*) from lostslot.t").fetchone() == (200,)
    finally:
        server.stop()


def test_wal_level_not_logical_is_refused(tmp_path: Path) -> None:
    server = EmbeddedServer(Settings(home=tmp_path / "home", port=free_port(), source_url=None,
                                     landing_url=None),
                            extra_conf={**TEST_CONF, "wal_level": "replica"})
    server.start()
    try:
        src = create_database(server, "src")
        land = create_database(server, "land")
        with pytest.raises(PermanentSourceError, match="wal_level is 'replica'.*restart"):
            add_source(land, SourceSpec("walsrc", url=src))
        with pytest.raises(PermanentSourceError, match="wal_level"):
            catch_up(src, land, "walsrc", timeout_s=20)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def few_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server of its own whose lock table holds a few hundred locks."""
    server = start_test_server(tmp_path_factory.mktemp("fewlocks"), conf=FEW_LOCKS_CONF)
    yield server
    server.stop()


def test_remove_drop_landing_of_many_tables_fits_the_lock_table(few_locks: EmbeddedServer
                                                                ) -> None:
    """``source remove --drop-landing`` of a source of 150 tables (300 landing tables, ~2,400
    locks in one transaction) on a landing whose lock table holds a few hundred: main failed
    with "out of shared memory" after dropping the slot and publication; tables are dropped a
    few per transaction."""
    src, land = create_databases(few_locks, "rm_src", "rm_land")
    save_source(land, SourceSpec("rm", url=src))
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute("create schema rm")
        conn.execute("create schema if not exists cdc")
        for i in range(150):
            conn.execute(f"create table rm.t{i} (id int primary key, v text)")
            conn.execute(f"create table cdc.rm__t{i} (id int, v text, _seq int unique)")
    report = remove_source(land, "rm", drop_landing=True)
    assert report.landing_dropped[0] == "schema rm (150 mirror tables)"
    with psycopg.connect(land) as conn:
        assert conn.execute("select count(*) from pg_tables where schemaname in ('rm', 'cdc')"
                            " and tablename like 't%' or tablename like 'rm\\_\\_%'"
                            ).fetchone()[0] == 0
        assert conn.execute("select to_regnamespace('rm')").fetchone()[0] is None
    assert "rm" not in [s.name for s in list_sources(land)]
