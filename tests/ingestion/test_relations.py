"""Schema changes from Relation messages (ingestion/relations.py): added columns follow with the
values the source gives existing rows (constant and volatile defaults), safe type changes and
contract-allowed drops flow, breaking changes pause only their table at the real LSN, resync
loses nothing. DDL runs while a writer keeps changing the table."""

from __future__ import annotations

import logging
import random
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
    Writer,
    assert_changelog_replays,
    assert_mirror_equals,
    changelog,
    contracts_for,
)


def paused(p: Pair) -> dict[str, str]:
    with psycopg.connect(p.land) as conn:
        return dict(conn.execute("select table_name, paused_reason from"
                                 " tidemark.replicated_tables where paused_at is not null"))


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
    reasons = paused(pair)
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
    assert paused(pair) == {}
    pair.src_exec("insert into a values (5, 5, 'flows')", "insert into c values (3, '3')")
    catch_up(pair.src, pair.land, pair.source)
    for table in ("a", "b", "c", "d"):
        assert_mirror_equals(pair, table)
    ops = [r[0] for r in changelog(pair.land, pair.source, "a", "_op")]
    # 1 snapshot row + c + (paused: c, u, c) + resync snapshot (4 rows) + c
    assert ops.count("c") == 4 and ops.count("u") == 1


def paused_rows(p: Pair) -> list[tuple]:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select table_name, paused_reason from tidemark.replicated_tables"
                            " where paused_at is not null").fetchall()


def test_added_column_with_a_constant_default_gives_existing_rows_its_value(pair: Pair) -> None:
    """Issue 10 item 2, the exact report: existing rows read the default on the source."""
    pair.src_exec("create table t (id int primary key, title text)",
                  "insert into t select g, 't' || g from generate_series(1, 50) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("alter table t add column priority integer default 0",
                  "insert into t values (51, 'new', 5)")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "t")
    with psycopg.connect(pair.land) as conn:
        nulls = conn.execute(f'select count(*) from "{pair.source}".t where priority is null'
                             ).fetchone()[0]
    assert nulls == 0
    assert_changelog_replays(pair, "t", ["id"])
    assert paused_rows(pair) == []


def _writes(conn: psycopg.Connection, i: int) -> None:
    """One OLTP transaction against table t (columns named: the table grows meanwhile)."""
    rng = random.Random(i)
    conn.execute("insert into t (id, v, label) values (%s, %s, %s)", (10_000 + i, i, f"w{i}"))
    conn.execute("update t set v = v + 1 where id = %s", (rng.randint(1, 10_000 + i),))
    if i % 5 == 0:
        conn.execute("delete from t where id = %s", (rng.randint(1, 10_000 + i),))


def test_added_columns_with_volatile_and_not_null_defaults_while_writes_go_on(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, v int, label text)",
                  "insert into t select g, g, 'l' || g from generate_series(1, 3000) g")
    catch_up(pair.src, pair.land, pair.source)
    with Writer(pair.src, _writes) as writer:
        pair.src_exec("alter table t add column priority integer default 0",
                      "alter table t add column rank integer not null default 7",
                      "alter table t add column created_at timestamptz default now()",
                      "alter table t add column score double precision default random()",
                      "alter table t add column token uuid default gen_random_uuid()",
                      "alter table t add column tag text default 'x'")
        catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == [] and writer.done > 20
    catch_up(pair.src, pair.land, pair.source)
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "t")
    assert_changelog_replays(pair, "t", ["id"])


def test_added_columns_with_defaults_on_a_keyless_table(pair: Pair) -> None:
    """Keyless tables too: a constant default is backfilled (``b`` + ``u`` rows in the
    changelog), a per-row default resyncs the table."""
    pair.src_exec("create table h (tid int, delta int)", "alter table h replica identity full",
                  "insert into h select g % 7, g % 3 from generate_series(1, 500) g",
                  "create table h2 (tid int, delta int)", "alter table h2 replica identity full",
                  "insert into h2 select g % 7, g % 3 from generate_series(1, 500) g")
    catch_up(pair.src, pair.land, pair.source)

    def step(conn: psycopg.Connection, i: int) -> None:
        for table in ("h", "h2"):
            conn.execute(f"insert into {table} (tid, delta) values (%s, 1)", (i % 7,))
            conn.execute(f"delete from {table} where ctid = (select min(ctid) from {table}"
                         f" where tid = %s)", (i % 5,))

    with Writer(pair.src, step) as writer:
        pair.src_exec("alter table h add column priority integer default 0",
                      "alter table h2 add column priority integer default 0",
                      "alter table h2 add column mtime timestamptz default clock_timestamp()")
        catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == []
    catch_up(pair.src, pair.land, pair.source)
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "h")
    assert_mirror_equals(pair, "h2")
    assert_changelog_replays(pair, "h", None)
    # clock_timestamp() rewrote h2: resynced, so removals between the DDL and the resync
    # snapshot meet rows of the old shape (see replayed_changelog).
    assert_changelog_replays(pair, "h2", None, strict=False)
    ops = {r[0] for r in changelog(pair.land, pair.source, "h", "_op")}
    assert {"b", "u"} <= ops


def test_safe_type_changes_flow_while_writes_go_on(pair: Pair) -> None:
    """Issue 10 item 5: widening types is applied to mirror and changelog, not paused."""
    pair.src_exec("create table t (id int primary key, v int, label varchar(8), s smallint,"
                  " amount numeric(12, 2), code varchar(4), note varchar)",
                  "insert into t select g, g, 'l' || g, g % 100, g * 1.25, 'c', 'n'"
                  " from generate_series(1, 2000) g")
    catch_up(pair.src, pair.land, pair.source)
    with Writer(pair.src, _writes) as writer:
        pair.src_exec("alter table t alter column v type bigint",
                      "alter table t alter column s type integer",
                      "alter table t alter column amount type numeric(14, 2)",
                      "alter table t alter column label type varchar(40)",
                      "alter table t alter column code type text",
                      "alter table t alter column note type text")
        catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == []
    pair.src_exec("insert into t values (999999, 9000000000, repeat('w', 40), 100000,"
                  " 123456789012.25, 'long code', 'note')")
    catch_up(pair.src, pair.land, pair.source)
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "t")
    assert_changelog_replays(pair, "t", ["id"])
    with psycopg.connect(pair.land) as conn:
        types = dict(conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid"
            " = %s::regclass and attnum > 0", (f'cdc."{pair.source}__t"',)).fetchall())
        actions = {r[0] for r in conn.execute("select action from tidemark.schema_history"
                                              " where change = 'widen_type'")}
    assert types["v"] == "bigint" and types["amount"] == "numeric(14,2)"
    assert types["label"] == "character varying(40)" and types["code"] == "text"
    assert actions == {"applied"}


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
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "people")
    with psycopg.connect(pair.land) as conn:
        kept = conn.execute(f'select id, nickname from "{pair.source}".people order by id'
                            ).fetchall()
    # Readers of the old shape keep working: the dropped column stays and reads as NULL.
    assert kept == [(1, None), (2, None), (3, None)]

    # A required column is not optional: dropping it pauses, with the real LSN.
    pair.src_exec("alter table people drop column name", "insert into people values (4)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert [r[0] for r in paused_rows(pair)] == ["people"]


def test_a_pause_records_the_real_lsn(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, v int)", "insert into t values (1, 1)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        before = str_to_lsn(conn.execute("select pg_current_wal_lsn()::text").fetchone()[0])
    pair.src_exec("alter table t alter column v type text", "insert into t values (2, 'two')")
    catch_up(pair.src, pair.land, pair.source)
    (name, reason), = paused_rows(pair)
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


def test_a_keyless_table_that_gains_a_key_keeps_flowing(pair: Pair) -> None:
    pair.src_exec("create table k (id int, v text)", "alter table k replica identity full",
                  "insert into k values (1, 'a'), (2, 'b'), (2, 'b')")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("delete from k where ctid = (select max(ctid) from k where id = 2)",
                  "alter table k add primary key (id)", "alter table k replica identity default",
                  "update k set v = 'bb' where id = 2", "insert into k values (3, 'c')",
                  "update k set id = 4 where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "k")
    assert_changelog_replays(pair, "k", ["id"])
    with psycopg.connect(pair.land) as conn:
        key = conn.execute("select count(*) from pg_constraint where conrelid = %s::regclass"
                           " and contype = 'p'", (f'"{pair.source}".k',)).fetchone()[0]
    assert key == 1


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
    assert paused_rows(pair) == []
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
    assert [r[0] for r in paused_rows(pair)] == ["u"]  # t was copied again by itself
    assert_mirror_equals(pair, "t")
    resyncing = lag_evaluation(TableState(pair.source, "t", None, 0, "a reason", None,
                                          resyncing=True), 5, 60)
    waiting = lag_evaluation(TableState(pair.source, "u", None, 0, "a reason", None), 5, 60)
    assert (resyncing.severity, waiting.severity) == (dg.AssetCheckSeverity.WARN,
                                                      dg.AssetCheckSeverity.ERROR)
    assert "nothing to do" in resyncing.description and "Fix the cause" in waiting.description


def _writes_around_a_drop(conn: psycopg.Connection, i: int) -> None:
    """Table t's writes before and after its column ``junk`` is dropped (not named: the
    statements work in both shapes)."""
    _writes(conn, i)
    conn.execute("insert into k (n) values (%s)", (i,))
    if i % 3 == 0:
        conn.execute("delete from k where ctid = (select min(ctid) from k)")


def test_a_dropped_column_of_a_table_without_a_contract_is_followed_while_rows_stream(
        pair: Pair) -> None:
    """No contract, no promise to keep: landing follows the drop (as Fivetran and Airbyte do)
    instead of pausing the table for a resync. The column stays in mirror and changelog; rows
    written after the drop have NULL there, earlier rows keep their value."""
    pair.src_exec("create table t (id int primary key, v int, label text,"
                  " junk text not null default 'j')",
                  "insert into t select g, g, 'l' || g, 'old' || g from generate_series(1, 3000) g",
                  "create table k (n int, junk text default 'j')",
                  "alter table k replica identity full",
                  "insert into k select g, 'old' from generate_series(1, 200) g")
    catch_up(pair.src, pair.land, pair.source)
    with Writer(pair.src, _writes_around_a_drop) as writer:
        catch_up(pair.src, pair.land, pair.source)  # rows with junk stream...
        pair.src_exec("alter table t drop column junk", "alter table k drop column junk")
        catch_up(pair.src, pair.land, pair.source)  # ...and rows without it
    pair.src_exec("update t set v = -1 where id = 1", "insert into k values (-1)")
    catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == [] and writer.done > 20
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "t")
    assert_mirror_equals(pair, "k")
    assert_changelog_replays(pair, "t", ["id"])
    with psycopg.connect(pair.land) as conn:
        s = pair.source
        hist = conn.execute("select table_name, action, detail from tidemark.schema_history"
                            " where change = 'drop_column' order by 1").fetchall()
        drop_lsn = conn.execute("select min(lsn) from tidemark.schema_history"
                                " where change = 'drop_column' and table_name = 't'"
                                ).fetchone()[0]
        # Each mirror row's junk is its last changelog image's: the old value for a row last
        # written before the drop, NULL for one written after.
        mismatched = conn.execute(f"""
            select count(*) from "{s}".t m join lateral (select c.junk, c._commit_lsn
              from cdc."{s}__t" c where c.id = m.id and c._op in ('r', 'c', 'u')
              order by c._commit_lsn desc, c._seq desc limit 1) last on true
            where m.junk is distinct from last.junk""").fetchone()[0]
        after, before = conn.execute(f"""
            select count(*) filter (where m.junk is null), count(*) filter (where m.junk is not
              null) from "{s}".t m""").fetchone()
        written_after = conn.execute(f'select count(*) from cdc."{s}__t" where _commit_lsn >'
                                     ' %s and junk is not null', (drop_lsn,)).fetchone()[0]
        updated = conn.execute(f'select v, junk from "{s}".t where id = 1').fetchone()
        keyless = conn.execute(f'select count(*) filter (where junk is null), count(*) from'
                               f' "{s}".k where n = -1').fetchone()
    assert [(t, a) for t, a, _ in hist] == [("k", "applied"), ("t", "applied")]
    assert all("no contract" in d and "NULL in rows written from now on" in d
               for _, _, d in hist)
    assert mismatched == 0 and written_after == 0
    assert after > 0 and before > 0
    assert updated == (-1, None)  # an old row updated after the drop: NULL there
    assert keyless == (1, 1)


def test_a_dropped_key_column_of_a_table_without_a_contract_takes_null(pair: Pair) -> None:
    """The column dropped was the key: the mirror turns keyless, and the kept column, NOT NULL
    while it was the key, takes the NULL of the rows written after the drop."""
    pair.src_exec("create table u (id int primary key, v int)",
                  "alter table u replica identity full",
                  "insert into u select g, g from generate_series(1, 10) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("alter table u drop column id", "insert into u values (11)",
                  "update u set v = -v where v = 2")
    catch_up(pair.src, pair.land, pair.source)
    assert paused_rows(pair) == []
    assert_mirror_equals(pair, "u")
    with psycopg.connect(pair.land) as conn:
        rows = conn.execute(f'select id, v from "{pair.source}".u where id is null order by v'
                            ).fetchall()
    assert rows == [(None, -2), (None, 11)]


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
    assert paused(pair) == {}


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
    assert paused(pair) == {}
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
    assert paused(pair) == {}
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.schema_history where change ="
                            " 'readd_column'").fetchone()[0] == 1
