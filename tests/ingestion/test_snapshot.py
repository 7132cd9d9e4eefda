"""Initial snapshot with writes going on during it, then streaming: no gap, no duplicate."""

from __future__ import annotations

import threading

import psycopg

from ingestion import catch_up
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog
from tidemark.demo.schema import DEMO_TABLES, apply_schema


def _writer(url: str, stop: threading.Event, counter: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        i = 0
        while not stop.is_set() and i < 3000:
            i += 1
            cid = 100_000 + i
            with conn.transaction():
                conn.execute("insert into customers values (%s, 'w', 'w@x', 'c', now(), now())",
                             (cid,))
                conn.execute("update customers set city = 'moved', updated_at = now()"
                             " where customer_id = %s", (i,))
                conn.execute("delete from customers where customer_id = %s", (cid - 1,))
            counter[0] = i


def test_snapshot_with_concurrent_writes_then_stream(pair: Pair) -> None:
    apply_schema(pair.src)
    pair.src_exec(
        "insert into customers select g, 'n' || g, 'e' || g || '@x', 'c', now(), now()"
        " from generate_series(1, 30000) g",
        "insert into stores select g, 's', 'c', 'r', now(), true from generate_series(1, 5) g")
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(pair.src, stop, counter))
    writer.start()
    try:
        first = catch_up(pair.src, pair.land, pair.source)
    finally:
        stop.set()
        writer.join()
    assert first.snapshot_rows >= 30_000
    assert counter[0] > 0, "the writer made no change while the snapshot ran"
    second = catch_up(pair.src, pair.land, pair.source)
    assert second.snapshot_rows == 0
    for table in DEMO_TABLES:
        assert_mirror_equals(pair, table)
    rows = changelog(pair.land, pair.source, "customers", "_commit_lsn, _seq")
    assert len(rows) == len(set(rows)), "a change landed twice in the changelog"
    ops = changelog(pair.land, pair.source, "customers", "_op")
    assert {o[0] for o in ops} >= {"r", "c", "u", "d"}
