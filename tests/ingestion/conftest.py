"""Fixtures of the ingestion tests: a fresh source and landing database per test.

Each test gets its own source name, so slot and publication names never collide on the shared
server; the slot is dropped at teardown so the source database can be dropped later.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingestion.names import changelog_table_name, slot_name
from tests.support import create_databases, drop_databases

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


    def write_and_land(self, *statements: str) -> None:
        """Run statements on the source (:meth:`src_exec`), then catch landing up with them."""
        from ingestion import catch_up

        self.src_exec(*statements)
        catch_up(self.src, self.land, self.source)

    def write_and_land_twice(self, *statements: str) -> None:
        """:meth:`write_and_land`, then catch up again: that lands what the first one's
        publication sync had copied again by itself (an automatic resync)."""
        from ingestion import catch_up

        self.write_and_land(*statements)
        catch_up(self.src, self.land, self.source)


def contracts_for(folder: Path, source: str, **tables: str):  # -> contracts.ContractSet
    """Write one contract file per table (``name=yaml``) under ``folder/contracts/source`` and
    load the contracts folder."""
    from contracts import load_contracts

    mine = folder / "contracts" / source
    mine.mkdir(parents=True, exist_ok=True)
    for table, text in tables.items():
        (mine / f"{table}.yml").write_text(text)
    return load_contracts(folder / "contracts")


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
    p = Pair(source, *create_databases(pg, f"src_{name}_{n}", f"land_{name}_{n}"))
    yield p
    drop_slot(p.src, slot_name(source))
    drop_databases(pg, p.src, p.land)


def spawn_run(p: Pair, log: Path) -> subprocess.Popen:
    """``ingestion.run`` of the pair in a process of its own (1 s longest backoff), its output
    to ``log``."""
    code = (f"from ingestion import run; run({p.src!r}, {p.land!r}, {p.source!r},"
            f" max_backoff_s=1.0)")
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", code], stdout=out,
                                stderr=subprocess.STDOUT)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def source_columns(url: str, table: str, schema: str = "public") -> list[str]:
    """The live columns of a table, in order."""
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " and not attisdropped order by attnum",
            (sql.Identifier(schema, table).as_string(conn),))]


def table_rows(url: str, schema: str, table: str, columns: list[str] | None = None) -> Counter:
    """The multiset of a table's rows, each as PostgreSQL's text form of the row (of ``columns``
    only, when given)."""
    with psycopg.connect(url) as conn:
        if columns is None:
            query = sql.SQL("select t::text from {} t").format(sql.Identifier(schema, table))
        else:
            query = sql.SQL("select row({})::text from {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table))
        return Counter(r[0] for r in conn.execute(query))


def assert_mirror_equals(p: Pair, table: str, schema: str = "public") -> None:
    """Mirror == source, as multisets of rows (EXCEPT ALL both ways), on the source's columns."""
    columns = source_columns(p.src, table, schema)
    src = table_rows(p.src, schema, table, columns)
    mirror = table_rows(p.land, p.source, table, columns)
    assert src - mirror == Counter(), f"rows missing from mirror {table}"
    assert mirror - src == Counter(), f"extra rows in mirror {table}"


def replayed_changelog(p: Pair, table: str, key: list[str] | None,
                       schema: str = "public", strict: bool = True) -> Counter:
    """Replay a table's changelog in change order and return the rows it leads to.

    The rules are the README's: ``r``/``c``/``u`` put the row (by key, or one more copy for a
    keyless table), ``b``/``d`` remove it (by key, or exactly one equal row), ``t`` empties.
    Rows are compared on the source's current columns, as text. ``strict``: a keyless removal
    must find its row (not so between a schema change and the resync that followed it, where
    rows of the old shape meet removals of the new one).
    """
    columns = source_columns(p.src, table, schema)
    with psycopg.connect(p.land) as conn:
        query = sql.SQL("select _op, row({})::text, {} from {} order by _commit_lsn, _seq").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key or [])
            if key else sql.SQL("null"),
            sql.Identifier("cdc", changelog_table_name(p.source, table)))
        rows = conn.execute(query).fetchall()
    keyed: dict[tuple, str] = {}
    bag: Counter = Counter()
    for op, text, *kvals in rows:
        if op == "t":
            keyed.clear()
            bag.clear()
        elif key:
            if op in ("b", "d"):
                keyed.pop(tuple(kvals), None)
            else:
                keyed[tuple(kvals)] = text
        elif op in ("b", "d"):
            assert bag[text] > 0 or not strict, \
                f"changelog of {table} removes a row it never had: {text}"
            bag[text] -= 1
        else:
            bag[text] += 1
    return Counter(keyed.values()) if key else +bag


def assert_changelog_replays(p: Pair, table: str, key: list[str] | None,
                             schema: str = "public", strict: bool = True) -> None:
    """Replaying the changelog gives exactly the source's rows."""
    src = table_rows(p.src, schema, table, source_columns(p.src, table, schema))
    replayed = replayed_changelog(p, table, key, schema, strict)
    assert src - replayed == Counter(), f"changelog replay of {table} misses rows"
    assert replayed - src == Counter(), f"changelog replay of {table} has extra rows"


class Writer(threading.Thread):
    """Writes to the source in a loop, one transaction per step, until stopped.

    Args:
        url: source URL.
        step: ``step(conn, i)`` runs the statements of transaction ``i``.
    """

    def __init__(self, url: str, step: Callable[[psycopg.Connection, int], None]) -> None:
        super().__init__(daemon=True)
        self.url, self.step = url, step
        self.halt = threading.Event()
        self.done = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.halt.is_set():
                try:
                    with conn.transaction():
                        self.step(conn, self.done)
                except psycopg.Error as exc:  # kept for the test to show
                    self.errors.append(str(exc))
                self.done += 1

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(30)


def changelog(url: str, source: str, table: str, columns: str = "*") -> list[tuple]:
    """All changelog rows of a table in change order."""
    with psycopg.connect(url) as conn:
        # columns is a literal list written by the test itself.
        query = sql.SQL("select " + columns + " from {} order by _commit_lsn, _seq").format(
            sql.Identifier("cdc", changelog_table_name(source, table)))
        return conn.execute(query).fetchall()


def paused_reasons(p: Pair) -> dict[str, str]:
    """The paused tables of the pair's source in landing, with their pause reasons."""
    with psycopg.connect(p.land) as conn:
        return dict(conn.execute("select table_name, paused_reason from"
                                 " tidemark.replicated_tables where paused_at is not null"))
