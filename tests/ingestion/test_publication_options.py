"""A publication changed on the source by someone else: `publish` narrowed, a row filter or a
column list put on a table. pgoutput then silently skips changes; Tidemark puts the publication
back and copies the tables whose changes it may have missed."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from contracts import load_contracts
from ingestion import catch_up, run
from ingestion.names import publication_name
from tests.ingestion.conftest import (
    Pair,
    assert_changelog_replays,
    assert_mirror_equals,
    table_rows,
    wait_until,
)
from tests.pgversions import session_major


def _history(p: Pair, change: str) -> list[tuple[str, str]]:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select table_name, detail from tidemark.schema_history where"
                            " source = %s and change = %s order by table_name",
                            (p.source, change)).fetchall()


def test_publish_narrowed_to_inserts_is_put_back_and_tables_copied_again(pair: Pair) -> None:
    # `alter publication ... set (publish = 'insert')`: deletes and updates were skipped for
    # good (the mirror kept deleted rows), and nothing said so.
    pub = publication_name(pair.source)
    pair.write_and_land("create table a (id int primary key, v text)", "create table b (id int)",
                        "alter table b replica identity full",
                        "insert into a select g, 'x' from generate_series(1, 5) g",
                        "insert into b select g from generate_series(1, 3) g")
    pair.write_and_land_twice(f"alter publication {pub} set (publish = 'insert')",
                              "delete from a where id = 1", "update a set v = 'y' where id = 2",
                              "delete from b where id = 1", "insert into a values (6, 'new')")
    pair.write_and_land("delete from a where id = 3", "truncate b", "insert into b values (9)")
    for table, key in (("a", ["id"]), ("b", None)):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, key)
    with psycopg.connect(pair.src) as conn:
        assert conn.execute("select pubinsert and pubupdate and pubdelete and pubtruncate"
                            " from pg_publication where pubname = %s", (pub,)).fetchone()[0]
    assert [t for t, _ in _history(pair, "publish_restored")] == ["a", "b"]
    assert "publish = 'insert'" in _history(pair, "publish_restored")[0][1]


@pytest.mark.skipif(session_major() < 15, reason="row filters and column lists: 15+")
def test_row_filter_or_column_list_is_taken_off_and_table_copied_again(pair: Pair) -> None:
    pub = publication_name(pair.source)
    pair.write_and_land("create table f (id int primary key, v text)",
                        "create table l (id int primary key, v text, w int)",
                        "insert into f select g, 'x' from generate_series(1, 5) g",
                        "insert into l select g, 'x', g from generate_series(1, 5) g")
    pair.write_and_land_twice(f"alter publication {pub} set table f where (id > 3), l (id, v)",
                              "delete from f where id = 1", "update f set v = 'y' where id = 2",
                              "insert into f values (0, 'low')",
                              "update l set w = 50, v = 'z' where id = 5",
                              "insert into l values (6, 'x', 6)")
    pair.write_and_land("update f set v = 'after' where id = 0", "update l set w = 70 where id = 1")
    assert_mirror_equals(pair, "f")
    assert_mirror_equals(pair, "l")
    assert_changelog_replays(pair, "f", ["id"])
    with psycopg.connect(pair.src) as conn:
        assert conn.execute("select count(*) from pg_publication_rel r join pg_publication p on"
                            " p.oid = r.prpubid where p.pubname = %s and (r.prqual is not null"
                            " or r.prattrs is not null)", (pub,)).fetchone()[0] == 0


@pytest.mark.skipif(session_major() < 13, reason="publish_via_partition_root: 13+")
def test_partition_root_option_turned_off_is_put_back_and_table_copied_again(
        pair: Pair) -> None:
    # `alter publication ... set (publish_via_partition_root = false)`: the partitions' changes
    # came under their own names, which stopped the source with a KeyError.
    pub = publication_name(pair.source)
    pair.write_and_land("create table p (id int primary key, v text) partition by range (id)",
                        "create table p1 partition of p for values from (0) to (100)",
                        "create table p2 partition of p for values from (100) to (200)",
                        "insert into p select g, 'x' from generate_series(1, 150, 10) g")
    pair.write_and_land_twice(f"alter publication {pub} set (publish_via_partition_root = false)",
                              "insert into p values (2, 'gap'), (102, 'gap')",
                              "update p set v = 'u' where id = 1", "delete from p where id = 101",
                              "truncate p2")
    pair.write_and_land("insert into p values (3, 'after'), (103, 'after')")
    assert_mirror_equals(pair, "p")
    assert_changelog_replays(pair, "p", ["id"])
    assert _history(pair, "publish_restored")[0][0] == "p"
    with psycopg.connect(pair.land) as conn:  # no landing table of a partition of its own
        assert conn.execute("select array_agg(table_name order by table_name) from"
                            " tidemark.replicated_tables where source = %s",
                            (pair.source,)).fetchone()[0] == ["p"]


@pytest.mark.skipif(session_major() < 13, reason="publish_via_partition_root: 13+")
def test_partition_root_option_turned_off_while_streaming(pair: Pair) -> None:
    # The stream meets the partitions' own changes before the next sync puts the option back.
    pub = publication_name(pair.source)
    pair.write_and_land("create table q (id int primary key, v text) partition by range (id)",
                        "create table q1 partition of q for values from (0) to (100)",
                        "insert into q select g, 'x' from generate_series(1, 90, 10) g")
    stop = threading.Event()
    runner = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "refresh_s": 3.0}, daemon=True)
    runner.start()
    try:
        pair.src_exec(f"alter publication {pub} set (publish_via_partition_root = false)",
                      "insert into q values (2, 'gap')", "update q set v = 'u' where id = 1",
                      "delete from q where id = 11")
        pair.src_exec("insert into q values (3, 'after')")
        assert wait_until(lambda: table_rows(pair.land, pair.source, "q")
                          == table_rows(pair.src, "public", "q"), 60)
    finally:
        stop.set()
        runner.join(60)
    assert_mirror_equals(pair, "q")
    assert_changelog_replays(pair, "q", ["id"])


@pytest.mark.skipif(session_major() < 15, reason="column lists: 15+")
def test_column_list_on_a_table_with_a_contract_is_copied_again(pair: Pair,
                                                                tmp_path: Path) -> None:
    # To a table with a contract the hidden column looks dropped: it paused, waiting for a
    # resync by hand, after the sync had put the column back.
    pub = publication_name(pair.source)
    (tmp_path / pair.source).mkdir()
    (tmp_path / pair.source / "m.yml").write_text(
        "version: 1\nfreshness: {warn_after: 15m, error_after: 1h}\ncompatibility: backward\n"
        "allowed_lateness: 1h\nprimary_key: [id]\ncolumns:\n"
        "  id: {type: integer}\n  v: {type: text}\n  w: {type: integer}\n")
    contracts = load_contracts(tmp_path)
    pair.src_exec("create table m (id int primary key, v text not null, w int not null)",
                  "insert into m select g, 'x', g from generate_series(1, 5) g")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec(f"alter publication {pub} set table m (id, v)",
                  "update m set w = 50, v = 'z' where id = 5", "insert into m values (6, 'x', 6)")
    for _ in range(3):
        catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("update m set w = 70 where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select paused_reason from tidemark.replicated_tables where"
                            " table_name = 'm'").fetchone()[0] is None
    assert_mirror_equals(pair, "m")
