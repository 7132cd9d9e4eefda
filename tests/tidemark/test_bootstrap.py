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
    return pg.url(database, role)


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


def test_live_views_a_superuser_deployed_are_handed_to_the_app_role(pg: EmbeddedServer,
                                                                    tmp_path) -> None:
    """Before `tidemark views` deployed as tidemark_app, `tidemark views deploy` on the embedded
    stack ran as the superuser: its views, state tables, trigger functions and the engine's
    catalog were the superuser's, and every later deploy by Dagster (tidemark_app) failed with
    "permission denied" / "must be owner". The bootstrap every start runs hands them over; the
    DDL guard's event-trigger functions stay the superuser's (they must)."""
    from streaming_views import deploy
    from streaming_views.status import list_views

    url = create_database(pg, "bootstrap_owned")
    ensure_roles(pg.admin_url("postgres"))
    grant_landing(url)
    app = _as(pg, APP_ROLE, "bootstrap_owned")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create schema k; create table k.t (id int primary key, g int);"
                     "insert into k.t select i, i % 3 from generate_series(1, 30) i")
    views = tmp_path / "views"
    views.mkdir()
    (views / "by_g.sql").write_text("select s.g, count(*) as n from k.t s group by s.g\n")
    assert [r.action for r in deploy(url, views)] == ["created"]  # as the superuser (old CLI)
    (views / "by_g.sql").write_text("select s.g, sum(s.id) as n from k.t s group by s.g\n")
    grant_landing(url)  # what the next `tidemark up` runs first
    assert [r.action for r in deploy(app, views)] == ["replaced"]
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("insert into k.t values (31, 1)")
        assert conn.execute("select n from live.by_g where g = 1").fetchone() == (
            sum(i for i in range(1, 32) if i % 3 == 1),)
    assert [(v.name, v.rows) for v in list_views(app)] == [("by_g", 3)]
    with psycopg.connect(url) as conn:
        guard_owners = conn.execute(
            "select distinct r.rolsuper from pg_event_trigger e join pg_proc p"
            " on p.oid = e.evtfoid join pg_roles r on r.oid = p.proowner").fetchall()
    assert guard_owners == [(True,)]
