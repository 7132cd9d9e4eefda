"""Several sources at once into one landing database; one failing for good is reported once
(and kept as its last error) while the other keeps streaming."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from ingestion.runner import run_sources
from ingestion.sources import SourceSpec, get_source, list_sources, save_source
from tests.ingestion.conftest import Pair, drop_slot, table_rows, wait_until
from tests.support import create_database, other_database
from tidemark.stack.embedded import EmbeddedServer


def test_two_sources_into_one_landing(pair: Pair, pg: EmbeddedServer) -> None:
    second = create_database(pg, f"second_{pair.source}")
    other = f"{pair.source}b"
    try:
        pair.src_exec("create table orders (id int primary key, v text)",
                      "insert into orders values (1, 'a')")
        with psycopg.connect(second, autocommit=True) as conn:
            conn.execute("create schema crm")
            conn.execute("create table crm.contacts (id int primary key, email text)")
            conn.execute("insert into crm.contacts values (1, 'x@y')")
        save_source(pair.land, SourceSpec(pair.source, url=pair.src))
        save_source(pair.land, SourceSpec(other, url=second, schemas=("crm",)))
        broken = other_database(pair.src, f"gone_{pair.source}")
        save_source(pair.land, SourceSpec(f"{pair.source}x", url=broken))
        specs = [get_source(pair.land, n) for n in (pair.source, other, f"{pair.source}x")]
        stop = threading.Event()
        result: dict = {}
        thread = threading.Thread(
            target=lambda: result.update(run_sources(specs, pair.land, stop=stop)))
        thread.start()
        try:
            pair.src_exec("insert into orders values (2, 'b')")
            with psycopg.connect(second, autocommit=True) as conn:
                conn.execute("insert into crm.contacts values (2, 'z@y')")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if len(table_rows(pair.land, pair.source, "orders")) == 2 and \
                            len(table_rows(pair.land, other, "crm__contacts")) == 2:
                        break
                except psycopg.errors.UndefinedTable:
                    pass
                time.sleep(0.3)
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive()
        assert table_rows(pair.land, pair.source, "orders") == table_rows(pair.src, "public",
                                                                          "orders")
        assert table_rows(pair.land, other, "crm__contacts") == table_rows(second, "crm",
                                                                           "contacts")
        assert list(result) == [f"{pair.source}x"]
        assert "does not exist" in result[f"{pair.source}x"]
        assert "does not exist" in get_source(pair.land, f"{pair.source}x").last_error
    finally:
        drop_slot(second, f"tidemark_{other}")
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "second_{pair.source}" with (force)')


def test_a_source_registered_while_running_is_streamed(pair: Pair, pg: EmbeddedServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # `tidemark up` (its `ingest run` of every source) read the registry once at its start: a
    # source added while it ran (README: "`tidemark up` runs every registered source too") was
    # not streamed until a restart, or a second `ingest run --source` in another terminal.
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    second = create_database(pg, f"later_{pair.source}")
    other = f"{pair.source}l"
    holder = psycopg.connect(pair.land, autocommit=True)
    try:
        pair.src_exec("create table orders (id int primary key, v text)",
                      "insert into orders values (1, 'a')")
        with psycopg.connect(second, autocommit=True) as conn:
            conn.execute("create table items (id int primary key, v text);"
                         "insert into items values (1, 'x')")
        save_source(pair.land, SourceSpec(pair.source, url=pair.src))
        ours = (pair.source, other)
        stop = threading.Event()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(run_sources(
            [get_source(pair.land, pair.source)], pair.land, stop=stop,
            discover=lambda: [s for s in list_sources(pair.land) if s.name in ours],
            discover_every_s=0.5)))
        thread.start()
        try:
            # another process streams the new source (`ingest run --source` in a terminal)
            holder.execute("select pg_advisory_lock(hashtext('tidemark:ingest-process'),"
                           " hashtext(%s))", (other,))
            save_source(pair.land, SourceSpec(other, url=second))
            # refused once (after its 5 s wait): left to the other, not failed
            assert wait_until(lambda: f"source {other} is streamed by another process"
                              in caplog.text, 60), caplog.text
            assert get_source(pair.land, other).last_error is None
            assert thread.is_alive()
            holder.close()  # the other stops: taken over at the next look
            with psycopg.connect(second, autocommit=True) as conn:
                conn.execute("insert into items values (2, 'y')")
            assert _wait_rows(pair.land, other, "items", 2, 90)
            pair.src_exec("insert into orders values (2, 'b')")
            assert _wait_rows(pair.land, pair.source, "orders", 2, 60)
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive() and result == {}
        assert table_rows(pair.land, other, "items") == table_rows(second, "public", "items")
    finally:
        holder.close()
        drop_slot(second, f"tidemark_{other}")
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "later_{pair.source}" with (force)')


def _wait_rows(landing: str, schema: str, table: str, n: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(table_rows(landing, schema, table)) == n:
                return True
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.3)
    return False


def test_a_failed_source_streams_again_once_its_error_is_cleared(
        pair: Pair, pg: EmbeddedServer, caplog: pytest.LogCaptureFixture) -> None:
    # A source that failed for good stayed stopped under `tidemark up` after its cause was
    # fixed and what its message said was run (`ingest resync --all`, `source add` again):
    # only a restart of `tidemark up` streamed it again.
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    name = f"{pair.source}f"
    url = other_database(pair.src, f"fixed_{pair.source}")  # not created yet: fails for good
    pair.src_exec("create table orders (id int primary key, v text)")
    save_source(pair.land, SourceSpec(pair.source, url=pair.src))
    save_source(pair.land, SourceSpec(name, url=url))
    ours = (pair.source, name)
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run_sources(
        [get_source(pair.land, n) for n in ours], pair.land, stop=stop,
        discover=lambda: [s for s in list_sources(pair.land) if s.name in ours],
        discover_every_s=0.5)))
    thread.start()
    fixed = None
    try:
        assert wait_until(lambda: get_source(pair.land, name).last_error is not None, 60)
        fixed = create_database(pg, f"fixed_{pair.source}")  # the cause, fixed
        with psycopg.connect(fixed, autocommit=True) as conn:
            conn.execute("create table items (id int primary key, v text);"
                         "insert into items values (1, 'x'), (2, 'y')")
        time.sleep(1.5)  # looked at again meanwhile: the error still stands, not restarted
        assert f"source {name}: its error was cleared" not in caplog.text
        save_source(pair.land, SourceSpec(name, url=url))  # `tidemark source add` again
        assert _wait_rows(pair.land, name, "items", 2, 90), caplog.text
        assert f"source {name}: its error was cleared" in caplog.text
    finally:
        stop.set()
        thread.join(60)
        if fixed is not None:
            drop_slot(fixed, f"tidemark_{name}")
            with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
                conn.execute(f'drop database if exists "fixed_{pair.source}" with (force)')
    assert not thread.is_alive() and result == {}
    assert get_source(pair.land, name).last_error is None


def test_a_source_removed_while_another_process_streamed_it_stops_nothing(
        pair: Pair, pg: EmbeddedServer, caplog: pytest.LogCaptureFixture) -> None:
    # explore51: under `tidemark up`, a source another process streamed (`ingest run --source`
    # in a terminal), stopped there and then removed (`tidemark source remove`) crashed up's
    # `ingest run` two looks later with `KeyError: 'appa2'` (exit status 2), and `tidemark up`
    # stopped the whole stack with it
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    second = create_database(pg, f"gone_{pair.source}")
    other = f"{pair.source}g"
    holder = psycopg.connect(pair.land, autocommit=True)
    try:
        pair.src_exec("create table orders (id int primary key, v text)",
                      "insert into orders values (1, 'a')")
        save_source(pair.land, SourceSpec(pair.source, url=pair.src))
        ours = [pair.source, other]
        stop = threading.Event()
        result: dict = {}
        failure: list[BaseException] = []

        def runner() -> None:
            try:
                result.update(run_sources(
                    [get_source(pair.land, pair.source)], pair.land, stop=stop,
                    discover=lambda: [s for s in list_sources(pair.land) if s.name in ours],
                    discover_every_s=0.5))
            except BaseException as exc:  # the test's verdict, not a thread's traceback
                failure.append(exc)

        thread = threading.Thread(target=runner)
        thread.start()
        try:
            holder.execute("select pg_advisory_lock(hashtext('tidemark:ingest-process'),"
                           " hashtext(%s))", (other,))
            save_source(pair.land, SourceSpec(other, url=second))
            assert wait_until(lambda: f"source {other} is streamed by another process"
                              in caplog.text, 60), caplog.text
            ours.remove(other)  # unregistered (`tidemark source remove`)
            holder.close()      # ... once the other process stopped
            time.sleep(3.0)     # six looks
            assert thread.is_alive() and not failure, failure
            pair.src_exec("insert into orders values (2, 'b')")
            assert _wait_rows(pair.land, pair.source, "orders", 2, 60)
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive() and result == {} and not failure, (result, failure)
    finally:
        holder.close()
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "gone_{pair.source}" with (force)')
