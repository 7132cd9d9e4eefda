"""Schema changes from Relation messages: added columns follow, breaking changes pause only their
table (with an error naming table, column, change and the resync command), resync loses nothing."""

from __future__ import annotations

import psycopg

from ingestion import catch_up
from ingestion.resync import resync
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog


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

    # Rename on a, drop on b, type change on c: each pauses only its own table.
    pair.src_exec("alter table a rename column x to x2", "insert into a values (3, 3, 'k')",
                  "update a set z = 'changed' where id = 1",
                  "alter table b drop column y", "insert into b values (2)",
                  "alter table c alter column n type bigint", "insert into c values (2, 2)",
                  "create table d (id int primary key)", "insert into d values (1)")
    catch_up(pair.src, pair.land, pair.source)
    reasons = paused(pair)
    assert set(reasons) == {"a", "b", "c"}
    assert "'x' was renamed to 'x2'" in reasons["a"]
    assert "'y' was dropped" in reasons["b"]
    assert "'n' changed type from integer to bigint" in reasons["c"]
    assert all("tidemark ingest resync" in r for r in reasons.values())
    assert_mirror_equals(pair, "d")  # other tables keep flowing

    pair.src_exec("insert into a values (4, 4, 'after')")  # still paused: kept raw
    catch_up(pair.src, pair.land, pair.source)
    for table in ("a", "b", "c"):
        resync(pair.src, pair.land, pair.source, table)
    assert paused(pair) == {}
    pair.src_exec("insert into a values (5, 5, 'flows')", "insert into c values (3, 3)")
    catch_up(pair.src, pair.land, pair.source)
    for table in ("a", "b", "c", "d"):
        assert_mirror_equals(pair, table)
    ops = [r[0] for r in changelog(pair.land, pair.source, "a", "_op")]
    # 1 snapshot row + c + (paused: c, u, c) + resync snapshot (4 rows) + c
    assert ops.count("c") == 4 and ops.count("u") == 1
