"""Least privilege on landing: dbt's own role, readers kept out of Tidemark's internal state.

Written against ``grant_landing`` / ``ensure_roles`` only (and the role names as strings), so the
same tests run on a tree without ``tidemark_dbt`` and fail there.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import create_database
from tidemark.settings import APP_ROLE, READER_ROLE
from tidemark.stack.bootstrap import ensure_roles, grant_landing
from tidemark.stack.embedded import EmbeddedServer

DBT = "tidemark_dbt"
DB = "privileges_landing"


@pytest.fixture(scope="module")
def landing(pg: EmbeddedServer) -> str:
    url = create_database(pg, DB)
    ensure_roles(pg.admin_url("postgres"))
    grant_landing(url)
    grant_landing(url)  # idempotent
    with psycopg.connect(pg.url(DB, APP_ROLE), autocommit=True) as conn:
        # what ingestion and the live-view engine create as tidemark_app once the stack runs
        conn.execute("create schema shop")
        conn.execute("create table shop.orders (order_id int primary key)")
        conn.execute("insert into shop.orders values (1)")
        conn.execute("create table tidemark.sources (name text, url text)")
        conn.execute("insert into tidemark.sources values ('shop', 'postgresql://u@h/shop')")
        conn.execute("create table tidemark.views (name text)")
        conn.execute("create table tidemark.live_changes (name text, seq bigint)")
        conn.execute("create schema tidemark_state")
        conn.execute("create table tidemark_state.v_abc (n int)")
        conn.execute("create table cdc.shop_orders (lsn bigint)")
    return url


def _denied(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_dbt_builds_in_its_schemas_and_reads_the_mirror(pg: EmbeddedServer,
                                                        landing: str) -> None:
    with psycopg.connect(pg.url(DB, DBT), autocommit=True) as conn:
        conn.execute("create or replace view staging.stg_orders as select * from shop.orders")
        conn.execute("drop table if exists marts.fct")
        conn.execute("create table marts.fct as select count(*) n from staging.stg_orders")
        conn.execute("create temporary table scratch (n int)")
        assert conn.execute("select n from marts.fct").fetchone() == (1,)
    for role in (READER_ROLE, APP_ROLE):  # BI tools; serving views and reconciliation
        with psycopg.connect(pg.url(DB, role)) as conn:
            assert conn.execute("select n from marts.fct").fetchone() == (1,)


@pytest.mark.parametrize("statement", [
    "select * from tidemark.sources",
    "select * from tidemark_state.v_abc",
    "create table tidemark.sneaky (n int)",
    "create table cdc.sneaky (n int)",
    "create table shop.sneaky (n int)",
    "create table public.sneaky (n int)",
    "create schema sneaky",
    "insert into shop.orders values (2)",
    "delete from tidemark.views",
])
def test_dbt_role_cannot_touch_what_it_does_not_own(pg: EmbeddedServer, landing: str,
                                                    statement: str) -> None:
    # dbt built as tidemark_app, the owner of the mirror, the change logs and Tidemark's state:
    # a model, macro or hook could read the source registry or rewrite the engine's state
    _denied(pg.url(DB, DBT), statement)


def test_dbt_role_has_no_attributes_but_login(pg: EmbeddedServer, landing: str) -> None:
    with psycopg.connect(landing) as conn:
        row = conn.execute("select rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                           "rolbypassrls, rolcanlogin from pg_roles where rolname = %s",
                           (DBT,)).fetchone()
        assert row == (False, False, False, False, False, True)
        assert conn.execute("select has_database_privilege(%s, current_database(), 'create'),"
                            " has_database_privilege(%s, current_database(), 'temporary')",
                            (DBT, DBT)).fetchone() == (False, True)


def test_reader_reads_only_the_catalog_and_change_counters_of_tidemark(
        pg: EmbeddedServer, landing: str) -> None:
    with psycopg.connect(pg.url(DB, READER_ROLE)) as conn:
        assert conn.execute("select count(*) from tidemark.views").fetchone() == (0,)
        assert conn.execute("select count(*) from tidemark.live_changes").fetchone() == (0,)
        assert conn.execute("select count(*) from shop.orders").fetchone() == (1,)
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark.sources")
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark_state.v_abc")


def test_reader_is_kept_out_of_tables_created_later_and_of_earlier_grants(
        pg: EmbeddedServer, landing: str) -> None:
    with psycopg.connect(pg.url(DB, APP_ROLE), autocommit=True) as conn:
        conn.execute("create table tidemark.dead_letters (raw text)")
        conn.execute("create table tidemark.later as select 1 as n")
        conn.execute("create table shop.later_mirror (n int)")
        conn.execute("create table tidemark_state.v_def (n int)")
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark.dead_letters")
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark.later")
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark_state.v_def")
    with psycopg.connect(pg.url(DB, READER_ROLE)) as conn:
        assert conn.execute("select count(*) from shop.later_mirror").fetchone() == (0,)
    with psycopg.connect(landing, autocommit=True) as conn:  # granted by an earlier version
        conn.execute(f"grant select on all tables in schema tidemark to {READER_ROLE}")
    grant_landing(landing)  # every start takes it back
    _denied(pg.url(DB, READER_ROLE), "select * from tidemark.sources")
    with psycopg.connect(pg.url(DB, READER_ROLE)) as conn:
        assert conn.execute("select count(*) from tidemark.views").fetchone() == (0,)


def test_an_upgrade_hands_dbt_schemas_and_relations_to_the_dbt_role(pg: EmbeddedServer) -> None:
    # A stack started by an earlier version: dbt built as tidemark_app, which owns its schemas,
    # tables and views, and a serving view of tidemark_app reads a mart.
    url = create_database(pg, "privileges_upgrade")
    ensure_roles(pg.admin_url("postgres"))
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in ("tidemark", "staging", "intermediate", "marts", "serving", "shop"):
            conn.execute(f"create schema {schema} authorization {APP_ROLE}")
        conn.execute(f"alter default privileges for role {APP_ROLE} grant select on tables "
                     f"to {READER_ROLE}")
    with psycopg.connect(pg.url("privileges_upgrade", APP_ROLE), autocommit=True) as conn:
        conn.execute("create table shop.orders (order_id int)")
        conn.execute("insert into shop.orders values (1), (2)")
        conn.execute("create view staging.stg_orders as select * from shop.orders")
        conn.execute("create table marts.fct as select count(*) n from staging.stg_orders")
        conn.execute("create view serving.fct as select n from marts.fct")
    grant_landing(url)
    with psycopg.connect(url) as conn:
        owners = conn.execute(
            "select n.nspname || coalesce('.' || c.relname, ''), pg_get_userbyid(coalesce("
            "c.relowner, n.nspowner)) from pg_namespace n left join pg_class c on "
            "c.relnamespace = n.oid and c.relkind in ('r', 'v') where n.nspname in "
            "('staging', 'intermediate', 'marts', 'serving') order by 1").fetchall()
    assert owners == [("intermediate", DBT), ("marts.fct", DBT), ("serving.fct", APP_ROLE),
                      ("staging.stg_orders", DBT)]
    with psycopg.connect(pg.url("privileges_upgrade", DBT), autocommit=True) as conn:
        conn.execute("create or replace view staging.stg_orders as select * from shop.orders")
        conn.execute("create table marts.fct2 as select * from staging.stg_orders")
        conn.execute("alter table marts.fct2 rename to fct3")
    with psycopg.connect(pg.url("privileges_upgrade", APP_ROLE)) as conn:
        assert conn.execute("select n from serving.fct").fetchone() == (2,)
        assert conn.execute("select count(*) from marts.fct3").fetchone() == (2,)
    with psycopg.connect(pg.url("privileges_upgrade", READER_ROLE)) as conn:
        assert conn.execute("select count(*) from marts.fct3").fetchone() == (2,)
        assert conn.execute("select count(*) from staging.stg_orders").fetchone() == (2,)
