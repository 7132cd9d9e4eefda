"""Text in the source's collations, ICU and nondeterministic ones included, through snapshot,
stream and resync.

A column's collation does not land: the mirror's column takes landing's default, and each
value lands as its bytes. The source runs Debian's PostgreSQL 15 (built with ICU; skipped where
it is not installed), in a database whose default collation is ICU ``tr-TR``; landing is the
session server (the embedded one has no ICU: it has none of the source's collations). Keys
equal under a case-insensitive collation but written differently (``abc`` → ``ABC``), keyless
rows (``REPLICA IDENTITY FULL``), a unique index as replica identity, a domain, an array, a
composite and a range over such text, a hash-partitioned table, Turkish ``i``/``I`` case rules.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from ingestion import catch_up
from ingestion.resync import resync_table
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals
from tests.pgversions import DEBIAN
from tests.support import create_databases, drop_databases, start_test_server

SETUP = (
    "create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    "create collation tr (provider = icu, locale = 'tr-TR')",
    "create domain cidom as text collate ci",
    "create type comp as (a text collate ci, b int)",
    "create type trr as range (subtype = text, collation = tr)",
    "create table k (id text collate ci primary key, v text collate ci, w text collate tr,"
    " big text, d cidom, arr text[] collate ci, c comp, r trr)",
    "alter table k alter big set storage external",
    "create table f (a text collate ci, b text collate tr, d cidom)",
    "alter table f replica identity full",
    "create table u (id int, c text collate ci not null)",
    "create unique index u_c on u (c)",
    "alter table u replica identity using index u_c",
    "create table d (id text primary key, v text)",
    "create table pp (id text collate ci primary key, v int) partition by hash (id)",
    "create table pp0 partition of pp for values with (modulus 2, remainder 0)",
    "create table pp1 partition of pp for values with (modulus 2, remainder 1)",
    "insert into k values ('abc', 'x', 'i', repeat('b', 30000), 'Ab', '{a,B}', row('Q', 1),"
    " '[a,z)'), ('İ', 'I', 'ı', null, 'ı', '{I}', row('i', 2), '[ı,i]'),"
    " ('Straße', 'a', 'İstanbul', '', null, null, null, null)",
    "insert into f values ('abc', 'i', 'x'), ('ABC', 'I', 'X'), ('abc', 'i', 'x')",
    "insert into u values (1, 'abc'), (2, 'Foo')",
    "insert into d values ('i', 'I'), ('I', 'i'), ('ı', 'İ')",
    "insert into pp values ('abc', 1), ('Foo', 2), ('bar', 3)",
)
STREAM = (
    "update k set id = 'ABC' where id = 'abc'",  # equal under ci, other bytes: the old key sent
    "update k set v = 'X' where id = 'abc'",
    "begin; delete from k where id = 'ABC'; insert into k values ('aBc', 'y', 'I'); commit",
    "update k set id = 'STRASSE' where id = 'straße'",
    "update k set id = 'i̇', d = 'AB' where id = 'İ'",
    "begin; update k set id = 'abc' where id = 'aBc'; update k set id = 'ABc' where id = 'abc';"
    " commit",
    "update f set a = 'Abc' where ctid = (select ctid from f where a = 'abc' limit 1)",
    "delete from f where ctid = (select ctid from f where b = 'I' limit 1)",
    "update u set c = 'ABC' where id = 1",
    "delete from u where c = 'foo'",
    "insert into u values (3, 'FOO')",
    "update d set id = upper(id) where id = 'i'",  # 'İ' under tr-TR
    "insert into d values ('x', lower('İI'))",
    "update pp set id = 'ABC' where id = 'abc'",
    "delete from pp where id = 'BAR'",
)
TABLES = {"k": ["id"], "f": None, "u": ["c"], "d": ["id"], "pp": ["id"]}


@pytest.fixture
def icu_pair(pg, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A source database on PostgreSQL 15 with ICU (default collation ``tr-TR``), landing on
    the session server."""
    if not (DEBIAN[15] / "postgres").exists():
        pytest.skip(f"needs Debian's PostgreSQL 15 server binaries in {DEBIAN[15]} (ICU)")
    server = start_test_server(tmp_path_factory.mktemp("pg15-icu"), major=15)
    try:
        with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
            conn.execute("create database icu_src locale_provider icu icu_locale 'tr-TR'"
                         " locale 'C.UTF-8' template template0")
        land = create_databases(pg, "land_collations")[0]
        pair = Pair("icu", server.admin_url("icu_src"), land)
        pair.register()
        yield pair
        drop_databases(pg, land)
    finally:
        server.stop()


def _check(pair: Pair) -> None:
    for table, key in TABLES.items():
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, key)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from information_schema.columns where"
                            " table_schema = 'icu' and collation_name is not null"
                            ).fetchone()[0] == 0


def test_text_in_icu_and_nondeterministic_collations_lands_as_its_bytes(icu_pair: Pair
                                                                       ) -> None:
    icu_pair.src_exec(*SETUP)
    catch_up(icu_pair.src, icu_pair.land, icu_pair.source)
    _check(icu_pair)
    icu_pair.write_and_land(*STREAM)
    _check(icu_pair)
    with psycopg.connect(icu_pair.land) as conn:  # the key's change landed as one, byte-wise
        assert conn.execute("select _op, id from cdc.icu__k where _op in ('b', 'u')"
                            " order by _commit_lsn, _seq limit 2").fetchall() \
            == [("b", "abc"), ("u", "ABC")]
    icu_pair.src_exec("update k set w = upper(w)", "update f set b = lower(b)")
    for table in TABLES:
        resync_table(icu_pair.src, icu_pair.land, icu_pair.source, table)
    _check(icu_pair)
    icu_pair.write_and_land("delete from k where id = 'ABc'", "insert into k values ('abc')")
    _check(icu_pair)
