"""Tidemark's own sessions start with pinned settings, whatever the user's environment and
server defaults say (:mod:`tidemark.session_env`)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from tests.support import create_database
from tidemark.session_env import (
    SESSION_SETTINGS,
    pin_session_environment,
    session_options,
    unpinned,
)


def test_pin_replaces_the_variables_that_change_a_session() -> None:
    env = {"PGDATESTYLE": "German", "PGTZ": "Asia/Kolkata", "PGGEQO": "off",
           "PGOPTIONS": "-c statement_timeout=1s", "PGHOST": "db.example", "PATH": "/bin"}
    assert sorted(pin_session_environment(env)) == ["PGDATESTYLE", "PGGEQO", "PGOPTIONS", "PGTZ"]
    assert env == {"PGOPTIONS": session_options(), "PGHOST": "db.example", "PATH": "/bin"}
    assert pin_session_environment(env) == []  # pinning twice changes nothing


def test_materialize_urls_keep_only_their_own_options() -> None:
    assert "options=''" in unpinned("postgresql://u@mz:6875/materialize")
    assert "options=--cluster=quickstart" in unpinned(
        "postgresql://u@mz:6875/materialize?options=--cluster%3Dquickstart")


def test_pinned_settings_win_over_database_defaults_and_environment(pg) -> None:
    url = create_database(pg, "session_env_hostile")
    with psycopg.connect(url, autocommit=True) as conn:
        db = sql.Identifier(conn.execute("select current_database()").fetchone()[0])
        for name, value in (("DateStyle", "SQL, DMY"), ("TimeZone", "Asia/Kolkata"),
                            ("extra_float_digits", "-15"), ("statement_timeout", "1ms"),
                            ("default_transaction_isolation", "serializable"),
                            ("lc_monetary", "C"), ("IntervalStyle", "iso_8601")):
            conn.execute(sql.SQL("alter database {} set {} = {}").format(
                db, sql.Identifier(name), sql.Literal(value)))
    # In a child process, as the CLI and the Dagster code location run: the user's variables
    # are set, then the process pins them at start.
    script = (
        "import json, sys, psycopg\n"
        "from tidemark.session_env import pin_session_environment, SESSION_SETTINGS\n"
        "pin_session_environment()\n"
        "with psycopg.connect(sys.argv[1]) as conn:\n"
        "    conn.execute('select now(), pg_sleep(0.01)').fetchone()\n"
        "    print(json.dumps({n: conn.execute(f'show {n}').fetchone()[0]"
        " for n in SESSION_SETTINGS}))\n")
    env = {"PATH": "/usr/bin:/bin", "PGDATESTYLE": "German", "PGTZ": "America/Los_Angeles",
           "PGOPTIONS": "-c extra_float_digits=0", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert json.loads(out) == SESSION_SETTINGS


@pytest.mark.parametrize("name", sorted(SESSION_SETTINGS))
def test_every_pinned_setting_is_known_to_the_server(pg, name: str) -> None:
    # An unknown name in PGOPTIONS would refuse every connection.
    with psycopg.connect(pg.admin_url("postgres")) as conn:
        assert conn.execute("select count(*) from pg_settings where lower(name) = lower(%s)",
                            (name,)).fetchone()[0] == 1
