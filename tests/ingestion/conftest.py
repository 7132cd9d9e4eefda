"""Fixtures of the ingestion tests: a fresh source and landing database per test.

Each test gets its own source name, so slot and publication names never collide on the shared
server; the slot is dropped at teardown so the source database can be dropped later.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from ingestion.names import slot_name
from tests.support import create_database

_counter = itertools.count(1)


@dataclass
class Pair:
    """A source and a landing database for one test."""

    source: str
    src: str
    land: str

    def register(self, **selection: object) -> None:
        """Register the source in landing (as `tidemark source add` does, without checks)."""
        from ingestion.sources import SourceSpec, save_source

        save_source(self.land, SourceSpec(self.source, url=self.src, **selection))

    def src_exec(self, *statements: str, params: tuple = ()) -> None:
        """Run statements on the source, each in its own transaction."""
        with psycopg.connect(self.src, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt, params or None)


def drop_slot(url: str, slot: str) -> None:
    """Drop a replication slot if it exists (after its walsender went away)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(100):
            row = conn.execute("select active_pid from pg_replication_slots where slot_name = %s",
                               (slot,)).fetchone()
            if row is None:
                return
            if row[0] is None:
                conn.execute("select pg_drop_replication_slot(%s)", (slot,))
                return
            conn.execute("select pg_sleep(0.1)")


@pytest.fixture
def pair(pg, request: pytest.FixtureRequest) -> Iterator[Pair]:
    """Fresh source and landing databases, and a source name unique to this test."""
    n = next(_counter)
    source = f"t{n}"
    stem = request.node.name.lower()[:20]
    name = "".join(ch if ch.isalnum() else "_" for ch in stem)
    p = Pair(source, create_database(pg, f"src_{name}_{n}"),
             create_database(pg, f"land_{name}_{n}"))
    yield p
    drop_slot(p.src, slot_name(source))
    for url in (p.src, p.land):
        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(dbname)))


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def table_rows(url: str, schema: str, table: str) -> Counter:
    """The multiset of a table's rows, each as PostgreSQL's text form of the row."""
    with psycopg.connect(url) as conn:
        query = sql.SQL("select t::text from {} t").format(sql.Identifier(schema, table))
        return Counter(r[0] for r in conn.execute(query))


def assert_mirror_equals(p: Pair, table: str, schema: str = "public") -> None:
    """Mirror == source, as multisets of rows (EXCEPT ALL both ways, in Python)."""
    src = table_rows(p.src, schema, table)
    mirror = table_rows(p.land, p.source, table)
    assert src - mirror == Counter(), f"rows missing from mirror {table}"
    assert mirror - src == Counter(), f"extra rows in mirror {table}"


def changelog(url: str, source: str, table: str, columns: str = "*") -> list[tuple]:
    """All changelog rows of a table in change order."""
    with psycopg.connect(url) as conn:
        # columns is a literal list written by the test itself.
        query = sql.SQL("select " + columns + " from {} order by _commit_lsn, _seq").format(
            sql.Identifier("cdc", f"{source}__{table}"))
        return conn.execute(query).fetchall()
