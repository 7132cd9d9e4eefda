"""Following a source schema change in landing (ingestion/schema_follow.py): added columns
with the values the source gives existing rows (constant and volatile defaults), wider types,
dropped columns of a table without a contract (kept, a key column taking NULL) and a key gained,
applied to mirror and changelog while a writer keeps changing the table."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg import sql

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import list_dead_letters, replay
from ingestion.letter_indexes import DEAD_LETTERS
from ingestion.schema_changes import SchemaChange
from ingestion.schema_follow import exclusive_tables
from ingestion.tables import ColumnInfo, TableInfo
from tests.ingestion.conftest import (
    Pair,
    Writer,
    assert_changelog_replays,
    assert_mirror_equals,
    changelog,
    paused_reasons,
)


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
    assert paused_reasons(pair) == {}


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
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "t")
    assert_changelog_replays(pair, "t", ["id"])


def test_added_columns_with_now_and_a_not_null_constant_need_no_resync(pair: Pair) -> None:
    """Issue 10 item 2 for the defaults the source stores once (``attmissingval``): ``now()``
    and ``NOT NULL DEFAULT 7`` give existing rows one value without a rewrite, and landing must
    give them the same. The test above adds them beside ``random()``, whose rewrite resyncs the
    table and so gives every column its value anyway: it passed with landing's existing rows
    left NULL (audit51)."""
    pair.src_exec("create table t (id int primary key, v int, label text)",
                  "insert into t select g, g, 'l' || g from generate_series(1, 3000) g")
    catch_up(pair.src, pair.land, pair.source)
    with Writer(pair.src, _writes) as writer:
        pair.src_exec("alter table t add column rank integer not null default 7",
                      "alter table t add column created_at timestamptz default now()")
        catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == [] and writer.done > 20
    catch_up(pair.src, pair.land, pair.source)
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "t")
    assert_changelog_replays(pair, "t", ["id"])
    with psycopg.connect(pair.land) as conn:
        nulls = conn.execute(f'select count(*) from "{pair.source}".t where rank is null'
                             " or created_at is null").fetchone()[0]
        actions = {r[0] for r in conn.execute(
            "select action from tidemark.schema_history where source = %s", (pair.source,))}
    assert nulls == 0
    assert actions == {"applied"}, "followed in place, not by a resync"


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
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "h")
    assert_mirror_equals(pair, "h2")
    assert_changelog_replays(pair, "h", None)
    # clock_timestamp() rewrote h2: resynced, so removals between the DDL and the resync
    # snapshot meet rows of the old shape (see replayed_changelog).
    assert_changelog_replays(pair, "h2", None, strict=False)
    ops = {r[0] for r in changelog(pair.land, pair.source, "h", "_op")}
    assert {"b", "u"} <= ops


def test_an_added_column_then_a_rewrite_reaches_rows_held_only_by_dead_letters(
        pair: Pair, tmp_path: Path) -> None:
    """Every row of k and t broke the contract (the mirrors are empty, the rows wait as dead
    letters); the source added a column with a constant default, then rewrote the table (a
    wider type), which clears the value existing rows read from the catalog. Only the source
    knows it now, and the letters' rows are existing rows: both tables are resynced, and a
    replay under a relaxed contract lands the source's rows. Before: an empty mirror counted as
    "no existing row", the letters kept no value of the column, and after the replay the
    mirrors held NULL where the source has 7 (generator seed 45439)."""
    pair.src_exec("create table k (a int, n numeric)", "alter table k replica identity full",
                  "create table t (id int primary key, a int)")
    strict, relaxed = tmp_path / "strict", tmp_path / "relaxed"
    fresh = ("freshness: {warn_after: 15m, error_after: 1h}\ncompatibility: backward\n"
             "allowed_lateness: 1h\n")
    for root, rule in ((strict, ", max: 5"), (relaxed, "")):
        (root / pair.source).mkdir(parents=True)
        (root / pair.source / "k.yml").write_text(
            f"version: 1\n{fresh}primary_key: []\ncolumns:\n  a: {{type: integer{rule}}}\n"
            "  n: {type: numeric, nullable: true}\n")
        (root / pair.source / "t.yml").write_text(
            f"version: 1\n{fresh}primary_key: [id]\ncolumns:\n  id: {{type: integer}}\n"
            f"  a: {{type: integer{rule}}}\n")
    contracts = load_contracts(strict)
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("insert into k values (9, 2.50), (9, 1), (9, 1)",
                  "insert into t values (1, 9), (2, 9)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert len(list_dead_letters(pair.land, pair.source)) == 5
    pair.src_exec("alter table k add column e1 int default 7",
                  "alter table t add column e1 int default 7")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)  # nothing sent yet
    pair.src_exec("alter table k alter column a type bigint",
                  "alter table t alter column a type bigint",
                  "insert into k values (4, null)", "insert into t values (3, 4)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)  # follows, resyncs
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert paused_reasons(pair) == {}
    replay(pair.land, pair.source, contracts=load_contracts(relaxed))
    assert list_dead_letters(pair.land, pair.source) == []
    assert_mirror_equals(pair, "k")
    assert_mirror_equals(pair, "t")


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
    assert paused_reasons(pair) == {}
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


def test_a_keyless_table_that_gains_a_key_keeps_flowing(pair: Pair) -> None:
    pair.src_exec("create table k (id int, v text)", "alter table k replica identity full",
                  "insert into k values (1, 'a'), (2, 'b'), (2, 'b')")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("delete from k where ctid = (select max(ctid) from k where id = 2)",
                  "alter table k add primary key (id)", "alter table k replica identity default",
                  "update k set v = 'bb' where id = 2", "insert into k values (3, 'c')",
                  "update k set id = 4 where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "k")
    assert_changelog_replays(pair, "k", ["id"])
    with psycopg.connect(pair.land) as conn:
        key = conn.execute("select count(*) from pg_constraint where conrelid = %s::regclass"
                           " and contype = 'p'", (f'"{pair.source}".k',)).fetchone()[0]
    assert key == 1


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
    assert paused_reasons(pair) == {}
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
    assert paused_reasons(pair) == {}
    assert_mirror_equals(pair, "u")
    with psycopg.connect(pair.land) as conn:
        rows = conn.execute(f'select id, v from "{pair.source}".u where id is null order by v'
                            ).fetchall()
    assert rows == [(None, -2), (None, 11)]




def test_the_tables_a_followed_change_locks_are_the_ones_its_ddl_alters() -> None:
    text = ColumnInfo("note", 25, -1, "text")
    info = TableInfo("s", "t", "public", "t", 1, [ColumnInfo("id", 23, -1, "integer")], ["id"],
                     retired=[text])
    both = [info.mirror, info.changelog]
    back = SchemaChange("add_nullable_column", "note", "column 'note' added", text)
    new = SchemaChange("add_nullable_column", "other", "column 'other' added",
                       replace(text, name="other"))
    dropped = SchemaChange("drop_column", "id", "column 'id' dropped")
    assert exclusive_tables(info, [back], ["id"], None) == []  # an UPDATE
    assert exclusive_tables(info, [dropped], ["id"], None) == []
    assert exclusive_tables(info, [new], ["id"], None) == both
    assert exclusive_tables(info, [], [], None) == both  # the key lost
    stale = sql.Identifier("tidemark", "an_index")
    assert exclusive_tables(info, [], ["id"], stale) == [DEAD_LETTERS]
