"""`tidemark source add|list|remove`, `tidemark contracts init` and `tidemark ingest run|status`
as a new user runs them: a password in a URL is refused without being echoed, a wrong --source is
refused (no stray slot or publication), a permanent error ends `ingest run` with one message and
a non-zero status, removing a source drops its slot and publication."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support import create_database
from tidemark.stack.embedded import EmbeddedServer
from tidemark.stack.supervisor import wait_for

_n = itertools.count(1)


@dataclass
class Env:
    """A user database, a landing database and the environment pointing Tidemark at them."""

    src: str
    land: str
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 120,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args],
                              env={**self.env, **(env_extra or {})}, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tidemark.cli.main", *args],
                                env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def src_exec(self, *statements: str) -> None:
        with psycopg.connect(self.src, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def fetch(self, url: str, query: str) -> list[tuple]:
        with psycopg.connect(url) as conn:
            return conn.execute(query).fetchall()


@pytest.fixture
def user(pg: EmbeddedServer, tmp_path: Path) -> Iterator[Env]:
    n = next(_n)
    src, land = create_database(pg, f"cli_src_{n}"), create_database(pg, f"cli_land_{n}")
    env = {**os.environ, "TIDEMARK_SOURCE_URL": src, "TIDEMARK_LANDING_URL": land,
           "TIDEMARK_HOME": str(tmp_path / "home")}
    yield Env(src, land, env)
    with psycopg.connect(src, autocommit=True) as conn:
        for (slot,) in conn.execute("select slot_name from pg_replication_slots where database"
                                    " = current_database()").fetchall():
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        for db in (f"cli_src_{n}", f"cli_land_{n}"):
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(db)))


def _slots_and_pubs(e: Env) -> tuple[list, list]:
    return (e.fetch(e.src, "select slot_name from pg_replication_slots where database ="
                           " current_database()"),
            e.fetch(e.src, "select pubname from pg_publication"))


def test_add_list_run_status_remove(user: Env, tmp_path: Path) -> None:
    e = user
    e.src_exec("create schema sales",
               "create table sales.orders (id int primary key, status text not null)",
               "create table public.audit (at timestamptz, what text)",
               "insert into sales.orders select g, 'paid' from generate_series(1, 1000) g")
    url = e.src.replace("postgres@", "postgres:hunter2@", 1)
    out = e.cli("source", "add", "shopdb", "--url", url)
    assert out.returncode == 2 and "hunter2" not in out.stdout + out.stderr
    assert "TIDEMARK_SOURCE_SHOPDB_PASSWORD" in out.stderr

    out = e.cli("source", "add", "shopdb", "--url", e.src, "--schemas", "public,sales",
                "--json")
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["published"] == ["sales.orders"]
    assert added["not_published"][0]["table"] == "public.audit"
    assert "replica identity full" in added["not_published"][0]["fix"]

    # A name that is not registered is refused before anything is created on a server.
    out = e.cli("ingest", "run", "--source", "shpdb")
    assert out.returncode == 2 and "No source named 'shpdb'" in out.stderr
    assert "registered: shopdb" in out.stderr
    assert _slots_and_pubs(e) == ([], [("tidemark_shopdb",)])

    contracts = tmp_path / "contracts"
    out = e.cli("contracts", "init", "shopdb", "--contracts", str(contracts), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tables_with_contracts"] == 1
    assert (contracts / "shopdb" / "sales__orders.yml").exists()

    log = tmp_path / "ingest.log"
    proc = e.popen("ingest", "run", "--contracts", str(contracts), log=log)
    try:
        # 8 s on a quiet machine; CI runs three pytest processes on two cores (load up to ~29),
        # where starting the process, the slot and the polling CLI calls take far longer.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            out = e.cli("ingest", "status", "--source", "shopdb", "--json")
            status = json.loads(out.stdout) if out.returncode == 0 else {}
            if (status.get("snapshot") or {}).get("state") == "done" and status["slot_active"]:
                break
            time.sleep(0.5)
        snap = status.get("snapshot") or {}
        assert (snap.get("rows"), snap.get("tables_total")) == (1000, 1), (
            f"no finished snapshot after 240 s; status {status}; ingest log:\n{log.read_text()}")
        e.src_exec("update public.audit set what = 'x'", "insert into sales.orders values "
                   "(1001, 'paid')")
        out = e.cli("source", "remove", "shopdb")
        assert out.returncode == 2 and "`tidemark ingest run`, or `tidemark up`" in out.stderr
        # SIGTERM finishes the transaction in hand, not what the stream has not read yet: the
        # insert above lands first (how soon is the machine's load's)
        assert wait_for(lambda: e.fetch(e.land, "select count(*) from shopdb.sales__orders")
                        == [(1001,)], 120), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    # the walsender ends a moment after the process that streamed: until then the slot is
    # active, and `source list` and `status` say so (as they should)
    assert wait_for(lambda: e.fetch(e.src, "select count(*) from pg_replication_slots where"
                                           " active and database = current_database()")
                    == [(0,)], 60)
    out = e.cli("source", "list", "--json")
    listed = json.loads(out.stdout)
    assert [(s["name"], s["slot"], s["tables"]) for s in listed] == [("shopdb", "idle", 1)]
    assert e.fetch(e.land, "select count(*) from shopdb.sales__orders") == [(1001,)]
    # `tidemark status` shows every registered source, not only the demo's (it showed none)
    out = e.cli("status", "--json")
    others = json.loads(out.stdout)["sources"]
    assert [(o["source"], o["slot_active"], o["dead_letters"]) for o in others] == [
        ("shopdb", False, 0)], others
    # stopped: its lag and rate are the last transaction's, and status says so (it showed a
    # lag of 0.1 s and 215 rows/s for an ingestion stopped 10 minutes before)
    human = e.cli("status", env_extra={"COLUMNS": "400", "TIDEMARK_INGEST_LAG_WARN_S": "1",
                                       "TIDEMARK_HEARTBEAT_S": "0.1"})
    assert "source shopdb: nothing applied for" in human.stdout, human.stdout

    out = e.cli("source", "remove", "shopdb")
    assert out.returncode == 0, out.stderr
    assert "dropped on the source: replication slot tidemark_shopdb" in out.stdout
    assert "Left in landing" in out.stdout
    assert _slots_and_pubs(e) == ([], [])
    assert json.loads(e.cli("source", "list", "--json").stdout) == []


def test_permanent_error_ends_ingest_run_with_one_message(user: Env, pg: EmbeddedServer,
                                                          tmp_path: Path) -> None:
    e = user
    gone = create_database(pg, "cli_gone_db")
    out = e.cli("source", "add", "gone", "--url", gone)
    assert out.returncode == 0, out.stderr
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        conn.execute("drop database cli_gone_db with (force)")
    log = tmp_path / "ingest.log"
    proc = e.popen("ingest", "run", log=log)
    code = proc.wait(60)
    text = log.read_text()
    assert code == 2, text
    assert 'database "cli_gone_db" does not exist' in text
    assert "Fix the registered URL" in text and "reconnecting" not in text
    listed = json.loads(e.cli("source", "list", "--json").stdout)
    assert "does not exist" in listed[0]["last_error"]
    assert "`tidemark source remove gone`" in listed[0]["last_error"]
    # `tidemark status` says which source stopped and why (it listed only the demo's)
    status = e.cli("status", env_extra={"COLUMNS": "400"})
    assert "source gone:" in status.stdout and "cli_gone_db" in status.stdout, status.stdout
    out = e.cli("source", "remove", "gone")
    assert out.returncode == 2 and "--force" in out.stderr
    out = e.cli("source", "remove", "gone", "--force")
    assert out.returncode == 0 and "pg_drop_replication_slot('tidemark_gone')" in out.stdout


def test_remove_names_the_contracts_left_behind(tmp_path: Path, monkeypatch) -> None:
    # After `tidemark source remove pgb`, contracts/pgb/ (from `contracts init`) stayed and
    # nothing said so: the next `tidemark up`'s catch-up ingested a source 'pgb' from the demo
    # database (a slot tidemark_pgb in it, retaining WAL, 3.5 GB in 15 minutes at 10x).
    import contracts.loader
    from tidemark.cli.source import _contracts_left

    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", tmp_path)
    assert _contracts_left("pgb") is None
    (tmp_path / "pgb").mkdir()
    (tmp_path / "pgb" / "pgbench_accounts.yml").write_text("version: 1\n")
    assert _contracts_left("pgb") == tmp_path / "pgb"


def test_remove_names_the_dbt_sources_left_behind(tmp_path: Path) -> None:
    # `tidemark contracts init pgb` writes dbt_project/models/staging/_pgb__sources.yml beside
    # the contracts; `source remove` named only contracts/pgb/.
    from tidemark.cli.source import _dbt_sources_left

    staging = tmp_path / "dbt_project" / "models" / "staging"
    staging.mkdir(parents=True)
    assert _dbt_sources_left(tmp_path / "contracts" / "pgb", "pgb") is None
    (staging / "_pgb__sources.yml").write_text("version: 2\n")
    assert _dbt_sources_left(tmp_path / "contracts" / "pgb", "pgb") == staging / "_pgb__sources.yml"


def test_contracts_init_writes_the_sources_dbt_models_read(user: Env, tmp_path: Path) -> None:
    # A data engineer's own source got contracts but no dbt source: a model reading
    # {{ source('mydb', 'accounts') }} failed "depends on a source named 'mydb.accounts' which
    # was not found", while the demo's shop has its generated _shop__sources.yml.
    import shutil

    e = user
    e.src_exec("create table public.accounts (aid int primary key, abalance int)",
               "create table public.history (tid int, delta int)",  # not published
               "create table public.log (tid int, delta int)",  # keyless, published
               "alter table public.log replica identity full")
    assert e.cli("source", "add", "mydb", "--url", e.src).returncode == 0
    repo = tmp_path / "clone"
    shutil.copytree(Path(__file__).resolve().parents[2] / "dbt_project", repo / "dbt_project",
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    out = e.cli("contracts", "init", "mydb", "--contracts", str(repo / "contracts"),
                env_extra={"COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    written = repo / "dbt_project" / "models" / "staging" / "_mydb__sources.yml"
    assert f"written to {written}" in out.stdout, out.stdout
    assert "{{ source('mydb', '<table>') }}" in out.stdout
    import yaml
    sources = yaml.safe_load(written.read_text())["sources"]
    assert [(s["name"], [t["name"] for t in s["tables"]]) for s in sources] == [
        ("mydb", ["accounts", "log"]), ("mydb_cdc", ["mydb__accounts", "mydb__log"])]
    # The keyless table gets a key: the kept contract is named with the key to set (the
    # brackets are text, not console markup, which printed "set primary_key:  in it").
    e.src_exec("alter table public.log add column id int generated always as identity"
               " primary key")
    out = e.cli("contracts", "init", "mydb", "--contracts", str(repo / "contracts"),
                env_extra={"COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    assert "but the contract says primary_key: []: set primary_key: [id] in it" in out.stdout
    out = e.cli("contracts", "init", "mydb", "--contracts", str(tmp_path / "elsewhere"),
                "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["dbt_sources"] is None


def test_remove_wipes_the_sources_tables_from_dagsters_catalog(user: Env) -> None:
    """Dagster's catalog lists every key its storage holds events of: after `source remove`
    (and its contracts deleted) the UI kept listing ``appb / customers``... with no definition
    and no status until wiped by hand (explore51). Other assets keep their history."""
    import dagster as dg

    from tidemark.settings import load_settings
    from tidemark.stack.dagster_proc import prepare_dagster_home
    from tidemark.stack.dbt import environment

    e = user
    e.src_exec("create table orders (id int primary key)")
    assert e.cli("source", "add", "appb", "--url", e.src).returncode == 0
    kept = [dg.AssetKey(["shop", "orders"]), dg.AssetKey(["live", "appb"]),
            dg.AssetKey(["appb", "orders", "x"])]
    gone = [dg.AssetKey(["appb", "orders"]), dg.AssetKey(["appb", "customers"])]
    with environment({"TIDEMARK_HOME": e.env["TIDEMARK_HOME"]}):
        home = prepare_dagster_home(load_settings())
    with environment({"DAGSTER_HOME": str(home)}):
        instance = dg.DagsterInstance.get()
        for key in kept + gone:
            instance.report_runless_asset_event(dg.AssetObservation(asset_key=key))
        instance.dispose()
    out = e.cli("source", "remove", "appb")
    assert out.returncode == 0, out.stderr
    assert "wiped from Dagster's catalog: 2 assets of appb (appb/customers, appb/orders)" \
        in " ".join(out.stdout.split()), out.stdout
    with environment({"DAGSTER_HOME": str(home)}):
        instance = dg.DagsterInstance.get()
        left = set(instance.all_asset_keys())
        instance.dispose()
    assert left == set(kept)
