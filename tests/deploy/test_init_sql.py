"""The containers' init SQL (docker/source, docker/landing) on a fresh PostgreSQL: the roles it
creates are enough for the demo schema, ingestion, readers and Dagster, and no more."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from contracts import load_contracts
from tests.deploy.conftest import DEV_ENV, DOCKER, run_psql_file
from tidemark.demo.schema import DEMO_TABLES, apply_schema
from tidemark.demo.seed import seed_history
from tidemark.stack.bootstrap import ensure_database
from tidemark.stack.embedded import EmbeddedServer

SOURCE_SCRIPTS = sorted((DOCKER / "source").glob("*.sql"))
LANDING_SCRIPTS = sorted((DOCKER / "landing").glob("*.sql"))


# the docker/dev.env variable holding each role's password (the init scripts set them)
ROLE_PASSWORDS = {"shop_app": "SHOP_APP_PASSWORD", "tidemark_ingest": "TIDEMARK_INGEST_PASSWORD",
                  "tidemark_materialize": "TIDEMARK_MZ_SOURCE_PASSWORD",
                  "tidemark_app": "TIDEMARK_APP_PASSWORD",
                  "tidemark_dbt": "TIDEMARK_DBT_PASSWORD",
                  "tidemark_reader": "TIDEMARK_READER_PASSWORD",
                  "dagster": "DAGSTER_POSTGRES_PASSWORD"}


def role_url(server: EmbeddedServer, role: str, database: str) -> str:
    """URL of ``role`` on the fresh server, with its password of docker/dev.env."""
    return make_conninfo(server.url(database, role), password=DEV_ENV[ROLE_PASSWORDS[role]])


@pytest.fixture(scope="module")
def initialised(fresh_server: EmbeddedServer) -> EmbeddedServer:
    """Databases $POSTGRES_DB of both containers, then their init scripts, as the entrypoint."""
    assert SOURCE_SCRIPTS and LANDING_SCRIPTS
    ensure_database(fresh_server.admin_url("postgres"), "shop")
    ensure_database(fresh_server.admin_url("postgres"), "tidemark")
    for database, scripts in (("shop", SOURCE_SCRIPTS), ("tidemark", LANDING_SCRIPTS)):
        for script in scripts:
            done = run_psql_file(fresh_server, database, script, DEV_ENV)
            assert done.returncode == 0, f"{script.name}: {done.stderr}"
    return fresh_server


@pytest.fixture(scope="module")
def landed(initialised: EmbeddedServer) -> EmbeddedServer:
    """The demo schema made as shop_app, a small history, and ingestion run as the compose roles."""
    import ingestion

    app_source = role_url(initialised, "shop_app", "shop")
    apply_schema(app_source)
    seed_history(app_source, days=1, orders_per_day=30, seed=7)
    ingest = role_url(initialised, "tidemark_ingest", "shop")
    ingestion.catch_up(ingest, role_url(initialised, "tidemark_app", "tidemark"), "shop",
                       contracts=load_contracts(), setup_dsn=ingest, timeout_s=120)
    return initialised


def test_source_roles_are_least_privileged(initialised: EmbeddedServer) -> None:
    with psycopg.connect(initialised.admin_url("shop")) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "select rolname, rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole"
            " from pg_roles where rolname in ('shop_app', 'tidemark_ingest',"
            " 'tidemark_materialize')")}
    assert rows == {
        "shop_app": (True, False, False, False, False),
        "tidemark_ingest": (True, True, False, False, False),
        "tidemark_materialize": (True, True, False, False, False),
    }


def test_passwords_come_from_the_environment(initialised: EmbeddedServer) -> None:
    with psycopg.connect(initialised.admin_url("shop")) as conn:
        ok = conn.execute(
            "select rolname, rolpassword is not null and rolpassword not like %s"
            " from pg_authid where rolname in ('shop_app', 'tidemark_ingest',"
            " 'tidemark_materialize', 'tidemark_app', 'tidemark_dbt', 'tidemark_reader',"
            " 'dagster')",
            ("%dev-only%",)).fetchall()
    # Stored hashed (SCRAM), never as the plain text of docker/dev.env.
    assert sorted(ok) == sorted((r, True) for r in ("shop_app", "tidemark_ingest",
                                                    "tidemark_materialize", "tidemark_app",
                                                    "tidemark_dbt", "tidemark_reader",
                                                    "dagster"))


def test_demo_tables_are_owned_by_the_app_and_published(landed: EmbeddedServer) -> None:
    with psycopg.connect(landed.admin_url("shop")) as conn:
        owners = set(conn.execute(
            "select distinct tableowner from pg_tables where schemaname = 'public'"
            " and tablename = any(%s)", (list(DEMO_TABLES),)).fetchall())
        published = {pub: {r[0] for r in conn.execute(
            "select tablename from pg_publication_tables where pubname = %s and"
            " schemaname = 'public'", (pub,))} for pub in ("tidemark_shop", "tidemark_mz_shop")}
        rights = conn.execute(
            "select has_table_privilege(r, 'public.orders', 'select'),"
            " has_table_privilege(r, 'public.orders', 'insert'),"
            " has_table_privilege(r, 'public.orders', 'delete')"
            " from unnest(array['tidemark_ingest', 'tidemark_materialize']) as r").fetchall()
    assert owners == {("shop_app",)}
    # Tables created after the publications are in them (FOR TABLES IN SCHEMA public).
    assert published == {"tidemark_shop": set(DEMO_TABLES), "tidemark_mz_shop": set(DEMO_TABLES)}
    assert rights == [(True, False, False), (True, False, False)]


def test_ingestion_runs_as_the_replication_role(landed: EmbeddedServer) -> None:
    with psycopg.connect(landed.admin_url("shop")) as conn:
        source_orders = conn.execute("select count(*) from orders").fetchone()[0]
    with psycopg.connect(landed.admin_url("tidemark")) as conn:
        mirror_orders = conn.execute("select count(*) from shop.orders").fetchone()[0]
        owners = {r[0] for r in conn.execute(
            "select distinct tableowner from pg_tables where schemaname in ('shop', 'cdc',"
            " 'tidemark')")}
    assert source_orders > 0
    assert mirror_orders == source_orders
    assert owners == {"tidemark_app"}


def test_reader_reads_landing_and_writes_nothing(landed: EmbeddedServer) -> None:
    with psycopg.connect(role_url(landed, "tidemark_reader", "tidemark")) as conn:
        mirror = conn.execute("select count(*) from shop.orders").fetchone()[0]
        changes = conn.execute("select count(*) from cdc.shop__orders").fetchone()[0]
        assert mirror > 0 and changes >= mirror
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from shop.orders")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("create table marts.sneaky (x int)")


def test_replication_role_cannot_write_the_source(landed: EmbeddedServer) -> None:
    with psycopg.connect(role_url(landed, "tidemark_ingest", "shop")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update orders set status = status")


def test_dagster_database_belongs_to_dagster_only(initialised: EmbeddedServer) -> None:
    with psycopg.connect(initialised.admin_url("postgres")) as conn:
        owner = conn.execute("select pg_get_userbyid(datdba) from pg_database"
                             " where datname = 'dagster'").fetchone()
        others = conn.execute("select has_database_privilege('tidemark_reader', 'dagster',"
                              " 'connect')").fetchone()[0]
    assert owner == ("dagster",)
    assert others is False


def test_init_scripts_can_run_again(initialised: EmbeddedServer) -> None:
    for database, scripts in (("shop", SOURCE_SCRIPTS), ("tidemark", LANDING_SCRIPTS)):
        for script in scripts:
            done = run_psql_file(initialised, database, script, DEV_ENV)
            assert done.returncode == 0, f"{script.name} again: {done.stderr}"


@pytest.mark.parametrize(("script_dir", "database", "variable"), [
    ("source", "shop", "TIDEMARK_INGEST_PASSWORD"),
    ("landing", "tidemark", "DAGSTER_POSTGRES_PASSWORD"),
])
def test_a_missing_password_stops_the_script(initialised: EmbeddedServer, script_dir: str,
                                             database: str, variable: str) -> None:
    env = {k: v for k, v in DEV_ENV.items() if k != variable}
    for script in sorted((DOCKER / script_dir).glob("*.sql")):
        done = run_psql_file(initialised, database, script, env)
        assert done.returncode != 0
        assert f"{variable} is not set" in done.stderr


def test_dagster_yaml_stores_runs_in_the_dagster_database(
        initialised: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"HOST": "127.0.0.1", "PORT": str(initialised.port), "USER": "dagster",
                       "PASSWORD": DEV_ENV["DAGSTER_POSTGRES_PASSWORD"], "DB": "dagster"}.items():
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{key}", value)
    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_runs() == []
        run = _one_op_job().execute_in_process(instance=instance)  # events are stored
        assert run.success and instance.get_run_by_id(run.run_id) is not None
    finally:
        instance.dispose()
    with psycopg.connect(initialised.admin_url("dagster")) as conn:
        tables = dict(conn.execute("select tablename, tableowner from pg_tables"
                                   " where schemaname = 'public'").fetchall())
    assert {"runs", "event_logs", "jobs"} <= set(tables)
    assert set(tables.values()) == {"dagster"}


def _one_op_job():
    """A job of one op: its run writes events (and NOTIFYs) to the event log storage."""
    import dagster as dg

    @dg.op
    def one() -> int:
        return 1

    @dg.job
    def probe() -> None:
        one()

    return probe


def test_dbt_role_builds_in_its_schemas_only(landed: EmbeddedServer) -> None:
    dbt = role_url(landed, "tidemark_dbt", "tidemark")
    with psycopg.connect(dbt, autocommit=True) as conn:
        conn.execute("create or replace view staging.stg_check as select count(*) n"
                     " from shop.orders")
        conn.execute("create table marts.fct_check as select * from staging.stg_check")
        conn.execute("create temporary table scratch (n int)")
        for statement in ("create table tidemark.sneaky (n int)", "create schema sneaky",
                          "create table shop.sneaky (n int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    for role in ("tidemark_reader", "tidemark_app"):
        with psycopg.connect(role_url(landed, role, "tidemark")) as conn:
            assert conn.execute("select count(*) from marts.fct_check").fetchone() == (1,)
