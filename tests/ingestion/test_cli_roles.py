"""Least privilege (stream as tidemark_ingest, write as tidemark_app) and the CLI commands
`tidemark ingest status|resync` and `tidemark dlq list|show|replay` on real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from ingestion import catch_up
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tidemark.settings import APP_ROLE, INGEST_ROLE
from tidemark.stack.bootstrap import grant_landing, grant_source


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def cli(p: Pair, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_SOURCE_URL": p.src, "TIDEMARK_LANDING_URL": p.land}
    return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_least_privilege_roles_and_cli(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, v text)", "insert into t values (1, 'a')")
    grant_source(pair.src)
    grant_landing(pair.land)
    ingest_url, app_url = as_role(pair.src, INGEST_ROLE), as_role(pair.land, APP_ROLE)
    catch_up(ingest_url, app_url, pair.source, setup_dsn=pair.src)
    pair.src_exec("insert into t values (2, 'b')", "update t set v = 'c' where id = 1")
    stats = catch_up(ingest_url, app_url, pair.source, setup_dsn=pair.src)
    assert stats.changes == 2
    assert_mirror_equals(pair, "t")
    with psycopg.connect(pair.land) as conn:
        owner = conn.execute("select tableowner from pg_tables where schemaname = %s",
                             (pair.source,)).fetchone()[0]
    assert owner == APP_ROLE

    out = cli(pair, "source", "add", pair.source, "--url", ingest_url, "--admin-url", pair.src)
    assert out.returncode == 0, out.stderr
    out = cli(pair, "ingest", "status", "--source", pair.source, "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["slot"] == f"tidemark_{pair.source}" and payload["slot_exists"]
    assert payload["tables"] == 1 and payload["dead_letters"] == 0

    out = cli(pair, "dlq", "list", "--source", pair.source, "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    out = cli(pair, "dlq", "show", "999999")
    assert out.returncode == 2 and "No dead letter with id 999999" in out.stderr
    out = cli(pair, "ingest", "resync", "nope", "--source", pair.source, "--no-contracts")
    assert out.returncode == 2 and "'nope' is not replicated" in out.stderr
    out = cli(pair, "ingest", "resync", "t", "--source", pair.source, "--no-contracts")
    assert out.returncode == 0, out.stderr
    assert_mirror_equals(pair, "t")
