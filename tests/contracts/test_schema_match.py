"""The table contracts match the demo schema (tidemark/demo/schema.sql) exactly: created in a
real PostgreSQL and compared with information_schema. Rows read back from that database, as
psycopg returns them and as text, validate clean."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from contracts import ContractSet, validate_row
from tidemark.demo.schema import DEMO_TABLES, apply_schema

# information_schema.columns.data_type -> the contract's type name (arrays and numeric aside).
DATA_TYPES = {"timestamp with time zone": "timestamptz", "smallint": "smallint",
              "integer": "integer", "bigint": "bigint", "text": "text", "boolean": "boolean",
              "date": "date", "uuid": "uuid", "jsonb": "jsonb", "real": "real",
              "double precision": "double precision"}
UDT_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "text": "text",
             "bool": "boolean", "timestamptz": "timestamptz", "uuid": "uuid", "numeric": "numeric",
             "date": "date", "jsonb": "jsonb", "float4": "real", "float8": "double precision"}


def contract_type(data_type: str, udt_name: str, precision: int | None,
                  scale: int | None) -> str:
    """Render an information_schema column type the way contracts write it."""
    if data_type == "ARRAY":
        return UDT_NAMES[udt_name.removeprefix("_")] + "[]"
    if data_type == "numeric":
        return f"numeric({precision},{scale})" if precision is not None else "numeric"
    return DATA_TYPES[data_type]


@pytest.fixture(scope="module")
def source(module_db: str) -> str:
    apply_schema(module_db)
    return module_db


def db_columns(url: str, table: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select column_name, data_type, udt_name, numeric_precision, numeric_scale,"
            " is_nullable from information_schema.columns"
            " where table_schema = 'public' and table_name = %s order by ordinal_position",
            (table,)).fetchall()
    return [(name, contract_type(dt, udt, p, s), nullable == "YES")
            for name, dt, udt, p, s, nullable in rows]


def db_primary_key(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select k.column_name from information_schema.table_constraints as c"
            " join information_schema.key_column_usage as k"
            "   on k.constraint_schema = c.constraint_schema"
            "  and k.constraint_name = c.constraint_name"
            " where c.table_schema = 'public' and c.table_name = %s"
            "   and c.constraint_type = 'PRIMARY KEY'"
            " order by k.ordinal_position", (table,)).fetchall()
    return [name for (name,) in rows]


def test_one_contract_per_demo_table(shipped: ContractSet, source: str) -> None:
    with psycopg.connect(source) as conn:
        in_db = {name for (name,) in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'public'")}
    assert in_db == set(DEMO_TABLES)
    # every demo table has its contract; other contracts are a user's own tables (README
    # "Extending"), which the demo schema does not create
    assert {t.name for t in shipped.tables("shop")} >= in_db


@pytest.mark.parametrize("table", DEMO_TABLES)
def test_columns_types_and_nullability_match(shipped: ContractSet, source: str,
                                             table: str) -> None:
    contract = shipped.table("shop", table)
    in_contract = [(c.name, c.type, c.nullable) for c in contract.columns.values()]
    assert in_contract == db_columns(source, table)


@pytest.mark.parametrize("table", DEMO_TABLES)
def test_primary_key_matches(shipped: ContractSet, source: str, table: str) -> None:
    assert shipped.table("shop", table).primary_key == db_primary_key(source, table)


def insert(conn: psycopg.Connection, table: str, row: dict[str, Any]) -> None:
    columns = list(row)
    query = sql.SQL("insert into {} ({}) overriding system value values ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    values = [psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in row.values()]
    conn.execute(query, values)


def test_rows_read_back_from_postgres_validate(shipped: ContractSet, source: str,
                                               valid_rows: dict[str, dict[str, Any]]) -> None:
    with psycopg.connect(source) as conn:
        for table in DEMO_TABLES:
            insert(conn, table, valid_rows[table])
        for table in DEMO_TABLES:
            contract = shipped.table("shop", table)
            as_python = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(table)),
                                     ).fetchone()
            names = list(contract.columns)
            as_text = conn.execute(sql.SQL("select {} from {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
                sql.Identifier(table))).fetchone()
            assert as_python is not None and as_text is not None
            python_row = dict(zip(names, as_python, strict=True))
            text_row = dict(zip(names, as_text, strict=True))
            assert all(isinstance(v, str) for v in text_row.values() if v is not None)
            assert validate_row(contract, python_row) == [], table
            assert validate_row(contract, text_row) == [], table
        conn.rollback()


def test_database_check_constraints_agree_with_allowed_values(shipped: ContractSet,
                                                              source: str) -> None:
    """Every ``col in (...)`` CHECK of the schema lists exactly the contract's allowed values."""
    with psycopg.connect(source) as conn:
        checks = conn.execute(
            "select c.conrelid::regclass::text, a.attname,"
            "       regexp_match(pg_get_constraintdef(c.oid), 'ARRAY\\[(.*)\\]')"
            " from pg_constraint as c join pg_attribute as a"
            "   on a.attrelid = c.conrelid and a.attnum = c.conkey[1]"
            " where c.contype = 'c' and c.connamespace = 'public'::regnamespace"
            "   and pg_get_constraintdef(c.oid) like '%%ANY%%'").fetchall()
    assert {(table, column) for table, column, _ in checks} == {
        ("orders", "status"), ("payments", "payment_kind"), ("payments", "method"),
        ("payments", "status"), ("deliveries", "status")}
    for table, column, (listed,) in checks:
        values = [item.split("'")[1] for item in listed.split(", ")]
        assert list(shipped.table("shop", table).columns[column].allowed_values or ()) == values
