"""Roles and grants: the reader reads landing and writes nothing; the ingest role replicates."""

from __future__ import annotations

import psycopg
import pytest

from tests.support import create_database
from tidemark.settings import APP_ROLE, INGEST_ROLE, READER_ROLE
from tidemark.stack.bootstrap import ensure_roles, grant_landing, grant_source
from tidemark.stack.embedded import EmbeddedServer


@pytest.fixture(scope="module")
def landing(pg: EmbeddedServer) -> str:
    url = create_database(pg, "bootstrap_landing")
    ensure_roles(pg.admin_url("postgres"))
    ensure_roles(pg.admin_url("postgres"))  # idempotent
    grant_landing(url)
    grant_landing(url)  # idempotent
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table marts.fct_example (n int)")
        conn.execute("insert into marts.fct_example values (1)")
    return url


def _as(pg: EmbeddedServer, role: str, database: str) -> str:
    return f"postgresql://{role}@127.0.0.1:{pg.port}/{database}"


def test_reader_can_read_landing(pg: EmbeddedServer, landing: str) -> None:
    with psycopg.connect(_as(pg, READER_ROLE, "bootstrap_landing")) as conn:
        assert conn.execute("select n from marts.fct_example").fetchall() == [(1,)]


def test_reader_reads_a_source_mirror_schema_ingestion_creates(pg: EmbeddedServer,
                                                              landing: str) -> None:
    # `psql tidemark_reader ... -c 'select count(*) from mydb.orders'` (README, "Your own
    # database") was "permission denied for schema mydb": only the fixed schemas were granted.
    app = _as(pg, APP_ROLE, "bootstrap_landing")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create schema if not exists mydb")
        conn.execute("create table mydb.orders (order_id int primary key)")
        conn.execute("insert into mydb.orders values (1)")
    with psycopg.connect(landing, autocommit=True) as conn:  # a schema made before the fix
        conn.execute(f"create schema older authorization {APP_ROLE}")
        conn.execute(f"revoke usage on schema older from {READER_ROLE}")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create table older.t (n int)")
    with psycopg.connect(_as(pg, READER_ROLE, "bootstrap_landing")) as conn:
        assert conn.execute("select count(*) from mydb.orders").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from older.t")
    grant_landing(landing)  # every start runs it: the older schema is opened too
    with psycopg.connect(_as(pg, READER_ROLE, "bootstrap_landing")) as conn:
        assert conn.execute("select count(*) from older.t").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into mydb.orders values (2)")


def test_reader_cannot_write(pg: EmbeddedServer, landing: str) -> None:
    with psycopg.connect(_as(pg, READER_ROLE, "bootstrap_landing")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into marts.fct_example values (2)")
    with psycopg.connect(_as(pg, READER_ROLE, "bootstrap_landing")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create table marts.sneaky (x int)")


def test_ingest_role_replicates_and_reads_the_source(pg: EmbeddedServer) -> None:
    url = create_database(pg, "bootstrap_source")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table orders (order_id int primary key)")
    grant_source(url)
    with psycopg.connect(pg.admin_url("postgres")) as conn:
        is_repl, is_super = conn.execute(
            "select rolreplication, rolsuper from pg_roles where rolname = %s", (INGEST_ROLE,)
        ).fetchone()
    assert is_repl and not is_super
    with psycopg.connect(_as(pg, INGEST_ROLE, "bootstrap_source")) as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from orders")
