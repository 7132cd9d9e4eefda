"""``tidemark ingest status`` and ``tidemark dlq list`` on the embedded server answer while
ingestion's landing transaction holds a schema change (round 38, b38).

On main both re-ran the server's bootstrap, whose ``GRANT select on all tables in schema cdc``
rewrites every changelog's catalog row: it waited for the landing transaction that had altered
one (a followed ``add column ... default``: 82 s at 10 M rows), then failed with "tuple
concurrently updated" (``dlq list``). Here the transaction stays open until both commands
returned; on main they wait for it past the subprocess timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up
from ingestion.names import slot_name
from ingestion.sources import SourceSpec, save_source
from tests.support import start_test_server
from tidemark.settings import APP_ROLE, LANDING_DB
from tidemark.stack.bootstrap import bootstrap_embedded

SOURCE = "appsrc"


@pytest.fixture
def stack(tmp_path: Path):
    server = start_test_server(tmp_path / "home")
    try:
        bootstrap_embedded(server.admin_url)
        with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f"create database {SOURCE}")
        yield server
        with psycopg.connect(server.admin_url(SOURCE), autocommit=True) as conn:
            conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots"
                         " where slot_name = %s and not active", (slot_name(SOURCE),))
    finally:
        server.stop()


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_HOME": str(server.settings.home),
           "TIDEMARK_PG_PORT": str(server.port)}
    for name in ("TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL", "PGPASSFILE"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_ingest_status_and_dlq_list_answer_during_a_landing_schema_change(stack) -> None:
    src, land = stack.admin_url(SOURCE), stack.admin_url(LANDING_DB)
    app = stack.settings.embedded_url(LANDING_DB, APP_ROLE)  # the role the CLI reads as
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("create table t (id int primary key, v text)")
        conn.execute("insert into t select g, 'x' from generate_series(1, 20) g")
    save_source(app, SourceSpec(SOURCE, url=src))
    catch_up(src, app, SOURCE)
    with psycopg.connect(land) as holder:  # as ingestion's transaction for `add column`
        holder.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"tidemark:ingest:{SOURCE}",))
        holder.execute(f"alter table cdc.{SOURCE}__t add column note text default 'n/a'")
        holder.execute(f"alter table {SOURCE}.t add column note text default 'n/a'")

        out = _cli(stack, "ingest", "status", "--source", SOURCE, "--json")
        assert out.returncode == 0, out.stderr
        payload = json.loads(out.stdout)
        assert payload["tables"] == 1 and payload["dead_letters"] == 0
        out = _cli(stack, "dlq", "list", "--source", SOURCE, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []
        # the landing transaction was open all along: nothing above waited for it to end
        assert holder.execute("select count(*) from pg_locks where pid = pg_backend_pid()"
                              " and mode = 'AccessExclusiveLock' and relation is not null"
                              ).fetchone()[0] >= 2
        holder.rollback()
