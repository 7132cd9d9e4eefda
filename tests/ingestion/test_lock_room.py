"""A first snapshot of many tables on a landing with a small lock table: it fits when the staged
tables move in as they are; where each table's landing tables are replaced it does not, and the
error is permanent and names the ``max_locks_per_transaction`` to set (not ``out of shared
memory`` retried forever), and that setting is enough; the embedded server's default holds
2,000 tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up
from ingestion.errors import IngestionError
from ingestion.failures import is_transient
from tests.ingestion.conftest import drop_slot
from tests.support import create_databases, start_test_server
from tidemark.stack.embedded import BASE_CONF, EmbeddedServer

TABLES = 150  # replaced: ~6,000 locks, far beyond a lock table of 10 locks x 20 connections


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server of its own with a small lock table (it is restarted by the test)."""
    server = start_test_server(tmp_path_factory.mktemp("lockroom"),
                               conf={"max_locks_per_transaction": "10",
                                     "max_connections": "20"})
    yield server
    server.stop()


def test_a_first_snapshot_of_many_tables_fits_a_small_lock_table(small: EmbeddedServer) -> None:
    """The staged tables move into landing with ~2 locks each (they used to be created, dropped
    and replaced: ~40 each), and are staged a few per transaction."""
    src, land = create_databases(small, "lr_fit_src", "lr_fit_land")
    with psycopg.connect(src, autocommit=True) as conn, conn.transaction():
        for i in range(TABLES):
            conn.execute(f"create table t{i} (id int primary key, v text)")
            conn.execute(f"insert into t{i} values (1, 'a'), (2, 'b')")
    stats = catch_up(src, land, "lrfit", timeout_s=120)
    assert stats.snapshot_rows == 2 * TABLES
    drop_slot(src, "tidemark_lrfit")


def test_snapshot_beyond_the_lock_table_names_the_setting(small: EmbeddedServer,
                                                          tmp_path: Path) -> None:
    src, land = create_databases(small, "lr_src", "lr_land")
    with psycopg.connect(src, autocommit=True) as conn, conn.transaction():
        for i in range(TABLES):
            conn.execute(f"create table t{i} (id int primary key, v text)")
            conn.execute(f"insert into t{i} values (1, 'a'), (2, 'b')")
    with psycopg.connect(land, autocommit=True) as conn, conn.transaction():
        conn.execute("create schema lr")  # left by a source removed without --drop-landing
        for i in range(TABLES):
            conn.execute(f"create table lr.t{i} (id int primary key, v text)")
    with pytest.raises(IngestionError, match=r"max_locks_per_transaction = (\d+);") as err:
        catch_up(src, land, "lr", timeout_s=120)
    assert not is_transient(err.value)
    assert f"snapshot of {TABLES} tables" in str(err.value)
    wanted = err.value.args[0].split("max_locks_per_transaction = ")[-1].split(";")[0]
    drop_slot(src, "tidemark_lr")
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute(f"alter system set max_locks_per_transaction = {int(wanted)}")
    small.stop()
    small.start()
    stats = catch_up(src, land, "lr", timeout_s=120)  # the advised setting is enough
    assert stats.snapshot_rows == 2 * TABLES
    with psycopg.connect(land) as conn:
        assert conn.execute("select count(*) from lr.t149").fetchone()[0] == 2
    drop_slot(src, "tidemark_lr")


def test_embedded_default_holds_two_thousand_tables() -> None:
    from ingestion.lock_room import wanted_locks_setting

    backends = int(BASE_CONF["max_connections"])
    assert int(BASE_CONF["max_locks_per_transaction"]) >= wanted_locks_setting(2000, backends)
