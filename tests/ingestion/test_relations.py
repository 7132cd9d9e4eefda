"""Schema changes from Relation messages (ingestion/relations.py): added columns follow with the
values the source gives existing rows (constant and volatile defaults), safe type changes and
contract-allowed drops flow, breaking changes pause only their table at the real LSN, resync
loses nothing. DDL runs while a writer keeps changing the table."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ingestion import catch_up
from ingestion.lsn import str_to_lsn
from ingestion.resync import resync
from ingestion.status import status
from orchestration.defs.ingestion.checks import lag_evaluation
from orchestration.defs.ingestion.state import TableState
from tests.ingestion.conftest import (
    Pair,
    assert_mirror_equals,
    changelog,
    contracts_for,
    paused_reasons,
)


def test_add_column_follows_and_breaking_changes_pause_then_resync(pair: Pair) -> None:
    pair.src_exec("create table a (id int primary key, x int)",
                  "create table b (id int primary key, y text)",
                  "create table c (id int primary key, n int)",
                  "insert into a values (1, 1)", "insert into b values (1, 'b')",
                  "insert into c values (1, 1)")
    catch_up(pair.src, pair.land, pair.source)

    pair.src_exec("alter table a add column z text", "insert into a values (2, 2, 'zz')")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "a")
    assert changelog(pair.land, pair.source, "a", "id, z")[-1] == (2, "zz")
    with psycopg.connect(pair.land) as conn:
        hist = conn.execute("select change, column_name, action from tidemark.schema_history"
                            " where table_name = 'a' and change <> 'create_table'").fetchall()
    assert hist == [("add_nullable_column", "z", "applied")]

    # Rename on a, a column's type change to text on b, type change on c: each pauses only
    # its own table.
    pair.src_exec("alter table a rename column x to x2", "insert into a values (3, 3, 'k')",
                  "update a set z = 'changed' where id = 1",
                  "alter table b alter column y type int using length(y)",
                  "insert into b values (2, 2)",
                  "alter table c alter column n type text", "insert into c values (2, '2')",
                  "create table d (id int primary key)", "insert into d values (1)")
    catch_up(pair.src, pair.land, pair.source)
    reasons = paused_reasons(pair)
    assert set(reasons) == {"a", "b", "c"}
    assert "'x' was renamed to 'x2'" in reasons["a"]
    assert "'y' changed type from text to integer" in reasons["b"]
    assert "'n' changed type from integer to text" in reasons["c"]
    assert all("tidemark ingest resync" in r for r in reasons.values())
    assert_mirror_equals(pair, "d")  # other tables keep flowing

    pair.src_exec("insert into a values (4, 4, 'after')")  # still paused: kept raw
    catch_up(pair.src, pair.land, pair.source)
    for table in ("a", "b", "c"):
        resync(pair.src, pair.land, pair.source, table)
    assert paused_reasons(pair) == {}
    pair.src_exec("insert into a values (5, 5, 'flows')", "insert into c values (3, '3')")
    catch_up(pair.src, pair.land, pair.source)
    for table in ("a", "b", "c", "d"):
        assert_mirror_equals(pair, table)
    ops = [r[0] for r in changelog(pair.land, pair.source, "a", "_op")]
    # 1 snapshot row + c + (paused: c, u, c) + resync snapshot (4 rows) + c
    assert ops.count("c") == 4 and ops.count("u") == 1


CONTRACT = """version: 1
primary_key: [id]
event_time: null
compatibility: full
allowed_lateness: 0s
freshness: {warn_after: 1d, error_after: 2d}
columns:
  id: {type: integer}
  name: {type: text}
  nickname: {type: text, nullable: true}
"""


def test_dropping_an_optional_column_under_full_compatibility_flows(pair: Pair,
                                                                    tmp_path: Path) -> None:
    contracts = contracts_for(tmp_path, pair.source, people=CONTRACT)
    pair.src_exec("create table people (id int primary key, name text, nickname text)",
                  "insert into people values (1, 'a', 'x'), (2, 'b', null)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("alter table people drop column nickname",
                  "insert into people values (3, 'c')", "update people set name = 'aa'"
                  " where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "people")
    with psycopg.connect(pair.land) as conn:
        kept = conn.execute(f'select id, nickname from "{pair.source}".people order by id'
                            ).fetchall()
    # Readers of the old shape keep working: the dropped column stays and reads as NULL.
    assert kept == [(1, None), (2, None), (3, None)]

    # A required column is not optional: dropping it pauses, with the real LSN.
    pair.src_exec("alter table people drop column name", "insert into people values (4)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert list(paused_reasons(pair)) == ["people"]


def test_a_pause_records_the_real_lsn(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, v int)", "insert into t values (1, 1)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        before = str_to_lsn(conn.execute("select pg_current_wal_lsn()::text").fetchone()[0])
    pair.src_exec("alter table t alter column v type text", "insert into t values (2, 'two')")
    catch_up(pair.src, pair.land, pair.source)
    (name, reason), = paused_reasons(pair).items()
    with psycopg.connect(pair.land) as conn:
        lsn, = conn.execute("select lsn::text from tidemark.schema_history where action ="
                            " 'paused'").fetchone()
        paused_lsn, = conn.execute("select paused_lsn::text from tidemark.replicated_tables"
                                   " where table_name = 't'").fetchone()
    assert str_to_lsn(lsn) > before
    assert paused_lsn == lsn
    assert f"paused at LSN {lsn}" in reason and "0/0" not in reason
    [shown] = status(pair.src, pair.land, pair.source)["paused_tables"]
    assert shown["paused_lsn"] == lsn and shown["table"] == name == "t"


def test_a_not_null_column_with_a_default_flows_under_a_backward_contract(
        pair: Pair, tmp_path: Path) -> None:
    # Before: `add_required_column` paused the table, although landing gives the old rows the
    # default exactly as the source does (g36's left-alone). A column without a default is
    # still breaking.
    contracts = contracts_for(tmp_path, pair.source, people=CONTRACT.replace(
        "compatibility: full", "compatibility: backward"))
    pair.src_exec("create table people (id int primary key, name text, nickname text)",
                  "insert into people values (1, 'a', 'x'), (2, 'b', null)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("alter table people add column tier text not null default 'basic'",
                  "alter table people add column token uuid not null default gen_random_uuid()",
                  "insert into people values (3, 'c', null, 'gold')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "people")
    with psycopg.connect(pair.land) as conn:
        changes = conn.execute("select change from tidemark.schema_history where"
                               " table_name = 'people' and column_name = 'tier'").fetchall()
    assert changes == [("add_column_with_default",)]


def test_an_automatic_resync_pause_is_a_warning_and_a_pause_for_the_user_an_error(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """A pause Tidemark resolves by itself ("... nothing to do") is logged at WARNING; a pause
    that waits for the user stays at ERROR; the ingestion_lag check says the same."""
    pair.src_exec("create table t (id int primary key, v int)",
                  "create table u (id int primary key, x int)",
                  "insert into t select g, g from generate_series(1, 50) g",
                  "insert into u values (1, 1)")
    catch_up(pair.src, pair.land, pair.source)
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    pair.src_exec("alter table t add column score double precision default random()",
                  "insert into t (id, v) values (100, 100)",
                  "alter table u rename column x to x2", "insert into u values (2, 2)")
    catch_up(pair.src, pair.land, pair.source)
    levels = {r.getMessage().split(" is paused")[0]: r.levelno for r in caplog.records
              if " is paused at LSN " in r.getMessage()}
    assert levels == {f"Table {pair.source}.t": logging.WARNING,
                      f"Table {pair.source}.u": logging.ERROR}, caplog.text
    assert list(paused_reasons(pair)) == ["u"]  # t was copied again by itself
    assert_mirror_equals(pair, "t")
    resyncing = lag_evaluation(TableState(pair.source, "t", None, 0, "a reason", None,
                                          resyncing=True), 5, 60)
    waiting = lag_evaluation(TableState(pair.source, "u", None, 0, "a reason", None), 5, 60)
    assert (resyncing.severity, waiting.severity) == (dg.AssetCheckSeverity.WARN,
                                                      dg.AssetCheckSeverity.ERROR)
    assert "nothing to do" in resyncing.description and "Fix the cause" in waiting.description


def test_a_column_dropped_and_added_again_is_copied_again(pair: Pair) -> None:
    # Same types everywhere: the stream's rows put the column's values at its new place, and
    # its old values are gone on the source; landing used to see the same names, follow
    # nothing and land b's values in a (and keep a's old ones).
    pair.src_exec("create table t (id int primary key, a text, b text)",
                  "insert into t values (1, 'a1', 'b1'), (2, 'a2', 'b2')")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("alter table t drop column a", "alter table t add column a text",
                  "insert into t values (3, 'b3', 'a3')", "update t set b = 'B1' where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "t")
    with psycopg.connect(pair.land) as conn:
        kinds = [r[0] for r in conn.execute("select change from tidemark.schema_history")]
    assert "readd_column" in kinds
    pair.src_exec("insert into t values (4, 'b4', 'a4')", "delete from t where id = 2")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "t")
    assert paused_reasons(pair) == {}


def test_the_last_column_dropped_and_added_again_is_copied_again(pair: Pair) -> None:
    # The Relation message shows the same names, types and order: only the new attnum tells.
    # Landing used to keep the old values where the source's rows read NULL now.
    pair.write_and_land("create table t (id int primary key, b text, a text)",
                        "insert into t values (1, 'b1', 'a1'), (2, 'b2', 'a2')")
    pair.write_and_land("alter table t drop column a", "alter table t add column a text",
                        "update t set b = 'B1' where id = 1")
    assert_mirror_equals(pair, "t")
    pair.write_and_land("update t set a = 'x' where id = 2",
                        "insert into t values (3, 'b3', 'a3')")
    assert_mirror_equals(pair, "t")
    assert paused_reasons(pair) == {}
    with psycopg.connect(pair.land) as conn:
        changes = [r[0] for r in conn.execute("select change from tidemark.schema_history")]
    assert changes.count("readd_column") == 1


def test_a_dropped_column_whose_values_landing_kept_is_copied_again_when_it_comes_back(
        pair: Pair) -> None:
    # Without a contract the mirror keeps a dropped column's values; added again (no default)
    # the source's rows read NULL there, and landing used to keep the old values of every row
    # not written since.
    pair.write_and_land("create table t (id int primary key, b text, a text)",
                        "insert into t values (1, 'b1', 'a1'), (2, 'b2', 'a2'), (3, 'b3', 'a3')")
    pair.write_and_land("alter table t drop column a", "update t set b = 'X' where id = 2")
    pair.write_and_land("alter table t add column a text", "update t set b = 'B1' where id = 1")
    assert_mirror_equals(pair, "t")
    assert paused_reasons(pair) == {}
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.schema_history where change ="
                            " 'readd_column'").fetchone()[0] == 1
