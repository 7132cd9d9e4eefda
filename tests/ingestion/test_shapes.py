"""`contracts init` scaffolding: contracts made from a real source catalog load with the contract
loader, and ingestion accepts them (every row lands, none is dead-lettered)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from contracts import load_contracts
from contracts.scaffold import write_contracts
from ingestion import catch_up
from ingestion.names import publication_name
from ingestion.publication import Selection
from ingestion.shapes import table_shapes
from tests.ingestion.conftest import Pair, assert_mirror_equals

SOURCE_DDL = """
create schema sales;
create table public.customers (id bigint primary key, name text not null, email varchar(200),
    born date, vip boolean, score real, rating double precision, tags text[],
    created_at timestamptz not null default now(), seen timestamp, doc json, extra jsonb,
    token uuid, amount numeric(12, 2), ratio numeric, nick char(3), span interval,
    kind "char");
create table sales.orders (order_id int, line smallint, qty int not null,
    primary key (order_id, line));
create table public.keyless (x int);
alter table public.keyless replica identity full;
create table public."MixedCase" (id int primary key);
insert into public.customers select g, 'n' || g, case when g % 3 = 0 then null else
    'e' || g || '@x' end, date '2000-01-01' + g, g % 2 = 0, g / 3.0, g / 7.0,
    array['a', 'b' || g], now(), now()::timestamp, '{"a": [1, 2]}', '{"b": null}',
    gen_random_uuid(), g * 1.25, g / 3.0, 'abc', interval '1 day' * g, 'k'
    from generate_series(1, 200) g;
insert into sales.orders select g, 1, g from generate_series(1, 50) g;
"""


def test_scaffolded_contracts_load_and_ingestion_accepts_them(pair: Pair, tmp_path: Path) -> None:
    pair.src_exec(SOURCE_DDL)
    with psycopg.connect(pair.src) as conn:
        shapes, skipped = table_shapes(conn, Selection.of(["public", "sales"]))
    root = tmp_path / "contracts"
    written, left_out = write_contracts(root, pair.source, shapes)
    assert sorted(p.name for p in written) == ["customers.yml", "keyless.yml",
                                               "sales__orders.yml"]
    reasons = dict(left_out)
    assert list(reasons) == ["public.MixedCase"] and "contract file" in reasons["public.MixedCase"]
    assert skipped == []
    contracts = load_contracts(root)
    customers = contracts.table(pair.source, "customers")
    assert customers.primary_key == ["id"]
    assert customers.columns["email"].nullable and not customers.columns["id"].nullable
    assert customers.columns["amount"].type == "numeric(12,2)"
    assert "timestamp without time zone" in customers.columns["seen"].description
    assert contracts.table(pair.source, "sales__orders").primary_key == ["order_id", "line"]
    assert contracts.table(pair.source, "keyless").keyless
    again, kept = write_contracts(root, pair.source, shapes)
    assert again == [] and all("exists" in why for _, why in kept if "customers" in _)

    catch_up(pair.src, pair.land, pair.source, contracts=contracts, schemas=["public", "sales"])
    pair.src_exec("insert into public.customers (id, name) values (1000, 'late')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts, schemas=["public", "sales"])
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.dead_letters").fetchone()[0] == 0
    assert_mirror_equals(pair, "customers")


def test_scaffolded_contracts_accept_the_special_values_the_table_holds(pair: Pair,
                                                                       tmp_path: Path) -> None:
    # NaN and infinite numbers, infinite and BC dates, NULL array elements are values of their
    # PostgreSQL types that the contract types refuse. Before, `contracts init` declared such
    # columns numeric, date, timestamptz, text[]: the next change of every row holding one went
    # to the dead letters (the mirror kept the old row). Now those columns are declared text.
    pair.src_exec(
        "create table public.odd (id int primary key, n numeric, n2 numeric(6,2), r real,"
        " d date, ts timestamptz, tags text[], nums numeric[], ok_d date, ok_n numeric,"
        " ok_tags text[])",
        "insert into public.odd values"
        " (1, 'NaN', 'NaN', 'Infinity', 'infinity', '-infinity', '{a,NULL}', '{1,NaN}',"
        "  '2026-01-01', 1.5, '{a}'),"
        " (2, 1, 1, 1, '0044-03-15 BC', '0001-01-01 00:00:00+00 BC', '{b}', '{2}',"
        "  '2026-01-02', 2, '{b}'),"
        " (3, 2, 2, 2, '2026-01-01', '2026-01-01 10:00+05:30', '{}', null, null, null, null)")
    root = scaffolded(pair, tmp_path)
    odd = load_contracts(root).table(pair.source, "odd")
    assert {c: odd.columns[c].type for c in odd.columns} == {
        "id": "integer", "n": "text", "n2": "text", "r": "text", "d": "text", "ts": "text",
        "tags": "text", "nums": "text", "ok_d": "date", "ok_n": "numeric", "ok_tags": "text[]"}
    assert "NaN or infinite numbers, which type numeric refuses" in odd.columns["n"].description
    assert "NULL elements" in odd.columns["tags"].description
    contracts = load_contracts(root)
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    pair.src_exec("update public.odd set id = id + 10",
                  "insert into public.odd values (4, '-Infinity', 3, 'NaN', '-infinity',"
                  " 'infinity', '{NULL}', '{Infinity}', '2026-01-03', 3, '{c}')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.dead_letters").fetchone()[0] == 0
    assert_mirror_equals(pair, "odd")


def scaffolded(pair: Pair, tmp_path: Path) -> Path:
    """``contracts init`` of schema public of the pair's source into ``tmp_path/contracts``."""
    with psycopg.connect(pair.src) as conn:
        shapes, _ = table_shapes(conn, Selection.of(["public"]))
    root = tmp_path / "contracts"
    write_contracts(root, pair.source, shapes)
    return root


def test_domain_columns_are_scaffolded_as_their_base_type(pair: Pair, tmp_path: Path) -> None:
    # A domain over integer with NOT NULL (`create domain qty as integer check (value > 0) not
    # null`) was scaffolded `type: text, nullable: true`: checked for presence only, and NULL
    # allowed where the source can hold none.
    pair.src_exec("create domain qty as integer check (value > 0) not null",
                  "create domain email as text check (value like '%@%')",
                  "create table public.lines (id int primary key, q qty, e email,"
                  " amount numeric(10, 2))",
                  "insert into public.lines values (1, 2, 'a@b', 1.5), (2, 3, null, null)")
    root = scaffolded(pair, tmp_path)
    lines = load_contracts(root).table(pair.source, "lines")
    assert {c: (lines.columns[c].type, lines.columns[c].nullable) for c in lines.columns} == {
        "id": ("integer", False), "q": ("integer", False), "e": ("text", True),
        "amount": ("numeric(10,2)", True)}
    catch_up(pair.src, pair.land, pair.source, contracts=load_contracts(root))
    pair.src_exec("insert into public.lines values (3, 7, 'c@d', 2)",
                  "update public.lines set q = 9 where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=load_contracts(root))
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from tidemark.dead_letters").fetchone()[0] == 0
    assert_mirror_equals(pair, "lines")


def test_the_replicated_table_of_two_with_one_landing_name_gets_the_contract(pair: Pair) -> None:
    # sales.orders lands as sales__orders; public."sales__orders", created later, would too and
    # sorts first. Ingestion keeps landing sales.orders, so its shape must be the one scaffolded
    # as sales__orders (before, `contracts init` took the newcomer's columns: every change of
    # sales.orders would then have broken that contract).
    pair.src_exec("create schema sales", "create table sales.orders (id int primary key, w text)")
    catch_up(pair.src, pair.land, pair.source, schemas=["public", "sales"])
    pair.src_exec('create table public."sales__orders" (k int primary key)')
    with psycopg.connect(pair.src) as conn:
        shapes, skipped = table_shapes(conn, Selection.of(["public", "sales"]),
                                       publication_name(pair.source))
    assert [(s.qualified, s.name) for s in shapes] == [("sales.orders", "sales__orders")]
    assert [t for t, _ in skipped] == ["public.sales__orders"]
