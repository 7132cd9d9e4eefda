"""The type zoo (tests/ingestion/type_zoo.py) through snapshot and stream: seeded random rows
over ~55 built-in and user-defined types (ranges and multiranges with empty and infinite bounds,
bit strings, MAC and network addresses, money, text search, pg_lsn, timetz, geometric types
without an equality operator, OID and reg* types, arrays of them, enums and enum arrays,
domains over arrays, composites, char(n), NaN and -0 numbers, BC and infinite dates, local
times at DST changes written from other time zones, control characters, TOASTed text),
snapshot then INSERT/UPDATE/DELETE including key changes, into a keyed table and a keyless one
(REPLICA IDENTITY FULL: rows matched by their text form). Mirror compared to source by row
text forms, and the changelog's row count to the changes made.

``TIDEMARK_ZOO_SEEDS=1-200`` runs more seeds than CI's fixed one. Also here: a transaction
larger than ``logical_decoding_work_mem`` with rolled-back subtransactions, prepared
transactions, and keys whose equal values print differently (numeric 1.0/1.00, float -0/0);
values equal by ``=`` but written differently (jsonb scale, array bounds, interval units, range
bounds, timetz zones, citext case, a domain) in non-key, key and keyless columns.
"""

from __future__ import annotations

import os
import random

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up
from ingestion.names import changelog_table_name
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tests.ingestion.type_zoo import SETUP, ZOO, ZooType

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "Europe/Berlin"]
"""Source session time zones the writes run under (text forms compared in UTC)."""


def _create(conn: psycopg.Connection, types: list[ZooType]) -> None:
    cols = ", ".join(f"{t.name} {t.sql_type}" for t in types)
    conn.execute(f"create table zk (id bigint primary key, {cols})")
    conn.execute(f"create table zl (id bigint, {cols})")
    conn.execute("alter table zl replica identity full")


def _insert(conn: psycopg.Connection, r: random.Random, table: str, types: list[ZooType],
            rid: int) -> None:
    values = ", ".join(t.literal(r) for t in types)
    conn.execute(f"insert into {table} values ({rid}, {values})")


def _count(url: str, source: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier("cdc", changelog_table_name(source, table)))).fetchone()[0]


def _step(conn: psycopg.Connection, r: random.Random, types: list[ZooType],
          ids: dict[str, list[int]], expected: dict[str, int], next_id: list[int]) -> None:
    """One random change: an insert, a delete, a key change or an update of 1-3 columns."""
    table = r.choice(["zk", "zl"])
    live = ids[table]
    op = r.random()
    if op < 0.3 or not live:
        _insert(conn, r, table, types, next_id[0])
        live.append(next_id[0])
        next_id[0] += 1
        expected[table] += 1
        return
    rid = r.choice(live)
    where = f"ctid = (select ctid from {table} where id = {rid} limit 1)"
    if op < 0.45:
        conn.execute(f"delete from {table} where {where}")
        live.remove(rid)
        expected[table] += 1
    elif op < 0.55 and table == "zk":
        conn.execute(f"update zk set id = {next_id[0]} where id = {rid}")
        live[live.index(rid)] = next_id[0]
        next_id[0] += 1
        expected[table] += 2  # b + u
    else:
        picked = r.sample(types, k=min(len(types), r.randint(1, 3)))
        sets = ", ".join(f"{t.name} = {t.literal(r)}" for t in picked)
        conn.execute(f"update {table} set {sets} where {where}")
        expected[table] += 1 if table == "zk" else 2  # keyless: b + u


def run_zoo(pair: Pair, types: list[ZooType], seed: int, rows: int = 20, steps: int = 60
            ) -> None:
    """Snapshot ``rows`` random rows per table, then stream ``steps`` random changes, checking
    mirror and changelog after each phase."""
    r = random.Random(seed)
    expected = {"zk": 0, "zl": 0}
    ids = {"zk": list(range(rows)), "zl": list(range(rows))}
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(stmt)
        _create(conn, types)
        for table in ("zk", "zl"):
            for i in range(rows):
                conn.execute(f"set timezone = '{r.choice(ZONES)}'")
                _insert(conn, r, table, types, i)
                expected[table] += 1
    catch_up(pair.src, pair.land, pair.source)
    for table in ("zk", "zl"):
        assert_mirror_equals(pair, table)
    next_id = [rows]
    with psycopg.connect(pair.src, autocommit=True) as conn:
        done = 0
        while done < steps:
            # Transactions of 1 to 4 changes (a row changed twice in one, a key change then an
            # update), and a catch-up halfway.
            with conn.transaction():
                conn.execute(f"set local timezone = '{r.choice(ZONES)}'")
                for _ in range(r.randint(1, 4)):
                    _step(conn, r, types, ids, expected, next_id)
                    done += 1
            if done - 4 < steps // 2 <= done:
                catch_up(pair.src, pair.land, pair.source)
    catch_up(pair.src, pair.land, pair.source)
    for table in ("zk", "zl"):
        assert_mirror_equals(pair, table)
        assert _count(pair.land, pair.source, table) == expected[table], table


def _seeds() -> list[int]:
    spec = os.environ.get("TIDEMARK_ZOO_SEEDS", "42")
    first, _, last = spec.partition("-")
    return list(range(int(first), int(last or first) + 1))


@pytest.mark.parametrize("seed", _seeds())
def test_type_zoo_round_trips_through_snapshot_and_stream(pair: Pair, seed: int) -> None:
    run_zoo(pair, ZOO, seed, rows=30, steps=150)


def test_transaction_beyond_logical_decoding_work_mem_with_rolled_back_subtransactions(
        pair: Pair) -> None:
    # Tidemark asks for no streaming of in-progress transactions (proto_version 1): the source
    # spills a large one to disk and sends it at its commit, without the rolled-back parts.
    pair.src_exec("create table b (id int primary key, v text)", "create table kl (v text)",
                  "alter table kl replica identity full")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("alter system set logical_decoding_work_mem = '64kB'",
                  "select pg_reload_conf()")
    try:
        with psycopg.connect(pair.src) as conn:
            conn.execute("insert into b select g, repeat('x', 100)"
                         " from generate_series(1, 20000) g")
            for i in range(50):
                with conn.transaction() as savepoint:
                    conn.execute("update b set v = 'sp' || %s where id %% 50 = %s", (i, i))
                    conn.execute("insert into kl values ('a'), ('b')")
                    if i % 2:
                        raise psycopg.Rollback(savepoint)
            conn.execute("delete from b where id > 19000")
            conn.execute("delete from kl where ctid = (select min(ctid) from kl)")
        catch_up(pair.src, pair.land, pair.source)
    finally:
        pair.src_exec("alter system reset logical_decoding_work_mem", "select pg_reload_conf()")
    assert_mirror_equals(pair, "b")
    assert_mirror_equals(pair, "kl")
    assert _count(pair.land, pair.source, "kl") == 25 * 2 + 1


def test_prepared_transactions_land_at_commit_prepared(pair: Pair) -> None:
    with psycopg.connect(pair.src) as conn:
        if conn.execute("show max_prepared_transactions").fetchone()[0] == "0":
            pytest.skip("the source allows no prepared transaction")
    pair.write_and_land("create table p (id int primary key, v text)")
    pair.src_exec("begin; insert into p values (1, 'a'); prepare transaction 'zoo_tx1'",
                  "begin; insert into p values (2, 'b'); prepare transaction 'zoo_tx2'",
                  "insert into p values (3, 'c')")
    try:
        catch_up(pair.src, pair.land, pair.source)
        with psycopg.connect(pair.land) as conn:
            assert conn.execute(f"select array_agg(id) from {pair.source}.p").fetchone()[0] \
                == [3]
    finally:
        pair.src_exec("commit prepared 'zoo_tx1'", "rollback prepared 'zoo_tx2'")
    pair.write_and_land()
    assert_mirror_equals(pair, "p")


def test_keys_whose_equal_values_print_differently(pair: Pair) -> None:
    # numeric 1.0 = 1.00 and float8 -0 = 0: a key "change" between them is an update of one row.
    pair.write_and_land("create table n (k numeric primary key, v text)",
                        "create table f (k float8 primary key, v text)",
                        "insert into n values ('NaN', 'nan'), (1.0, 'one'), (2, 'two')",
                        "insert into f values ('-0', 'mz'), ('NaN', 'nan'), ('Infinity', 'inf')")
    with psycopg.connect(pair.src) as conn:
        conn.execute("update n set k = 1.00 where k = 1")
        conn.execute("update n set v = 'NAN' where k = 'NaN'")
        conn.execute("update n set k = 2.000, v = 'two2' where k = 2")
        conn.execute("update f set k = 0 where k = 0")
        conn.execute("update f set v = 'x' where k = 'NaN'")
        conn.execute("delete from f where k = 'Infinity'")
    with psycopg.connect(pair.src) as conn:
        conn.execute("update n set k = 1.0 where k = 1")
        conn.execute("update f set k = '-0' where k = 0")
        conn.execute("delete from n where k = 'NaN'")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "n")
    assert_mirror_equals(pair, "f")


EQUAL_PAIRS = [
    ("numeric", "1.0", "1.00"), ("float8", "0", "-0"), ("float4", "0", "-0"),
    ("jsonb", '{"a": 1.0}', '{"a": 1.00}'), ("int[]", "{1,2}", "[0:1]={1,2}"),
    ("interval", "1 day", "24 hours"), ("interval", "1 mon", "30 days"),
    ("numrange", "[1.0,2)", "[1.00,2.0)"), ("numeric[]", "{1.0}", "{1.00}"),
    ("timetz", "12:00+01", "11:00+00"), ("citext", "a", "A"), ("zoo_num", "1.0", "1.00"),
]
"""Values equal by their type's ``=`` but written differently (``citext``: ``a`` = ``A``;
``zoo_num``: a domain over numeric, which lands as text)."""


def _texts(url: str, schema: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        conn.execute("set timezone = 'UTC'")
        return sorted(r[0] for r in conn.execute(sql.SQL("select t::text from {} t").format(
            sql.Identifier(schema, table))))


def test_equal_values_written_differently_land_as_written(pair: Pair) -> None:
    # A change to an equal value written differently is a change: the mirror shows the source's
    # text (non-key column, key column, keyless copies of equal rows), through the snapshot, the
    # stream (one transaction back and forth too) and a resync; the changelog replays to it.
    from ingestion.resync import resync_table
    from tests.ingestion.conftest import assert_changelog_replays

    pair.src_exec("create extension if not exists citext", "create domain zoo_num as numeric")
    tables = []
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for i, (typ, a, b) in enumerate(EQUAL_PAIRS):
            conn.execute(f"create table v{i} (id int primary key, v {typ})")
            conn.execute(f"create table k{i} (k {typ} primary key, v text)")
            conn.execute(f"create table b{i} (v {typ}, w int)")
            conn.execute(f"alter table b{i} replica identity full")
            conn.execute(f"insert into v{i} values (1, %s), (2, %s)", (a, b))
            conn.execute(f"insert into k{i} values (%s, 'x')", (a,))
            conn.execute(f"insert into b{i} values (%s, 1), (%s, 1)", (a, b))
            tables += [(f"v{i}", ["id"]), (f"k{i}", ["k"]), (f"b{i}", None)]

    def check(when: str) -> None:
        for table, key in tables:
            assert _texts(pair.src, "public", table) == _texts(pair.land, pair.source, table), \
                f"{when}: {table}"
            assert_changelog_replays(pair, table, key)

    catch_up(pair.src, pair.land, pair.source)
    check("snapshot")
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for i, (typ, a, b) in enumerate(EQUAL_PAIRS):
            conn.execute(f"update v{i} set v = %s where id = 1", (b,))
            conn.execute(f"update v{i} set v = %s where id = 2", (a,))
            conn.execute(f"update k{i} set k = %s", (b,))
            with conn.transaction():  # back, another column, forth
                conn.execute(f"update k{i} set k = %s", (a,))
                conn.execute(f"update k{i} set v = 'y'")
                conn.execute(f"update k{i} set k = %s", (b,))
            # one of two equal keyless rows: the one written as b (the later one)
            conn.execute(f"delete from b{i} where ctid = (select ctid from b{i}"
                         f" where v::text = %s::{typ}::text)", (b,))
    catch_up(pair.src, pair.land, pair.source)
    check("stream")
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for i, (typ, a, b) in enumerate(EQUAL_PAIRS):
            conn.execute(f"insert into b{i} values (%s, 1)", (b,))
            conn.execute(f"update b{i} set v = %s where ctid = (select ctid from b{i}"
                         f" where v::text = %s::{typ}::text)", (b, a))
    catch_up(pair.src, pair.land, pair.source)
    check("keyless update")
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for i, (_typ, a, _b) in enumerate(EQUAL_PAIRS):
            conn.execute(f"insert into b{i} values (%s, 2)", (a,))
    resync_table(pair.src, pair.land, pair.source, "k0")
    resync_table(pair.src, pair.land, pair.source, "b0")
    catch_up(pair.src, pair.land, pair.source)
    check("resync")
