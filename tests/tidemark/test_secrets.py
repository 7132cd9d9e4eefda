"""No password reaches an output or a file of ``TIDEMARK_HOME``: the read-only commands run
against a real server with the password in each form a user gives it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tidemark.stack.embedded import EmbeddedServer

TIDEMARK = shutil.which("tidemark")
MARK = "Sekr3tMark"
ROLE = "secrets_admin"  # a superuser whose password the test sets to the form's
COMMANDS = (("status", "--json"), ("ingest", "status"), ("source", "list"), ("db", "url"),
            ("db", "status", "--json"))


def _forms(url: str) -> dict[str, str]:
    """The session server's URL of this module's database, with a password three ways."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    base = f"{parts.scheme}://{ROLE}{{pw}}@{host}{parts.path}?sslmode=disable"
    return {"netloc": base.format(pw=f":{MARK}1"),
            "query": base.format(pw="") + f"&password={MARK}2",
            "unreadable": base.format(pw="") + f"&password=%zz{MARK}3"}


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
@pytest.mark.parametrize("form", ["netloc", "query", "unreadable"])
def test_no_command_prints_or_writes_the_password(pg: EmbeddedServer, module_db: str,
                                                  tmp_path: Path, form: str) -> None:
    # On main `db url` and `db status` printed the query form, every command the unreadable
    # one (libpq's 'invalid percent-encoded token: "%zz..."', also into cli-error.log).
    url = _forms(module_db)[form]
    with psycopg.connect(module_db, autocommit=True) as conn:  # the form's password logs in
        if not conn.execute("select 1 from pg_roles where rolname = %s", (ROLE,)).fetchone():
            conn.execute(sql.SQL("create role {} login superuser").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("alter role {} password {}").format(
            sql.Identifier(ROLE), sql.Literal(f"{MARK}{form == 'query' and 2 or 1}")))
    env = {**os.environ, "TIDEMARK_HOME": str(tmp_path / "home"),
           "TIDEMARK_SOURCE_URL": url, "TIDEMARK_LANDING_URL": url,
           "TIDEMARK_SOURCE_MYDB_PASSWORD": f"{MARK}4", "PGPASSWORD": f"{MARK}5"}
    for command in COMMANDS:
        done = subprocess.run([TIDEMARK, *command], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert MARK not in done.stdout + done.stderr, (command, done.stdout, done.stderr)
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert MARK not in path.read_text(errors="replace"), path
