"""Catalog changes that rewrite what a table's rows read as, with no row sent by logical
replication: an enum value renamed, a composite type's attributes added or dropped. The mirror
holds the rows' text form, so each such change must copy the table again."""

from __future__ import annotations

import psycopg
import pytest

from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals
from tests.pgversions import session_major


def _paused(p: Pair, table: str) -> str | None:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select paused_reason from tidemark.replicated_tables where"
                            " source = %s and table_name = %s", (p.source, table)).fetchone()[0]


def _history(p: Pair, table: str) -> list[str]:
    with psycopg.connect(p.land) as conn:
        return [r[0] for r in conn.execute(
            "select detail from tidemark.schema_history where source = %s and table_name = %s"
            " and change = 'type_form_changed' order by lsn", (p.source, table))]


def test_enum_value_renamed_is_copied_again(pair: Pair) -> None:
    # `alter type ... rename value` sends nothing: the mirror kept 'new' where the source reads
    # 'fresh', in a plain column, an array, a domain over the enum and a composite holding it.
    pair.write_and_land("create type st as enum ('new', 'paid', 'gone')",
                        "create domain st_d as st", "create type pair_t as (s st, n int)",
                        "create table o (id int primary key, s st, ss st[], d st_d, c pair_t)",
                        "create table other (id int primary key, v text)",
                        "insert into o select g, 'new', array['new', 'paid']::st[], 'new',"
                        " row('new', g)::pair_t from generate_series(1, 5) g",
                        "insert into other values (1, 'x')")
    pair.write_and_land_twice("alter type st rename value 'new' to 'fresh'",
                              "alter type st add value 'late'",
                              "insert into o values (6, 'late', '{fresh}', 'paid',"
                              " row('fresh', 6))")
    pair.write_and_land("update o set s = 'paid' where id = 1", "insert into other values (2, 'y')")
    assert _paused(pair, "o") is None
    assert_mirror_equals(pair, "o")
    assert_changelog_replays(pair, "o", ["id"])
    assert_mirror_equals(pair, "other")
    assert _history(pair, "o") == [
        "type st had values renamed ('new' to 'fresh') on the source: the text of its existing"
        " rows changed, and PostgreSQL sends no change for them (public.o)"]
    assert _history(pair, "other") == []


def test_enum_value_added_copies_nothing(pair: Pair) -> None:
    pair.write_and_land("create type st2 as enum ('a', 'b')",
                        "create table e (id int primary key, s st2)",
                        "insert into e values (1, 'a')")
    pair.write_and_land_twice("alter type st2 add value 'c' before 'a'",
                              "insert into e values (2, 'c')")
    assert_mirror_equals(pair, "e")
    assert _history(pair, "e") == []


def test_composite_attribute_added_or_dropped_is_copied_again(pair: Pair) -> None:
    # `alter type ... add/drop attribute` of a type a column uses: its text form changes from
    # (1,x) to (1,x,) in every existing row, and nothing is sent.
    pair.write_and_land("create type pt as (a int, b text)",
                        "create table c (id int primary key, p pt)",
                        "insert into c select g, row(g, 'x')::pt from generate_series(1, 4) g")
    pair.write_and_land_twice("alter type pt add attribute z int",
                              "insert into c values (5, row(5, 'y', 1))")
    assert_mirror_equals(pair, "c")
    pair.write_and_land_twice("alter type pt drop attribute b",
                              "alter type pt rename attribute a to aa",
                              "insert into c values (6, row(6, 2))")
    assert _paused(pair, "c") is None
    assert_mirror_equals(pair, "c")
    assert_changelog_replays(pair, "c", ["id"])
    assert len(_history(pair, "c")) == 2
    assert "type pt had attributes added or dropped" in _history(pair, "c")[0]


@pytest.mark.skipif(session_major() < 18, reason="stored generated columns land from 18 on")
def test_generated_column_given_a_new_expression_is_copied_again(pair: Pair) -> None:
    # PostgreSQL 17+ `alter column ... set expression` rewrites every row's value, sending none.
    pair.write_and_land("create table h (id int primary key, v int,"
                        " w int generated always as (v * 2) stored)",
                        "insert into h select x, x from generate_series(1, 5) x")
    pair.write_and_land_twice("alter table h alter column w set expression as (v * 3)",
                              "insert into h values (6, 6)")
    pair.write_and_land("alter table h alter column w drop expression",  # values kept: no copy
                        "update h set w = 0 where id = 1")
    assert _paused(pair, "h") is None
    assert_mirror_equals(pair, "h")
    assert_changelog_replays(pair, "h", ["id"])
    assert _history(pair, "h") == [
        "generated column 'w' had its expression changed from (v * 2) to (v * 3) on the source:"
        " the text of its existing rows changed, and PostgreSQL sends no change for them"
        " (public.h)"]


@pytest.mark.skipif(session_major() >= 18, reason="12 to 17 publish no generated column")
def test_generated_column_whose_expression_is_dropped_is_copied_again(pair: Pair) -> None:
    # `alter column ... drop expression`: the column, left out until then, arrives as an added
    # one; its existing rows landed NULL where the source keeps the computed values.
    pair.write_and_land("create table d (id int primary key, v int,"
                        " w int generated always as (v * 2) stored)",
                        "insert into d select x, x from generate_series(1, 5) x")
    pair.write_and_land_twice("alter table d alter column w drop expression",
                              "insert into d values (6, 6, 1)")
    assert _paused(pair, "d") is None
    assert_mirror_equals(pair, "d")
