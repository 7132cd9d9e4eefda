"""The snapshot's copy threads: their connections are opened once per thread, not per table."""

from __future__ import annotations

import time

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ingestion import catch_up
from tests.ingestion.conftest import Pair
from tests.support import other_database

TABLES = 30


def _sessions(admin: str, databases: list[str]) -> int:
    """Sessions ever opened to ``databases``, once none is open (each backend's count is
    reported to the statistics when it ends)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while conn.execute("select count(*) from pg_stat_activity where datname = any(%s)",
                           (databases,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.execute("select pg_stat_clear_snapshot()")
        return conn.execute("select coalesce(sum(sessions), 0)::int from pg_stat_database"
                            " where datname = any(%s)", (databases,)).fetchone()[0]


def test_a_first_snapshot_of_many_tables_opens_few_connections(pair: Pair) -> None:
    """Each copy thread used to open three connections per table (the snapshot's source and two
    landing loads): ~20 ms each on a loaded machine, a third of a small table's cost. Now a
    thread keeps its three for every table it copies."""
    with psycopg.connect(pair.src, autocommit=True) as conn, conn.transaction():
        for i in range(TABLES):
            conn.execute(f"create table t{i} (id int primary key, v text)")
            conn.execute(f"insert into t{i} values (1, 'a'), (2, 'b')")
    databases = [conninfo_to_dict(url)["dbname"] for url in (pair.src, pair.land)]
    admin = other_database(pair.src, "postgres")
    before = _sessions(admin, databases)
    stats = catch_up(pair.src, pair.land, pair.source)
    opened = _sessions(admin, databases) - before
    assert stats.snapshot_rows == 2 * TABLES
    assert opened < 25, f"{opened} connections for a snapshot of {TABLES} tables"
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f'select count(*) from "{pair.source}".t29').fetchone()[0] == 2
