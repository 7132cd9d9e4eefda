"""``tidemark status`` for a user with only their own database (README, "Your own database"): no
``tidemark up``, no demo. It describes what the user registered and deployed: their source, not
the demo's ``shop`` (never registered), no watermarks of the demo's tables, and no freshness
promise judged on the shipped view files, none of them deployed (it said "freshness promise:
MISSED (7 missed ...)")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up
from streaming_views.deploy import deploy
from tests.support import create_database
from tidemark.stack.embedded import EmbeddedServer


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def own(pg: EmbeddedServer, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The user's database ``mydb`` (registered, ingested once), an empty demo database (as the
    embedded server has one whether or not the demo ever ran), the landing database."""
    names = ("own_src", "own_demo", "own_land")
    src, demo, land = (create_database(pg, n) for n in names)
    # none of the session's settings (the orchestration tests' TIDEMARK_DBT_TARGET_PATH made
    # this user's status find their manifest and its marts when run after them)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMARK_")}
    env = {**clean, "TIDEMARK_SOURCE_URL": demo, "TIDEMARK_LANDING_URL": land,
           "TIDEMARK_HOME": str(tmp_path / "home"), "COLUMNS": "300"}
    yield src, land, env
    with psycopg.connect(src, autocommit=True) as conn:
        for (slot,) in conn.execute("select slot_name from pg_replication_slots where database"
                                    " = current_database()").fetchall():
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        for db in names:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(db)))


def test_status_of_a_user_with_only_their_own_database(own) -> None:
    src, land, env = own
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("create table accounts (id int primary key, balance int)")
        conn.execute("insert into accounts select g, g from generate_series(1, 100) g")
    out = _cli(env, "source", "add", "mydb", "--url", src)
    assert out.returncode == 0, out.stderr
    catch_up(src, land, "mydb")

    out = _cli(env, "status", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    shown = [row["source"] for row in [summary["ingestion"], *summary["sources"]]
             if isinstance(row, dict) and "source" in row]
    assert shown == ["mydb"], shown  # shop was never registered
    assert summary["watermarks"] == []  # the demo's tables are not the user's
    # the shipped view files are the demo's, not the user's: none listed (it listed the 7 of
    # them as "not deployed")
    assert summary["freshness"] == [], summary["freshness"]
    slo = summary["slo"]
    assert not [p for p in slo["promises"] if p["promise"].startswith("live.")]
    assert slo["verdict"] != "missed", slo
    assert [p["promise"] for p in slo["promises"]] == ["ingestion lag of mydb"]
    # no dbt here (never parsed nor built): not the shipped project's pairs and "no manifest"
    assert summary["dbt"]["built"] is False and "not built here" in summary["dbt"]["advice"]
    assert summary["finality"] == [] and summary["reconciliation"] == []

    human = _cli(env, "status")
    assert human.returncode == 0, human.stderr
    assert "MISSED" not in human.stdout and "shop" not in human.stdout, human.stdout
    assert "mydb" in human.stdout
    assert "are not deployed" not in human.stdout and "not deployed" not in human.stdout
    assert "live view freshness: none (no live view deployed" in human.stdout, human.stdout
    assert "(0 missed, 0 at risk, 1 promise)" in " ".join(human.stdout.split()), human.stdout
    assert "dbt: not built here" in human.stdout, human.stdout
    for shipped in ("reconciliation (", "finality,", "fct_daily_store_revenue", "no dbt manifest",
                    "changed since the last parse"):
        assert shipped not in human.stdout, (shipped, human.stdout)

    page = _cli(env, "status", "--slo")
    assert page.returncode == 0, page.stderr
    assert "MISSED" not in page.stdout and "live." not in page.stdout, page.stdout
    assert "ingestion lag of mydb" in page.stdout


def test_the_dagster_freshness_check_of_a_view_not_deployed_warns_it_is_not_deployed(
        own) -> None:
    """The ``freshness_slo`` check judged the view file: ERROR "source shop has not landed any
    transaction yet" for a view that does not exist. Not deployed is said as such (WARN)."""
    import dagster as dg

    from orchestration.defs.live_views.checks import freshness_evaluation
    from streaming_views.viewfile import load_views
    from tidemark.settings import Settings
    from tidemark.slo.freshness import evaluate

    _, land, _ = own
    files = load_views(Settings().views_dir)
    states = evaluate(land, files, default_objective="p95 2s", window_s=60, heartbeat_s=1)
    assert len(states) == len(files) > 0
    for f in states:
        e = freshness_evaluation(f)
        assert not e.passed and e.severity == dg.AssetCheckSeverity.WARN, e.description
        assert "is not deployed" in e.description and "landed" not in e.description


def test_status_answers_busy_for_a_locked_live_view_and_mart(own, tmp_path: Path) -> None:
    """A live view or a mart locked ACCESS EXCLUSIVE (a redeploy's swap, a dbt model's swap):
    b38 gave the per-table landing reads a ``lock_timeout`` and a "busy" answer, but the live
    views' row counts and the marts' days had none, and status waited for the lock's
    transaction (on main: past the subprocess timeout). It answers "busy: ..." naming who
    holds the lock."""
    src, land, env = own
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("create table accounts (id int primary key, balance int)")
        conn.execute("insert into accounts select g, g from generate_series(1, 100) g")
    assert _cli(env, "source", "add", "mydb", "--url", src).returncode == 0
    catch_up(src, land, "mydb")
    views = tmp_path / "views"
    views.mkdir()
    (views / "balances.sql").write_text("select id, sum(balance) as total from mydb.accounts"
                                        " group by id\n")
    deploy(land, views)
    env = {**env, "TIDEMARK_VIEWS_DIR": str(views)}
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute("create schema if not exists marts")
        conn.execute("create table marts.fct_daily_balances (balance_date date, total int)")
        conn.execute("insert into marts.fct_daily_balances values ('2026-12-01', 5)")
    with psycopg.connect(land) as holder:  # a redeploy's swap, a dbt model's swap
        holder.execute("lock table live.balances, marts.fct_daily_balances"
                       " in access exclusive mode")
        out = _cli(env, "status", "--json")
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        [view] = summary["live_views"]
        assert view["name"] == "balances" and view["rows"] is None
        assert view["status"] == "busy", view
        assert view["busy"].startswith("busy: live.balances is locked by"), view
        assert str(holder.info.backend_pid) in view["busy"]
        [mart] = summary["batch"]
        assert mart["mart"] == "fct_daily_balances" and mart["days"] is None
        assert mart["busy"].startswith("busy: marts.fct_daily_balances is locked by"), mart
        human = _cli(env, "status")
        assert human.returncode == 0, human.stderr
        assert "busy: live.balances" in human.stdout, human.stdout
        assert "busy: marts.fct_daily_balances" in human.stdout, human.stdout
        holder.rollback()
    summary = json.loads(_cli(env, "status", "--json").stdout)
    assert summary["live_views"][0]["rows"] == 100 and summary["batch"][0]["days"] == 1
