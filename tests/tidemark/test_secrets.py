"""No password reaches an output or a file of ``TIDEMARK_HOME``: the read-only commands run
against a real server with the password in each form a user gives it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tidemark.stack.embedded import EmbeddedServer

TIDEMARK = shutil.which("tidemark")
MARK = "Sekr3tMark"
COMMANDS = (("status", "--json"), ("ingest", "status"), ("source", "list"), ("db", "url"),
            ("db", "status", "--json"))


def _forms(url: str) -> dict[str, str]:
    """The session server's URL of this module's database, with a password three ways."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    base = f"{parts.scheme}://postgres{{pw}}@{host}{parts.path}?sslmode=disable"
    return {"netloc": base.format(pw=f":{MARK}1"),
            "query": base.format(pw="") + f"&password={MARK}2",
            "unreadable": base.format(pw="") + f"&password=%zz{MARK}3"}


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
@pytest.mark.parametrize("form", ["netloc", "query", "unreadable"])
def test_no_command_prints_or_writes_the_password(pg: EmbeddedServer, module_db: str,
                                                  tmp_path: Path, form: str) -> None:
    # On main `db url` and `db status` printed the query form, every command the unreadable
    # one (libpq's 'invalid percent-encoded token: "%zz..."', also into cli-error.log).
    url = _forms(module_db)[form]  # the server trusts loopback: any password logs in
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
