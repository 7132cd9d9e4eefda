"""A user's own table of the demo source is created from its contract on a fresh demo source.

README "Extending": a user adds a table to the demo source, its contract and models and views
reading it. ``tidemark up`` on a fresh home (a colleague's clone, CI) creates the demo schema,
which lacks that table: it is created empty from the contract, so the views and models build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from contracts import load_contracts
from tidemark.demo.schema import apply_schema, create_contracted_tables

EXTENSION = Path(__file__).resolve().parents[1] / "dbt_project" / "user_extension" / "contracts"
SHIPPED = Path(__file__).resolve().parents[2] / "contracts"


def test_a_contracted_table_the_demo_lacks_is_created_from_its_contract(
        module_db: str, tmp_path: Path) -> None:
    root = tmp_path / "contracts"
    shutil.copytree(SHIPPED, root)
    shutil.copyfile(EXTENSION / "shop" / "refunds.yml", root / "shop" / "refunds.yml")
    (root / "shop" / "notes.yml").write_text(  # a nullable column
        "version: 1\ncompatibility: backward\nallowed_lateness: 1h\n"
        "freshness: {warn_after: 1h, error_after: 1d}\n"
        "primary_key: [note_id]\ncolumns:\n  note_id: {type: bigint}\n"
        "  body: {type: text, nullable: true}\n")
    (root / "shop" / "moods.yml").write_text(
        "version: 1\ncompatibility: backward\nallowed_lateness: 1h\n"
        "freshness: {warn_after: 1h, error_after: 1d}\n"
        "primary_key: [mood_id]\ncolumns:\n  mood_id: {type: bigint}\n"
        "  mood: {type: text}\n")
    (root / "shop" / "visits.yml").write_text(  # keyless: a bag, published by its full row
        "version: 1\ncompatibility: backward\nallowed_lateness: 1h\n"
        "freshness: {warn_after: 1h, error_after: 1d}\n"
        "primary_key: []\ncolumns:\n  page: {type: text}\n")
    tables = load_contracts(root).tables("shop")
    apply_schema(module_db)
    with psycopg.connect(module_db, autocommit=True) as conn:  # the name is taken: reported
        conn.execute("create sequence public.moods")
    created, failed = create_contracted_tables(module_db, tables)
    assert created == ["notes", "refunds", "visits"]
    assert list(failed) == ["moods"] and '"moods" already exists' in failed["moods"]
    assert create_contracted_tables(module_db, tables)[0] == []  # present: kept
    with psycopg.connect(module_db) as conn:
        columns = conn.execute(
            "select column_name, format_type(atttypid, atttypmod), is_nullable "
            "from information_schema.columns c join pg_attribute a "
            "on a.attrelid = 'public.refunds'::regclass and a.attname = c.column_name "
            "where table_schema = 'public' and table_name = 'refunds' "
            "order by ordinal_position").fetchall()
        key = conn.execute("select pg_get_constraintdef(oid) from pg_constraint "
                           "where conrelid = 'public.refunds'::regclass and contype = 'p'"
                           ).fetchone()[0]
        nullable = dict(conn.execute(
            "select column_name, is_nullable from information_schema.columns "
            "where table_schema = 'public' and table_name = 'notes'").fetchall())
        rows = conn.execute("select count(*) from public.refunds").fetchone()[0]
        visits = conn.execute(
            "select relreplident, (select count(*) from pg_constraint where conrelid = c.oid"
            " and contype = 'p') from pg_class c where oid = 'public.visits'::regclass"
        ).fetchone()
    assert columns == [("refund_id", "bigint", "NO"), ("order_id", "bigint", "NO"),
                       ("amount", "numeric(12,2)", "NO"), ("reason", "text", "NO"),
                       ("refunded_at", "timestamp with time zone", "NO")]
    assert key == "PRIMARY KEY (refund_id)" and rows == 0
    assert nullable == {"note_id": "NO", "body": "YES"}
    assert visits == ("f", 0)  # REPLICA IDENTITY FULL, no key: published, lands as a bag
    # the demo's own tables are never recreated from their contracts
    assert create_contracted_tables(module_db, load_contracts().tables("shop")) == ([], {})
