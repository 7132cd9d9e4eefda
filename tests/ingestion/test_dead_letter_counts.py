"""Letters waiting, counted as they change (``ingestion.dead_letter_counts``).

Status, the ``dead_letters`` check and its sensors read how many letters wait every minute; the
queue grows with history (a million letters a day at the 10x demo rate). The figure must equal
a count of the letters after any write — insert, replay (update), purge (delete), truncate —
and reading it must read no letter.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from ingestion.dead_letter_counts import COMPACT_AT, resolved_count, waiting_counts
from ingestion.dead_letters import count_dead_letters, purge_dead_letters
from ingestion.state import ensure_state
from tests.ingestion.conftest import Pair

_INSERT = ("insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
           " reason, raw_row, replayed_at, first_seen_at) select %s, %s, '0/1', '0/1', g + %s,"
           " 'c', 'contract', jsonb_build_object('note', repeat('x', 300)),"
           " case when g %% 3 = 0 then now() end, now() - interval '2 days'"
           " from generate_series(1, %s) g")
DAY = timedelta(days=1)  # purge letters first seen over a day ago: the letters are two days old


def _truth(conn: psycopg.Connection, source: str) -> dict[str, int]:
    return dict(conn.execute("select table_name, count(*) from tidemark.dead_letters where"
                             " source = %s and replayed_at is null group by table_name",
                             (source,)).fetchall())


def _check_resolved(conn: psycopg.Connection, source: str) -> None:
    """The replayed letters of ``source``, per table and in all, are what a count says."""
    truth = dict(conn.execute("select table_name, count(*) from tidemark.dead_letters where"
                              " source = %s and replayed_at is not null group by table_name",
                              (source,)).fetchall())
    assert {t: resolved_count(conn, source, t) for t in truth} == truth
    assert resolved_count(conn, source) == sum(truth.values())


def _letters(conn: psycopg.Connection, source: str, table: str, first: int, n: int) -> None:
    conn.execute(_INSERT, (source, table, first, n))


def test_the_counts_follow_every_write(pair: Pair) -> None:
    other = f"{pair.source}_other"
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        assert waiting_counts(conn, pair.source) == {}
        _letters(conn, pair.source, "orders", 0, 30)  # 20 waiting, 10 replayed
        _letters(conn, pair.source, "payments", 0, 7)
        _letters(conn, other, "orders", 0, 5)
        assert waiting_counts(conn, pair.source) == {"orders": 20, "payments": 5}
        assert waiting_counts(conn, other) == {"orders": 4}
        # replay: waiting -> replayed, and back (replayed again: still invalid is waiting)
        conn.execute("update tidemark.dead_letters set replayed_at = now() where source = %s"
                     " and table_name = 'orders' and seq <= 10", (pair.source,))
        conn.execute("update tidemark.dead_letters set replayed_at = null where source = %s"
                     " and table_name = 'payments'", (pair.source,))
        # a letter moved to another table, a rolled-back write, a savepoint rolled back
        conn.execute("update tidemark.dead_letters set table_name = 'items' where source = %s"
                     " and table_name = 'orders' and seq = 11", (pair.source,))
        with pytest.raises(RuntimeError), conn.transaction():
            _letters(conn, pair.source, "orders", 1000, 10)
            raise RuntimeError("rolled back")
        with conn.transaction():
            _letters(conn, pair.source, "orders", 2000, 3)
            with pytest.raises(RuntimeError), conn.transaction():
                _letters(conn, pair.source, "orders", 3000, 9)
                raise RuntimeError("savepoint rolled back")
        assert waiting_counts(conn, pair.source) == _truth(conn, pair.source)
        assert waiting_counts(conn, other) == _truth(conn, other)
        _check_resolved(conn, pair.source)
        _check_resolved(conn, other)
        every = conn.execute("select count(*) from tidemark.dead_letters where source = %s",
                             (pair.source,)).fetchone()[0]
    assert count_dead_letters(pair.land, pair.source, include_replayed=True) == every
    # purge: resolved letters only, then waiting ones too
    assert purge_dead_letters(pair.land, pair.source, DAY) > 0
    assert count_dead_letters(pair.land, pair.source) == 14 + 7 + 1  # orders, payments, items
    assert count_dead_letters(pair.land, pair.source, table="items") == 1
    purge_dead_letters(pair.land, pair.source, DAY, waiting=True)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        assert waiting_counts(conn, pair.source) == _truth(conn, pair.source) == {}
        assert waiting_counts(conn, other) == {"orders": 4}
        _check_resolved(conn, pair.source)
        conn.execute("truncate tidemark.dead_letters")
        assert waiting_counts(conn, other) == {}
        _letters(conn, other, "orders", 0, 2)
        assert waiting_counts(conn, other) == {"orders": 2}


def test_counts_are_folded_and_stay_exact(pair: Pair) -> None:
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        for i in range(COMPACT_AT + 5):  # one delta row per transaction
            _letters(conn, pair.source, "orders", 10 * i, 2)
        rows = conn.execute("select count(*) from tidemark.dead_letter_counts where source = %s",
                            (pair.source,)).fetchone()[0]
        assert rows == COMPACT_AT + 5  # one per statement
        assert waiting_counts(conn, pair.source) == _truth(conn, pair.source)  # folds
        assert conn.execute("select table_name, waiting from tidemark.dead_letter_counts"
                            " where source = %s", (pair.source,)).fetchall() == [
            ("orders", _truth(conn, pair.source)["orders"])]
        assert waiting_counts(conn, pair.source) == _truth(conn, pair.source)
        for i in range(COMPACT_AT + 1):  # folded again, with the row of the last fold
            _letters(conn, pair.source, "orders", 10_000 + 10 * i, 2)
        assert waiting_counts(conn, pair.source) == _truth(conn, pair.source)
        assert conn.execute("select table_name, waiting from tidemark.dead_letter_counts"
                            " where source = %s", (pair.source,)).fetchall() == [
            ("orders", _truth(conn, pair.source)["orders"])]


def test_writers_and_a_fold_do_not_wait_for_each_other(pair: Pair) -> None:
    """A long replay's transaction, the stream's and a fold only insert delta rows (the fold
    deletes committed ones): none waits for another."""
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        for i in range(COMPACT_AT + 1):
            _letters(conn, pair.source, "orders", 10 * i, 1)
    with psycopg.connect(pair.land) as replaying, \
            psycopg.connect(pair.land, autocommit=True) as streaming:
        replaying.execute("update tidemark.dead_letters set replayed_at = now() where"
                          " source = %s and seq < 100", (pair.source,))  # not committed
        streaming.execute("set lock_timeout = '2s'")
        _letters(streaming, pair.source, "orders", 100_000, 4)  # no wait on the replay
        assert waiting_counts(streaming, pair.source) == _truth(streaming, pair.source)  # folds
        replaying.commit()
        assert waiting_counts(streaming, pair.source) == _truth(streaming, pair.source)


def test_an_older_landing_counts_its_letters_once(pair: Pair) -> None:
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        conn.execute("drop table tidemark.dead_letter_counts")  # a landing of an older version
        for event in ("insert", "update", "delete", "truncate"):
            conn.execute(f"drop trigger dead_letter_counts_{event} on tidemark.dead_letters")
        _letters(conn, pair.source, "orders", 0, 30)
        ensure_state(conn, pair.source)
        assert waiting_counts(conn, pair.source) == {"orders": 20}
        ensure_state(conn, pair.source)  # installed: not counted again
        _letters(conn, pair.source, "orders", 100, 3)
        assert waiting_counts(conn, pair.source) == {"orders": 22}


def test_a_landing_that_counted_waiting_letters_only_counts_the_resolved_ones(pair: Pair
                                                                               ) -> None:
    """Round 37 counts the replayed letters too (``dlq replay``'s skipped, ``dlq list --all``):
    a landing whose counts kept the waiting letters only is installed and counted again."""
    with psycopg.connect(pair.land, autocommit=True) as conn:
        ensure_state(conn, pair.source)
        conn.execute("alter table tidemark.dead_letter_counts drop column resolved")
        conn.execute(  # round 36's trigger function
            "create or replace function tidemark.dead_letter_counts_delta_insert() returns"
            " trigger language plpgsql as $fn$ begin insert into tidemark.dead_letter_counts"
            " (source, table_name, waiting) select source, table_name, count(*) from new_rows"
            " where replayed_at is null group by 1, 2; return null; end $fn$")
        _letters(conn, pair.source, "orders", 0, 30)  # 20 waiting, 10 replayed
        ensure_state(conn, pair.source)
        assert waiting_counts(conn, pair.source) == {"orders": 20}
        assert resolved_count(conn, pair.source) == 10
        ensure_state(conn, pair.source)  # installed: not counted again
        _letters(conn, pair.source, "orders", 100, 3)
        assert (waiting_counts(conn, pair.source), resolved_count(conn, pair.source)) == (
            {"orders": 22}, 11)
