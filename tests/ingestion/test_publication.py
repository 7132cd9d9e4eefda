"""The publication lists only tables that can be published safely, in the selected schemas:
a keyless table's UPDATE/DELETE keeps working in the source application while ingestion runs;
tables of a non-public schema land; a table created later is picked up with its rows."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from ingestion import catch_up, run
from ingestion.publication import Selection, selected_tables, sync_publication
from tests.ingestion.conftest import Pair, assert_mirror_equals, wait_until


def _published(p: Pair) -> set[str]:
    with psycopg.connect(p.src) as conn:
        return {f"{r[0]}.{r[1]}" for r in conn.execute(
            "select schemaname, tablename from pg_publication_tables where pubname = %s",
            (f"tidemark_{p.source}",))}


def test_keyless_table_writes_keep_working_while_ingestion_runs(pair: Pair) -> None:
    pair.src_exec("create table orders (id int primary key, v text)",
                  "create table audit_log (at timestamptz default now(), what text)",
                  "create table full_ident (a int, b text)",
                  "alter table full_ident replica identity full",
                  "insert into orders values (1, 'a'), (2, 'b')",
                  "insert into audit_log (what) values ('x'), ('y')")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "refresh_s": 1.0})
    thread.start()
    try:
        assert wait_until(lambda: "public.orders" in _published(pair))
        # The application's writes on the keyless table succeed (item 3 of issue 10).
        pair.src_exec("update audit_log set what = 'z' where what = 'x'",
                      "delete from audit_log where what = 'y'",
                      "update orders set v = 'c' where id = 1")
        assert "public.audit_log" not in _published(pair)
        assert "public.full_ident" in _published(pair)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "orders")


def test_selection_reports_unpublishable_tables_with_their_fix(pair: Pair) -> None:
    pair.src_exec("create schema sales",
                  "create table sales.a (id int primary key)",
                  "create table sales.nothing (id int primary key)",
                  "alter table sales.nothing replica identity nothing",
                  "create table sales.by_index (id int not null, v text)",
                  "create unique index by_index_id on sales.by_index (id)",
                  "alter table sales.by_index replica identity using index by_index_id",
                  "create unlogged table sales.scratch (id int primary key)",
                  "create table public.elsewhere (id int primary key)")
    report = sync_publication(pair.src, f"tidemark_{pair.source}", Selection.of(["sales"]))
    assert set(report.published) == {"sales.a", "sales.by_index"}
    advice = {t.qualified: t.advice() for t in report.unpublishable}
    assert set(advice) == {"sales.nothing", "sales.scratch"}
    assert "replica identity full" in advice["sales.nothing"]
    assert "set logged" in advice["sales.scratch"]
    assert _published(pair) == {"sales.a", "sales.by_index"}
    # A key dropped later makes the table unpublishable: the next sync takes it out, so the
    # application's updates work again.
    pair.src_exec("alter table sales.a drop constraint a_pkey")
    report = sync_publication(pair.src, f"tidemark_{pair.source}", Selection.of(["sales"]))
    assert report.removed == ["sales.a"]
    pair.src_exec("update sales.a set id = 2")


def test_named_tables_and_missing_ones(pair: Pair) -> None:
    pair.src_exec("create table t1 (id int primary key)", "create table t2 (id int primary key)")
    with psycopg.connect(pair.src) as conn:
        tables, missing = selected_tables(conn, Selection.of(tables=["t1", "public.nope"]))
    assert [t.qualified for t in tables] == ["public.t1"]
    assert missing == ["public.nope"]


def test_schema_wide_publication_is_narrowed_to_safe_tables(pair: Pair) -> None:
    pair.src_exec("create table k (id int primary key)", "create table nokey (x int)",
                  f"create publication tidemark_{pair.source} for tables in schema public")
    report = sync_publication(pair.src, f"tidemark_{pair.source}", Selection.of())
    assert report.managed and _published(pair) == {"public.k"}
    pair.src_exec("update nokey set x = 1")


def _writer(url: str, stop: threading.Event, done: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        i = 1000
        while not stop.is_set():
            conn.execute("insert into sales.refunds values (%s, %s)", (i, i))
            done[0] = i
            i += 1
            time.sleep(0.003)


def test_non_public_schema_lands_and_new_tables_are_picked_up(pair: Pair) -> None:
    pair.src_exec("create schema sales",
                  "create table sales.orders (id int primary key, amount numeric(12,2))",
                  "insert into sales.orders select g, g / 10.0 from generate_series(1, 500) g")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "schemas": ["sales"], "refresh_s": 0.5})
    thread.start()
    writing, written = threading.Event(), [0]
    writer = None
    try:
        pair.src_exec("create table sales.refunds (id int primary key, order_id int)",
                      "insert into sales.refunds select g, g from generate_series(1, 300) g")
        # Rows keep arriving while the new table is added and copied: each must land once.
        writer = threading.Thread(target=_writer, args=(pair.src, writing, written))
        writer.start()
        time.sleep(4)
        writing.set()
        writer.join()
        pair.src_exec("update sales.refunds set order_id = 7 where id = 3")
        with psycopg.connect(pair.src) as conn:
            expected = conn.execute("select count(*) from sales.refunds").fetchone()[0]
        with psycopg.connect(pair.land, autocommit=True) as land:
            def landed() -> bool:
                try:
                    return land.execute(f'select count(*) from "{pair.source}".sales__refunds'
                                        ).fetchone()[0] == expected
                except psycopg.errors.UndefinedTable:
                    return False
            assert wait_until(landed), "the new table was not picked up"
    finally:
        writing.set()
        if writer is not None:
            writer.join()
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert written[0] > 1100, "the writer made too few rows"
    catch_up(pair.src, pair.land, pair.source, schemas=["sales"])
    for table in ("orders", "refunds"):
        _assert_equal(pair, "sales", table)
    with psycopg.connect(pair.land) as land:
        rows = land.execute(f'select id, _op, _commit_lsn, _seq from cdc."{pair.source}__sales__'
                            f'refunds"').fetchall()
    assert len(rows) == len({r[2:] for r in rows})
    inserts = [r[0] for r in rows if r[1] in ("r", "c")]
    assert len(inserts) == len(set(inserts)) == expected, \
        "a row landed twice: in the new table's copy and from the stream"


def _assert_equal(p: Pair, schema: str, table: str) -> None:
    from tests.ingestion.conftest import table_rows

    assert table_rows(p.src, schema, table) == table_rows(p.land, p.source,
                                                          f"{schema}__{table}")


@pytest.mark.parametrize("tables", [["sales.orders"]])
def test_registered_selection_is_used(pair: Pair, tables: list[str]) -> None:
    pair.src_exec("create schema sales", "create table sales.orders (id int primary key)",
                  "create table sales.other (id int primary key)",
                  "insert into sales.orders values (1)")
    pair.register(tables=tuple(tables))
    catch_up(pair.src, pair.land, pair.source)
    assert _published(pair) == {"sales.orders"}
    _assert_equal(pair, "sales", "orders")
