"""Hostile identifiers replicate correctly; TRUNCATE empties the mirror and writes a ``t`` row;
heartbeats advance an idle slot; status reports the slot, lag and paused tables."""

from __future__ import annotations

import threading
import time

import psycopg

from ingestion import catch_up, run
from ingestion.status import status
from tests.ingestion.conftest import (
    Pair,
    assert_changelog_replays,
    assert_mirror_equals,
    changelog,
)

HOSTILE = '''
create table "Order Lines; drop table x" (
    "select" int, "Id ""quoted""" int, "Mixed Case" text, "from" text,
    primary key ("Id ""quoted""", "select")
)
'''


def test_hostile_identifiers_and_truncate(pair: Pair) -> None:
    table = 'Order Lines; drop table x'
    pair.src_exec(HOSTILE, 'insert into "Order Lines; drop table x" values'
                  " (1, 1, 'a', E'tab\\t'), (2, 1, 'b', null)")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec('update "Order Lines; drop table x" set "Mixed Case" = \'c\', "select" = 3'
                  ' where "select" = 1',
                  'delete from "Order Lines; drop table x" where "select" = 2',
                  'insert into "Order Lines; drop table x" values (5, 5, \'e\', \'f\')')
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, table)
    pair.src_exec('truncate "Order Lines; drop table x"',
                  'insert into "Order Lines; drop table x" values (9, 9, \'after\', null)')
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, table)
    ops = [r[0] for r in changelog(pair.land, pair.source, table, "_op")]
    # The update moved row 1 to another key: a "b" row (the old key) precedes its "u" row.
    assert ops == ["r", "r", "b", "u", "d", "c", "t", "c"]
    assert_changelog_replays(pair, table, ["Id \"quoted\"", "select"])


def test_heartbeat_advances_idle_slot_and_status(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key)", "insert into t values (1)")
    catch_up(pair.src, pair.land, pair.source)
    before = status(pair.src, pair.land, pair.source)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "heartbeat_s": 0.5})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        advanced = False
        while time.monotonic() < deadline and not advanced:
            time.sleep(0.5)
            now = status(pair.src, pair.land, pair.source)
            with psycopg.connect(pair.src) as conn:
                advanced = conn.execute("select %s::pg_lsn > %s::pg_lsn", (
                    now["confirmed_flush_lsn"], before["confirmed_flush_lsn"])).fetchone()[0]
    finally:
        stop.set()
        thread.join(30)
    assert advanced, "heartbeats did not advance the idle slot"
    assert not thread.is_alive()
    assert now["slot_exists"] and now["tables"] == 1 and now["paused_tables"] == []
    assert now["retained_wal_bytes"] >= 0 and now["lag_bytes"] >= 0
    assert now["checkpoint_lsn"] is not None and now["rows_applied"] >= 1
