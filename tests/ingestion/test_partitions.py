"""A partitioned source table lands as the one table the application sees (PostgreSQL 13+).

The publication lists the root ``with (publish_via_partition_root = true)``: the snapshot
copies the root, every partition's changes arrive under the root's name, and a partition
created later needs nothing. PostgreSQL sends no change for ATTACH/DETACH of a partition with
rows, nor for a TRUNCATE of one partition: landing notices the partitions changed and copies
the table again by itself (ingestion/partitions.py). The versions test runs the same on 12
(partitions land one by one there) to 18: tests/ingestion/test_versions.py.
"""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from ingestion import catch_up, run
from ingestion.publication import Selection, selected_tables, sync_publication
from tests.ingestion.conftest import (
    Pair,
    Writer,
    assert_changelog_replays,
    assert_mirror_equals,
        wait_until,
)

ORDERS = (
    "create table orders (id int, m int, amount numeric, note text, primary key (id, m))"
    " partition by range (m)",
    "create table orders_1 partition of orders for values from (1) to (2)",
    # sub-partitioned: orders_2 is itself partitioned by hash of the id
    "create table orders_2 partition of orders for values from (2) to (3) partition by hash (id)",
    "create table orders_2_a partition of orders_2 for values with (modulus 2, remainder 0)",
    "create table orders_2_b partition of orders_2 for values with (modulus 2, remainder 1)",
    "create table orders_default partition of orders default",
    # keyless, published as a whole: REPLICA IDENTITY FULL on the root and each partition
    "create table events (kind text, v int) partition by list (kind)",
    "create table events_a partition of events for values in ('a')",
    "create table events_b partition of events for values in ('b')",
    "alter table events replica identity full",
    "alter table events_a replica identity full",
    "alter table events_b replica identity full",
    "insert into orders select i, 1 + i % 4, i * 1.5, 'n' || i from generate_series(1, 200) i",
    "insert into events select case when i % 2 = 0 then 'a' else 'b' end, i % 3"
    " from generate_series(1, 60) i",
)


def _landed(p: Pair) -> list[str]:
    with psycopg.connect(p.land) as conn:
        return sorted(r[0] for r in conn.execute(
            "select table_name from tidemark.replicated_tables where source = %s", (p.source,)))


def test_partitioned_table_lands_as_its_root(pair: Pair) -> None:
    pair.src_exec(*ORDERS)
    catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["events", "orders"]
    with psycopg.connect(pair.src) as conn:
        assert conn.execute("select pubviaroot from pg_publication").fetchone()[0]
        published = conn.execute("select tablename from pg_publication_tables").fetchall()
    assert sorted(r[0] for r in published) == ["events", "orders"]
    assert_mirror_equals(pair, "orders")
    assert_mirror_equals(pair, "events")
    pair.src_exec(
        "update orders set m = 2 where id between 1 and 20 and m = 1",  # to another partition
        "update orders set m = 7, note = 'moved' where id between 21 and 30",  # to default
        # a key change, maybe to the other hash partition
        "update orders set id = id + 1000 where id between 40 and 45 and m = 2",
        "update orders set amount = -1 where id between 50 and 60",  # in place
        "delete from orders where id between 61 and 70",
        "insert into orders values (5000, 2, 1, 'new'), (5001, 99, 2, 'default')",
        "update events set kind = 'a', v = 9 where kind = 'b' and v = 1",
        "delete from events where ctid = (select min(ctid) from events_a where v = 0)",
        "create table orders_3 partition of orders for values from (10) to (20)",  # new: as is
        "insert into orders values (6000, 10, 3, 'later partition')")
    catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["events", "orders"]
    for table, key in (("orders", ["id", "m"]), ("events", None)):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, key)
    with psycopg.connect(pair.land) as conn:
        moved = conn.execute(
            f'select _op, count(*) from cdc."{pair.source}__orders" where id between 1 and 20'
            f" and _op in ('c', 'd', 'u') group by 1 order by 1").fetchall()
    # a row moved across partitions: a delete and an insert of the same key, in one transaction
    assert moved == [("c", 5), ("d", 5)]
    pair.src_exec("truncate orders")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "orders")


def _orders_writer(p: Pair) -> Writer:
    def step(conn: psycopg.Connection, i: int) -> None:
        conn.execute("insert into orders values (%s, %s, %s, 'w')", (10_000 + i, 1 + i % 2, i))
        conn.execute("update orders set m = 1 + (m %% 2), amount = amount + 1 where id = %s",
                     (10_000 + i // 2,))
        conn.execute("select pg_sleep(0.01)")
    return Writer(p.src, step)


def test_partitions_created_attached_detached_while_writes_go_on(pair: Pair,
                                                                caplog) -> None:
    pair.src_exec(*ORDERS[:6], ORDERS[-2])
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "refresh_s": 0.5})
    thread.start()
    try:
        with _orders_writer(pair) as writer:
            assert wait_until(lambda: "orders" in _landed_safe(pair))
            # a new partition, created and written while ingestion streams: nothing to do
            pair.src_exec("create table orders_3 partition of orders for values from (10) to (11)",
                          "insert into orders select i, 10, i, 'p3' from generate_series(1, 50) i")
            # a table with rows attached: PostgreSQL sends nothing for its rows
            pair.src_exec(
                "create table orders_4 (like orders)",
                "insert into orders_4 select i, 11, i, 'p4' from generate_series(1, 30) i",
                "alter table orders attach partition orders_4 for values from (11) to (12)")
            pair.src_exec("alter table orders detach partition orders_1")
            pair.src_exec("insert into orders_1 values (-1, 1, 0, 'after the detach')")
            threading.Event().wait(2)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert writer.errors == [] and writer.done > 20
    catch_up(pair.src, pair.land, pair.source)
    # the detached partition is a table of its own now; the rows the attach and the detach
    # moved (no change in the stream) are in `orders` by its automatic copy
    assert "orders_1" in _landed(pair)
    assert_mirror_equals(pair, "orders_1")
    assert_mirror_equals(pair, "orders")
    assert_changelog_replays(pair, "orders", ["id", "m"])
    with psycopg.connect(pair.land) as conn:
        kinds = [r[0] for r in conn.execute(
            "select change from tidemark.schema_history where table_name = 'orders'")]
    assert "partitions_moved_rows" in kinds


def _landed_safe(p: Pair) -> list[str]:
    try:
        return _landed(p)
    except psycopg.errors.UndefinedTable:
        return []


def _two_partitions_landed(p: Pair) -> None:
    """``orders`` in two range partitions (m = 1, 2) of 40 rows, landed."""
    p.src_exec("create table orders (id int, m int, amount numeric, note text,"
               " primary key (id, m)) partition by range (m)",
               "create table orders_1 partition of orders for values from (1) to (2)",
               "create table orders_2 partition of orders for values from (2) to (3)",
               "insert into orders select i, 1 + i % 2, i, 'x' from generate_series(1, 40) i")
    catch_up(p.src, p.land, p.source)


@pytest.mark.parametrize("ddl", ["truncate orders_1", "drop table orders_1",
                                 "alter table orders detach partition orders_1",
                                 "create table orders_9 (like orders);"
                                 " insert into orders_9 values (9000, 9, 9, 'attached');"
                                 " alter table orders attach partition orders_9"
                                 " for values from (9) to (10)"])
def test_partition_ddl_without_a_change_in_the_stream_copies_the_table_again(
        pair: Pair, ddl: str) -> None:
    # pgoutput sends nothing for these (a partition's TRUNCATE only when the partition itself
    # is published): landing notices the partitions changed and copies `orders` again
    _two_partitions_landed(pair)
    pair.src_exec("create table orders_3 partition of orders for values from (3) to (4)")
    catch_up(pair.src, pair.land, pair.source)  # a new empty partition: nothing copied
    pair.src_exec(ddl, "insert into orders values (7000, 2, 1, 'after')")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "orders")
    with psycopg.connect(pair.land) as conn:
        kinds = [r[0] for r in conn.execute(
            "select change from tidemark.schema_history where table_name = 'orders'")]
    assert kinds.count("partitions_moved_rows") == 1, kinds  # once, not for orders_3


def test_partition_mirrors_of_an_older_landing_give_way_to_the_root(pair: Pair,
                                                                    caplog) -> None:
    # An older Tidemark published the partitions one by one; here: two tables land, then
    # become partitions of `orders`. The next sync publishes the root, drops the partitions
    # and says what became of their landing tables.
    pair.src_exec("create table orders_1 (id int, m int, amount numeric, note text,"
                  " primary key (id, m))", "create table orders_2 (like orders_1 including all)",
                  "insert into orders_1 select i, 1, i, 'a' from generate_series(1, 20) i",
                  "insert into orders_2 select i, 2, i, 'b' from generate_series(1, 30) i")
    catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["orders_1", "orders_2"]
    pair.src_exec("create table orders (id int, m int, amount numeric, note text,"
                  " primary key (id, m)) partition by range (m)",
                  "alter table orders attach partition orders_1 for values from (1) to (2)",
                  "alter table orders attach partition orders_2 for values from (2) to (3)",
                  "insert into orders values (100, 1, 1, 'new')")
    with caplog.at_level(logging.WARNING, logger="tidemark.ingestion"):
        catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["orders", "orders_1", "orders_2"]
    assert_mirror_equals(pair, "orders")
    messages = [r.getMessage() for r in caplog.records]
    assert any("partition public.orders_1 now lands within its partitioned table "
               "public.orders" in m and f'drop table "{pair.source}"."orders_1"' in m
               for m in messages), messages


def test_selection_lists_roots_and_says_why_a_partition_is_left_out(pair: Pair) -> None:
    pair.src_exec(*ORDERS[:6], "create schema archive",
                  "create table archive.old (id int, m int, primary key (id, m))"
                  " partition by range (m)",
                  "create table public.old_1 partition of archive.old for values from (1) to (2)",
                  "create table bad (id int, m int) partition by range (m)",
                  "create table \"bad 1\" partition of bad for values from (1) to (2)",
                  "alter table bad replica identity full")
    with psycopg.connect(pair.src) as conn:
        tables, _ = selected_tables(conn, Selection.of())
        named, missing = selected_tables(conn, Selection.of(tables=["orders_1", "orders"]))
        alone, _ = selected_tables(conn, Selection.of(tables=["orders_1"]))
    by_name = {t.qualified: t for t in tables}
    assert sorted(by_name) == ["public.bad", "public.old_1", "public.orders"]
    assert by_name["public.orders"].publishable
    assert "is a partition of archive.old, which is not selected" in \
        by_name["public.old_1"].advice()
    assert not by_name["public.bad"].publishable
    advice = by_name["public.bad"].advice()
    assert "partition public.bad 1 has no primary key or replica identity" in advice
    assert 'alter table "public"."bad 1" replica identity full;' in advice
    assert [(t.qualified, t.publishable) for t in named] == [("public.orders", True)]
    assert missing == []
    assert [(t.qualified, t.publishable) for t in alone] == [("public.orders_1", False)]
    assert "select public.orders (or its schema) instead" in alone[0].advice()
    report = sync_publication(pair.src, "tidemark_" + pair.source, Selection.of())
    assert report.published == ["public.orders"]


@pytest.mark.parametrize("ident", ["full"])
def test_keyless_partitioned_table_writes_keep_working(pair: Pair, ident: str) -> None:
    # the root is published whole: every partition needs an identity, or the application's
    # UPDATE fails; a partition without one leaves the table out (advice), never published
    pair.src_exec("create table kl (k text, v int) partition by list (k)",
                  "create table kl_a partition of kl for values in ('a')",
                  f"alter table kl replica identity {ident}",
                  "insert into kl values ('a', 1)")
    report = sync_publication(pair.src, "tidemark_" + pair.source, Selection.of())
    assert report.published == []
    pair.src_exec("update kl set v = 2")
    pair.src_exec(f"alter table kl_a replica identity {ident}")
    report = sync_publication(pair.src, "tidemark_" + pair.source, Selection.of())
    assert report.published == ["public.kl"]
    pair.src_exec("update kl set v = 3")


def test_contract_scaffolding_names_the_root(pair: Pair) -> None:
    from ingestion.shapes import table_shapes

    pair.src_exec(*ORDERS)
    with psycopg.connect(pair.src) as conn:
        shapes, skipped = table_shapes(conn, Selection.of())
    assert [(s.name, s.key) for s in shapes] == [("events", ()),
                                                ("orders", ("id", "m"))]
    assert skipped == []


def test_a_landing_of_partition_mirrors_switches_to_the_root(pair: Pair, caplog,
                                                             monkeypatch) -> None:
    # Tidemark before round 37 (emulated: no partition_root capability) published the
    # partitions one by one, without publish_via_partition_root, and landed them; writes go on
    # while the upgraded ingestion switches the publication over to the root.
    from ingestion.versions import SourceCapabilities

    pair.src_exec(*ORDERS[:6], ORDERS[-2])
    monkeypatch.setattr(SourceCapabilities, "partition_root", property(lambda self: False))
    catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["orders_1", "orders_2_a", "orders_2_b", "orders_default"]
    with psycopg.connect(pair.src) as conn:
        assert not conn.execute("select pubviaroot from pg_publication").fetchone()[0]
    monkeypatch.undo()
    pair.src_exec("update orders set m = 2 where m = 1 and id < 50",
                  "insert into orders values (9001, 1, 1, 'before the upgrade')")
    with _orders_writer(pair) as writer, \
            caplog.at_level(logging.WARNING, logger="tidemark.ingestion"):
        catch_up(pair.src, pair.land, pair.source)
    assert writer.errors == []
    catch_up(pair.src, pair.land, pair.source)
    assert "orders" in _landed(pair)
    assert_mirror_equals(pair, "orders")
    assert_changelog_replays(pair, "orders", ["id", "m"])
    with psycopg.connect(pair.src) as conn:
        assert conn.execute("select pubviaroot from pg_publication").fetchone()[0]
        assert [r[0] for r in conn.execute("select tablename from pg_publication_tables")
                ] == ["orders"]
    said = " ".join(r.getMessage() for r in caplog.records)
    for part in ("orders_1", "orders_2_a", "orders_2_b", "orders_default"):
        assert f"partition public.{part} now lands within its partitioned table" in said


def test_a_partitioned_table_created_later_lands_whole(pair: Pair) -> None:
    pair.src_exec("create table plain (id int primary key)", "insert into plain values (1)")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec(*ORDERS)
    pair.src_exec("update orders set m = 2 where m = 1 and id < 100")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("update orders set m = 1 where m = 2 and id < 50",
                  "delete from events where kind = 'a'")
    catch_up(pair.src, pair.land, pair.source)
    assert _landed(pair) == ["events", "orders", "plain"]
    for table, key in (("orders", ["id", "m"]), ("events", None)):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, key)


def test_a_partitioned_table_snapshot_has_a_row_estimate(pair: Pair) -> None:
    """The root of a partitioned table has no statistics of its own (reltuples -1, or 0 before
    PostgreSQL 14): the snapshot's estimate, which `ingest status` and `tidemark up` show as
    the progress total, is the sum of its leaf partitions'. Autovacuum analyzes the leaves,
    never the root (a manual ANALYZE of the root gives it statistics)."""
    pair.src_exec(*ORDERS, "analyze orders_1, orders_2_a, orders_2_b, orders_default,"
                  " events_a, events_b")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land) as conn:
        estimates = dict(conn.execute(
            "select table_name, rows_estimate from tidemark.snapshot_progress where source = %s",
            (pair.source,)).fetchall())
    assert estimates == {"orders": 200, "events": 60}


def test_a_column_added_with_a_constant_default_to_a_partitioned_table_is_followed(
        pair: Pair) -> None:
    """`alter table orders add column note2 text default 'n/a'` on a partitioned table: its
    partitions keep the value for their existing rows (`attmissingval`, no rewrite), the root has
    none. Landing follows it like on a plain table — it used to read the root's missing value,
    find none, take the table for rewritten and copy it all again (seen: 10 M rows of pgbench's
    partitioned pgbench_accounts paused 2 min 20 s for a resync)."""
    pair.src_exec(*ORDERS)
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("alter table orders add column note2 text default 'n/a'",
                  "alter table orders add column flag int not null default 7",
                  "insert into orders values (1000, 1, 1, 'x', 'y', 8)",
                  "update orders set amount = 0 where id = 3")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land) as conn:
        actions = conn.execute(
            "select change, action from tidemark.schema_history where source = %s and"
            " table_name = 'orders' and change <> 'create_table' order by id",
            (pair.source,)).fetchall()
    assert [a for _, a in actions] == ["applied", "applied"], actions
    assert_mirror_equals(pair, "orders")
    assert_changelog_replays(pair, "orders", ["id", "m"])


@pytest.mark.parametrize(("ddl", "copies"), [
    # created empty, filled by streamed inserts before the check: the rows are in the stream
    (("create table orders_3 partition of orders for values from (3) to (4)",
      "insert into orders select i, 3, i, 'p3' from generate_series(1000, 1040) i"), 0),
    # a table created with rows, attached in a transaction of its own: ATTACH sends nothing
    (("create table orders_3 (like orders)",
      "insert into orders_3 select i, 3, i, 'p3' from generate_series(1000, 1040) i",
      "alter table orders attach partition orders_3 for values from (3) to (4)"), 1),
    # created as a partition and filled by the same transaction: copied (not told apart)
    (("begin; create table orders_3 partition of orders for values from (3) to (4);"
      " insert into orders select i, 3, i, 'p3' from generate_series(1000, 1040) i; commit",), 1),
    # detached, written, attached again between two checks (same OID, same file): its rows
    # written meanwhile never streamed
    (("alter table orders detach partition orders_2",
      "insert into orders_2 values (5000, 2, 5, 'while detached')",
      "alter table orders attach partition orders_2 for values from (2) to (3)"), 1),
])
def test_a_new_partition_is_copied_only_when_its_rows_did_not_stream(
        pair: Pair, ddl: tuple[str, ...], copies: int) -> None:
    # round 38 (p38): a partition created empty and filled by the stream before the 30 s check
    # was copied again; a partition detached and attached again was not (its rows were lost)
    _two_partitions_landed(pair)
    pair.src_exec(*ddl)
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "orders")
    with psycopg.connect(pair.land) as conn:
        kinds = [r[0] for r in conn.execute(
            "select change from tidemark.schema_history where table_name = 'orders'")]
    assert kinds.count("partitions_moved_rows") == copies, kinds
