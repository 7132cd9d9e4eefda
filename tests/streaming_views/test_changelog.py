"""The change logs: their columns keep a base-table column's domain's base type."""

from __future__ import annotations

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema r")
    return module_db


def test_not_null_domain_columns(db: str, conn: psycopg.Connection) -> None:
    """A base-table column of a ``NOT NULL`` domain made the deploy fail with PostgreSQL's raw
    'domain ... does not allow null values' (the change log's marker rows are NULL in every
    column); the logs now keep a domain's base type."""
    conn.execute("create domain r.nn as int not null; create domain r.label as text "
                 "check (value <> ''); create table r.nd (id int primary key, g r.nn, "
                 "v r.nn, l r.label); create table r.nl (g int primary key, label r.label)")
    conn.execute("insert into r.nl values (1, 'one'), (2, 'two')")
    text = """select t.g, l.label, count(*) as n, sum(t.v) as sv, max(t.l) as ml
from r.nd t join r.nl l on l.g = t.g group by t.g, l.label"""
    assert deploy_text(db, "not_null_domain", text) == "created"  # was: DeployError
    conn.execute("insert into r.nd values (1, 1, 5, 'a'), (2, 2, 6, 'b'), (3, 1, 7, 'c')")
    conn.execute("update r.nd set v = v + 1 where id = 1")
    conn.execute("update r.nl set label = 'uno' where g = 1")
    conn.execute("delete from r.nd where id = 2")
    assert_equal(conn, "not_null_domain", text)
    assert conn.execute("select format_type(atttypid, atttypmod) from pg_attribute where "
                        "attrelid = 'live.not_null_domain'::regclass and attname = 'g'"
                        ).fetchone()[0] == "r.nn"  # the view keeps the query's types
