"""Tidemark's own sessions start with pinned settings, whatever the user's environment and
server defaults say (:mod:`tidemark.session_env`)."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from ingestion.session_settings import pinned_dsn
from tests.support import create_database
from tidemark.session_env import (
    SESSION_SETTINGS,
    pin_session_environment,
    pin_url,
    session_options,
    unpinned,
)
from tidemark.settings import load_settings
from tidemark.stack.databases import locate_databases


def test_pin_replaces_the_variables_that_change_a_session() -> None:
    env = {"PGDATESTYLE": "German", "PGTZ": "Asia/Kolkata", "PGGEQO": "off",
           "PGCLIENTENCODING": "LATIN1",
           "PGOPTIONS": "-c statement_timeout=1s", "PGHOST": "db.example", "PATH": "/bin"}
    assert sorted(pin_session_environment(env)) == ["PGCLIENTENCODING", "PGDATESTYLE", "PGGEQO",
                                                    "PGOPTIONS", "PGTZ"]
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


def test_a_url_with_its_own_options_keeps_them_and_stays_a_url() -> None:
    url = "postgresql://u:p%40ss@db.example:5433/land?sslmode=require&options=-c%20search_path%3Dx"
    pinned = pin_url(url)
    assert pinned.startswith("postgresql://u:p%40ss@db.example:5433/land?sslmode=require&")
    params = psycopg.conninfo.conninfo_to_dict(pinned)
    assert params["options"] == f"-c search_path=x {session_options()}"
    assert params["sslmode"] == "require" and params["password"] == "p@ss"
    assert pin_url(pinned) == pinned  # idempotent
    assert pin_url("postgresql://u@db/land") == "postgresql://u@db/land"  # PGOPTIONS reaches it
    assert pin_url(None) is None
    kv = pinned_dsn("host=db dbname=land options='-c search_path=x'")
    assert psycopg.conninfo.conninfo_to_dict(kv)["options"].endswith(session_options())


def test_a_landing_url_with_its_own_options_still_gets_the_pinned_settings(pg, monkeypatch) -> None:
    # libpq ignores PGOPTIONS for a URL that names `options`: before pin_url, the stack's landing
    # sessions on such a URL took the database's DateStyle and time zone (seen: 'SQL, DMY').
    url = create_database(pg, "session_env_own_options")
    with psycopg.connect(url, autocommit=True) as conn:
        db = sql.Identifier(conn.execute("select current_database()").fetchone()[0])
        conn.execute(sql.SQL("alter database {} set datestyle = 'SQL, DMY'").format(db))
        conn.execute(sql.SQL("alter database {} set timezone = 'Asia/Kolkata'").format(db))
    own = f"{url}{'&' if '?' in url else '?'}options={quote('-c application_name=mine')}"
    monkeypatch.setenv("TIDEMARK_LANDING_URL", own)
    monkeypatch.setenv("PGOPTIONS", session_options())
    dbs = locate_databases(load_settings())
    for dsn in (dbs.landing, dbs.landing_app):
        with psycopg.connect(dsn) as conn:
            shown = [conn.execute(f"show {n}").fetchone()[0]
                     for n in ("DateStyle", "TimeZone", "application_name")]
        assert shown == ["ISO, MDY", "UTC", "mine"]

