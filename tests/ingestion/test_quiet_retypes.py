"""Widenings of tables no row change streamed since (ingestion/quiet_widening.py): followed from
the source catalog, so mirror and changelog read as the source does without a later write."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

from ingestion import catch_up, run
from ingestion.resync import resync
from tests.ingestion.conftest import (
    Pair,
    assert_changelog_replays,
    assert_mirror_equals,
    contracts_for,
    wait_until,
)


def mirror_types(p: Pair, table: str) -> dict[str, str]:
    with psycopg.connect(p.land) as conn:
        return dict(conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid"
            " = %s::regclass and attnum > 0 and not attisdropped", (f'"{p.source}"."{table}"',)))


def run_until(p: Pair, done: Callable[[], bool], contracts: object = None) -> None:
    """Run ingestion (publication syncs and heartbeats twice a second) until ``done()``."""
    stop = threading.Event()
    runner = threading.Thread(target=run, args=(p.src, p.land, p.source), kwargs={
        "stop": stop, "refresh_s": 0.5, "heartbeat_s": 0.3, "max_backoff_s": 0.5,
        "contracts": contracts}, daemon=True)
    runner.start()
    try:
        wait_until(done, timeout=60)
    finally:
        stop.set()
        runner.join(60)


def paused_until(p: Pair, tables: set[str], contracts: object = None) -> dict[str, str]:
    """:func:`run_until` ``tables`` are paused; return every paused table's reason."""
    def reasons() -> dict[str, str]:
        with psycopg.connect(p.land) as conn:
            return dict(conn.execute("select table_name, paused_reason from"
                                     " tidemark.replicated_tables where paused_at is not null"))
    run_until(p, lambda: tables <= set(reasons()), contracts)
    return reasons()


def history(p: Pair) -> list[tuple]:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select table_name, change, column_name, action from"
                            " tidemark.schema_history order by 1, 3, recorded_at").fetchall()


def test_a_widening_that_rewrites_the_rows_text_reaches_a_quiet_table(pair: Pair) -> None:
    """Issue 10: ``numeric(12,2)`` → ``numeric(16,3)`` rewrites ``1.25`` as ``1.250`` and
    ``timestamp(0)`` → ``timestamp(3)`` keeps its text, ``real`` → ``double precision`` reads
    ``0.1`` as ``0.10000000149011612``, ``char(4)`` → ``varchar`` drops the blanks: a table that
    gets no write after the DDL reads so in landing too (on main it kept the old text)."""
    pair.src_exec("create table q (id int primary key, amount numeric(12,2), ts timestamp(0),"
                  " r real, c char(4))",
                  "insert into q select g, g * 1.25, '2020-01-01 10:00:00', 0.1, 'a'"
                  " from generate_series(1, 20) g")
    catch_up(pair.src, pair.land, pair.source)
    # One row change streams with the old shape after the DDL was committed (the stream lags).
    pair.src_exec("insert into q values (21, 3.5, '2020-01-02', 0.2, 'b')",
                  "alter table q alter column amount type numeric(16,3)",
                  "alter table q alter column ts type timestamp(3)",
                  "alter table q alter column r type double precision",
                  "alter table q alter column c type varchar")
    catch_up(pair.src, pair.land, pair.source)
    assert mirror_types(pair, "q")["amount"] == "numeric(16,3)"
    assert mirror_types(pair, "q")["c"] == "character varying"
    assert_mirror_equals(pair, "q")
    assert_changelog_replays(pair, "q", ["id"])
    # The next write shows the new shape: nothing paused, recorded once more.
    pair.src_exec("insert into q values (22, 1.125, '2020-01-03 01:02:03.456', 0.3, 'c')",
                  "update q set amount = 2.375 where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "q")
    assert_changelog_replays(pair, "q", ["id"])
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.replicated_tables"
                            " where paused_at is not null").fetchone()[0] == 0
    assert {(c, a) for _, c, _, a in history(pair)} == {("create_table", "applied"),
                                                        ("widen_type", "applied")}


CONTRACT = ("version: 1\nprimary_key: [id]\nevent_time: null\ncompatibility: none\n"
            "allowed_lateness: 0s\nfreshness: {warn_after: 1d, error_after: 2d}\n"
            "columns: {id: {type: integer}, amount: {type: numeric}}\n")


def test_a_contract_that_refuses_widenings_pauses_a_quiet_table(pair: Pair,
                                                                tmp_path: Path) -> None:
    contracts = contracts_for(tmp_path, pair.source, q=CONTRACT)
    pair.src_exec("create table q (id int primary key, amount numeric(12,2))",
                  "insert into q values (1, 1.25)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("alter table q alter column amount type numeric(16,3)")
    reason = paused_until(pair, {"q"}, contracts).get("q")
    assert mirror_types(pair, "q")["amount"] == "numeric(12,2)"
    assert reason is not None and "to numeric(16,3) on the source (widen_type, not allowed by"\
        " its contract; seen in its catalog" in reason


def test_another_type_change_of_a_quiet_table_pauses_it_for_a_resync(pair: Pair) -> None:
    """``timestamptz`` → ``timestamp`` in a New York session and ``varchar(5)`` → ``char(10)``
    rewrite the rows as landing cannot repeat: a table written after the DDL pauses at its
    Relation message; one nobody writes pauses the same (on main its mirror kept the old
    values, unpaused); the resync the message names makes both equal to the source."""
    for table in ("busy", "quiet"):
        pair.src_exec(f"create table {table} (id int primary key, code varchar(5),"
                      f" tz timestamptz)", f"insert into {table} select g, 'c' || g,"
                      f" '2020-01-01 10:00:00+00' from generate_series(1, 20) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("set timezone = 'America/New_York'; alter table busy alter column tz type"
                  " timestamp; alter table quiet alter column tz type timestamp",
                  "alter table busy alter column code type char(10)",
                  "alter table quiet alter column code type char(10)",
                  "insert into busy values (100, 'x', '2021-01-01')")
    catch_up(pair.src, pair.land, pair.source)  # the stream pauses busy, at the real LSN
    with psycopg.connect(pair.land) as conn:
        assert "(change_type)" in conn.execute("select paused_reason from"
                                               " tidemark.replicated_tables where table_name"
                                               " = 'busy'").fetchone()[0]
    reasons = paused_until(pair, {"quiet"})
    assert set(reasons) == {"busy", "quiet"}
    assert "column 'code' changed type from character varying(5) to character(10) on the source"\
           " (change_type; seen in its catalog, no row change of the new type streamed yet)"\
           in reasons["quiet"]
    assert f"tidemark ingest resync quiet --source {pair.source}" in reasons["quiet"]
    for table in ("busy", "quiet"):
        resync(pair.src, pair.land, pair.source, table)
    pair.src_exec("insert into quiet values (100, 'y', '2021-01-02')")
    catch_up(pair.src, pair.land, pair.source)
    for table in ("busy", "quiet"):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, ["id"], strict=False)


def test_a_quiet_widening_a_view_on_the_mirror_forbids_pauses_naming_it(pair: Pair) -> None:
    pair.src_exec("create table q (id int primary key, amount numeric(12,2))",
                  "insert into q values (1, 1.25)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(f'create view amounts as select amount from "{pair.source}".q')
    pair.src_exec("alter table q alter column amount type numeric(16,3)")
    reason = paused_until(pair, {"q"}).get("q")
    assert reason is not None and "(widen_type; seen in its catalog" in reason
    assert "view amounts depends on column" in reason, reason
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("drop view amounts")
    resync(pair.src, pair.land, pair.source, "q")
    assert_mirror_equals(pair, "q")


def _keyless_widened_after_a_delete(pair: Pair) -> None:
    """Keyless table ``h``, landed; then a delete and an update of it, and its widenings."""
    pair.src_exec("create table h (amount numeric(12,2), r real, c char(4), n int)",
                  "alter table h replica identity full",
                  "insert into h select g * 1.25, 0.1 * g, 'a' || g, g"
                  " from generate_series(1, 20) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("delete from h where n = 3", "update h set n = -n where n = 4",
                  "alter table h alter column amount type numeric(16,3), alter column r type"
                  " double precision, alter column c type varchar")


def test_a_keyless_table_widens_once_the_stream_is_past_the_ddl(pair: Pair) -> None:
    """A keyless table's removal finds its row by the row's text: a delete of the old type
    (``1.50``) streamed after the mirror was widened (``1.500``) would miss it, so its quiet
    widening waits for the stream to pass the DDL (here: the delete lands first)."""
    _keyless_widened_after_a_delete(pair)
    run_until(pair, lambda: mirror_types(pair, "h")["amount"] == "numeric(16,3)")
    assert mirror_types(pair, "h")["c"] == "character varying"
    assert_mirror_equals(pair, "h")
    assert_changelog_replays(pair, "h", None)


def test_a_keyless_tables_quiet_widening_is_followed_by_a_catch_up(pair: Pair) -> None:
    """A catch-up (the Dagster asset's, ``tidemark up``'s first, a resync's) saw the widening
    at its start, before its stream was past the DDL, and left it; the next one saw it anew
    and left it again: the mirror kept the old type for good. The catch-up now streams on to
    a later target and follows it, after the delete that came before the DDL."""
    _keyless_widened_after_a_delete(pair)
    catch_up(pair.src, pair.land, pair.source)
    assert mirror_types(pair, "h") == {"amount": "numeric(16,3)", "r": "double precision",
                                       "c": "character varying", "n": "integer"}
    assert_mirror_equals(pair, "h")
    assert_changelog_replays(pair, "h", None)
    assert {(c, a) for t, c, _, a in history(pair) if t == "h" and c == "widen_type"} == {
        ("widen_type", "applied")}
