"""What the running stack's status reads cost as history grows (issue 10, round-24 scale review).

The lag check and its two sensors read ``ingestion.status`` every 30 and 60 seconds for days:
nothing they read while ingestion keeps up may scan a table that grows with history — neither a
landing mirror, nor the dead-letter queue, nor (worst) the user's own source table.
"""

from __future__ import annotations

import time

import psycopg

from ingestion import catch_up
from ingestion.state import ensure_state
from ingestion.status import status, table_status
from tests.ingestion.conftest import Pair
from tests.support import await_ended_sessions

ROWS = 5000


def _settled(url: str, schema: str, table: str) -> int:
    """The table's seq_scan counter once every other session of the database has ended (a
    closed connection's counts arrive as its session exits, a moment after the close)."""
    with psycopg.connect(url, autocommit=True) as conn:
        await_ended_sessions(conn)
        return conn.execute("select seq_scan from pg_stat_user_tables where schemaname = %s"
                            " and relname = %s", (schema, table)).fetchone()[0]


def test_lag_status_scans_neither_mirror_nor_source_while_ingestion_keeps_up(pair: Pair) -> None:
    pair.src_exec(
        "create table public.events (id bigint primary key, note text,"
        " updated_at timestamptz not null default clock_timestamp())",
        f"insert into public.events (id, note) select g, repeat('x', 100)"
        f" from generate_series(1, {ROWS}) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("insert into public.events (id, note) values (0, 'streamed')")
    catch_up(pair.src, pair.land, pair.source)  # the last landed source commit is now fresh
    tables = [("events", "updated_at")]
    src0 = _settled(pair.src, "public", "events")
    mirror0 = _settled(pair.land, pair.source, "events")

    quiet = table_status(pair.src, pair.land, pair.source, tables, measure_after_s=60)
    assert quiet["events"]["pending_s"] is None  # not measured: nothing can have waited 60 s
    assert quiet["events"]["lsn"] is not None  # the cheap figures are still there
    measured = table_status(pair.src, pair.land, pair.source, tables)  # always measures
    assert measured["events"]["pending_s"] == 0.0

    # Only the measuring call scanned (once each side): the gated one read neither table.
    assert _settled(pair.src, "public", "events") == src0 + 1
    assert _settled(pair.land, pair.source, "events") == mirror0 + 1


def test_lag_status_measures_once_the_last_landed_commit_is_old(pair: Pair) -> None:
    pair.src_exec("create table public.events (id bigint primary key,"
                  " updated_at timestamptz not null default clock_timestamp())",
                  "insert into public.events (id) values (1)")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("insert into public.events (id) values (2)")  # waits: nothing lands it
    time.sleep(1.2)
    state = table_status(pair.src, pair.land, pair.source, [("events", "updated_at")],
                         measure_after_s=1.0)
    assert state["events"]["pending_s"] >= 1.0


def _letter_reads(url: str) -> int:
    """Scans of ``tidemark.dead_letters`` so far (sequential and index)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        return conn.execute("select seq_scan + coalesce(idx_scan, 0) from pg_stat_user_tables"
                            " where schemaname = 'tidemark' and relname = 'dead_letters'"
                            ).fetchone()[0]


def test_dead_letter_counts_read_no_letter(pair: Pair) -> None:
    """At 20,000 letters, status and table_status count the 50 waiting without reading a
    letter (``ingestion.dead_letter_counts``); main counted them in the partial index of waiting
    letters, linear in them (~4 s a count at 30 days of the 10x demo)."""
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, replayed_at) select %s, 'events', '0/1', '0/1', g, 'c',"
            " 'contract', jsonb_build_object('note', repeat('x', 300)),"
            " case when g > 50 then now() end from generate_series(1, 20000) g",
            (pair.source,))
        conn.execute("vacuum analyze tidemark.dead_letters")
    time.sleep(0.6)  # the counters of a closed connection arrive a moment after it closed
    before = _letter_reads(pair.land)
    tables = table_status(pair.src, pair.land, pair.source, [("events", None)],
                          measure_after_s=60)
    overall = status(pair.src, pair.land, pair.source)
    assert tables["events"]["dead_letters"] == 50
    assert overall["dead_letters"] == 50
    time.sleep(0.6)
    assert _letter_reads(pair.land) == before
