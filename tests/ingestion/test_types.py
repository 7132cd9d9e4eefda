"""Every type the demo uses, plus arrays, json/jsonb, numeric, timestamptz, bytea, NULLs and large
TOASTed text, round-trip exactly through snapshot and stream (row text forms compared)."""

from __future__ import annotations

import psycopg
import pytest

from ingestion import catch_up
from ingestion.catalog import REG_ARRAY_OIDS, REG_TYPE_OIDS
from ingestion.names import slot_name
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, drop_slot
from tests.support import create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer

TYPES_TABLE = """
create table typed (
    id bigint primary key,
    i2 smallint, i4 integer, i8 bigint, n numeric, n122 numeric(12, 2), f4 real,
    f8 double precision, b boolean, t text, vc varchar(20), ch char(3), d date, ts timestamp,
    tstz timestamptz, tm time, iv interval, u uuid, j json, jb jsonb, by bytea,
    ta text[], ia integer[], na numeric[], inet_ inet, big text, mood_ text
)
"""

INSERT = """
insert into typed values
 (1, -32768, 2147483647, -9223372036854775808, 123456789012345678901234567890.123456789,
  -0.01, 1.5e-7, 'NaN', true, E'tab\\there\\nnewline \\\\ back', 'varchar ü', 'ab',
  '2024-02-29', '2024-01-01 00:00:00.000001', '2024-06-30 23:59:59.999999+02', '13:14:15',
  '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}], "s": "x\\ty"}', '{"k": "ü", "n": 1.50}', '\\x00ff5c0a0d09',
  '{"a,b","c\\"d",NULL,"e\\\\f"}', '{1,NULL,-3}', '{1.10,NaN,-Infinity}', '10.0.0.1/8',
  repeat('long-toasted-text-', 20000), 'happy'),
 (2, null, null, null, null, null, 'Infinity', '-Infinity', null, '', null, null, 'infinity',
  '-infinity', null, null, null, null, 'null', '[]', '\\x', '{}', '{}', '{}', null, null, null)
"""


def test_types_round_trip_snapshot_and_stream(pair: Pair) -> None:
    pair.src_exec(TYPES_TABLE, "alter table typed replica identity full", INSERT)
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "typed")
    # The same rows again, this time through the stream (inserts, then updates and a delete).
    pair.src_exec("delete from typed",
                  INSERT,
                  "update typed set n = n * 2, ta = ta || '{x}'::text[], by = by || '\\x01'",
                  "insert into typed (id, big) values (3, repeat('z', 100000))",
                  "delete from typed where id = 2")
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.changes >= 6
    assert_mirror_equals(pair, "typed")


def test_unchanged_toast_is_carried_forward(pair: Pair) -> None:
    # Default replica identity: an update that leaves a TOASTed column alone does not send it.
    pair.src_exec("create table docs (id int primary key, body text, note text)",
                  "alter table docs alter column body set storage external",
                  "insert into docs values (1, repeat('abcdefghij', 50000), 'a'),"
                  " (2, repeat('0123456789', 50000), 'b')")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.src, autocommit=True) as conn, conn.transaction():
        # Two updates of the same row in one transaction, and one of a row landed earlier.
        conn.execute("update docs set note = 'x' where id = 1")
        conn.execute("update docs set note = 'y' where id = 1")
        conn.execute("insert into docs values (3, repeat('q', 300000), 'c')")
        conn.execute("update docs set note = 'z' where id = 3")
    pair.src_exec("update docs set note = 'w' where id = 2")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "docs")
    rows = changelog(pair.land, pair.source, "docs", "id, _op, length(body)")
    assert all(length is not None and length > 100_000 for _, op, length in rows if op == "u")


def test_object_identifier_types_keep_the_source_names(pair: Pair) -> None:
    # regclass & co. print and read the *source's* catalog: read back in landing, a name only
    # the source has failed the stream's COPY, and the binary snapshot landed the bare OID
    # (another object's, or none) without a word. They land as text, exact.
    pair.src_exec("create schema only_src", "create table only_src.tab (x int)",
                  "create table rc (id int primary key, r regclass, p regproc, t regtype,"
                  " n regnamespace, ra regclass[])",
                  "insert into rc values (1, 'only_src.tab', 'now', 'integer[]', 'only_src',"
                  " array['only_src.tab', 'pg_class']::regclass[])")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "rc")
    pair.src_exec("insert into rc values (2, 'only_src.tab', 'pg_backend_pid', 'text', 'public',"
                  " '{}')", "update rc set r = 'rc' where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "rc")
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f"select r, ra from {pair.source}.rc where id = 1").fetchone() \
            == ("rc", ["only_src.tab", "pg_class"])


def test_object_identifier_type_oids(pair: Pair) -> None:
    # Every reg* type of the server (and its array) is one ingestion lands as text.
    with psycopg.connect(pair.src) as conn:
        rows = conn.execute("select oid::int, typcategory = 'A' from pg_type where typname ~"
                            " '^_?reg' and typnamespace = 'pg_catalog'::regnamespace"
                            ).fetchall()
    assert {oid for oid, _ in rows} == set(REG_TYPE_OIDS)
    assert {oid for oid, array in rows if array} == set(REG_ARRAY_OIDS)


def test_xml_from_a_libxml_source_lands_as_its_text(pg: EmbeddedServer,
                                                   tmp_path_factory: pytest.TempPathFactory
                                                   ) -> None:
    # A source built with libxml (Debian's 15 here) into a landing without it (the embedded
    # server's): every xml value failed to load ("unsupported XML feature") and stopped the
    # whole source, every other table with it. xml and xml[] land as text, exact.
    server = start_test_server(tmp_path_factory.mktemp("src-xml"), major=15)
    try:
        src = create_database(server, "src_xml")
        with psycopg.connect(src) as conn:
            try:
                conn.execute("select xmlparse(document '<a/>')")
            except psycopg.errors.FeatureNotSupported:
                pytest.skip("this PostgreSQL 15 is built without libxml")
        p = Pair("xmlsrc", src, create_database(pg, "land_xml"))
        try:
            p.src_exec("create table docs (id int primary key, body xml, parts xml[], n int)",
                       "create table plain (id int primary key, v text)",
                       "insert into docs values (1, xmlparse(document '<a x=\"1\"><b>é</b></a>'),"
                       " array[xmlparse(content 'one<c/>'), null], 1), (2, null, null, 2)",
                       "insert into plain values (1, 'flows')")
            catch_up(p.src, p.land, p.source)
            p.src_exec("insert into docs values (3, xmlparse(content 'text <d/> &amp; more'),"
                       " '{}', 3)", "update docs set body = '<z/>', n = 10 where id = 1",
                       "insert into plain values (2, 'still flows')")
            catch_up(p.src, p.land, p.source)
            assert_mirror_equals(p, "docs")
            assert_mirror_equals(p, "plain")
            with psycopg.connect(p.land) as conn:
                assert conn.execute("select body, parts from xmlsrc.docs where id = 3"
                                    ).fetchone() == ("text <d/> &amp; more", [])
        finally:
            drop_slot(p.src, slot_name(p.source))
    finally:
        server.stop()
