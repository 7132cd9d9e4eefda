"""Several sources at once into one landing database; one failing for good is reported once
(and kept as its last error) while the other keeps streaming."""

from __future__ import annotations

import threading
import time

import psycopg

from ingestion.runner import run_sources
from ingestion.sources import SourceSpec, get_source, save_source
from tests.ingestion.conftest import Pair, drop_slot, table_rows
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
