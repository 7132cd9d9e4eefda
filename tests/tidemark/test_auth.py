"""The embedded server asks every connection for its role's password (no ``trust``): another
local user cannot become its superuser, the passwords stay in the home's 0600 pgpass file and
in no output, and a home made when the server trusted loopback is upgraded on its next start."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import TEST_CONF, free_port
from tidemark.errors import DatabaseStartError
from tidemark.settings import ADMIN_USER, APP_ROLE, INGEST_ROLE, READER_ROLE, Settings
from tidemark.stack.bootstrap import ensure_roles
from tidemark.stack.credentials import ROLES, ensure_passfile, read_passwords
from tidemark.stack.embedded import EmbeddedServer, server_binary

TIDEMARK = shutil.which("tidemark")
# main's pg_hba.conf: every loopback connection trusted
TRUST_HBA = ("# Written by Tidemark: the embedded server listens on 127.0.0.1 only.\n"
             "host all all 127.0.0.1/32 trust\n"
             "host replication all 127.0.0.1/32 trust\n")


def _server(home: Path) -> EmbeddedServer:
    return EmbeddedServer(Settings(home=home, port=free_port(), source_url=None,
                                   landing_url=None), extra_conf=TEST_CONF)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = _server(tmp_path_factory.mktemp("auth") / "home")
    srv.start()
    ensure_roles(srv.admin_url("postgres"))
    yield srv
    srv.stop()


def _bare(server: EmbeddedServer, user: str, **params: str) -> str:
    """A URL of the server naming no pgpass file (``params``: e.g. a password)."""
    query = "".join(f"&{key}={value}" for key, value in params.items())
    return f"postgresql://{user}@127.0.0.1:{server.port}/postgres?sslmode=disable{query}"


def _refused(url: str, **kwargs: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(url, connect_timeout=5, **kwargs).close()
    return str(caught.value)


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.mark.parametrize("role", [ADMIN_USER, APP_ROLE, INGEST_ROLE, READER_ROLE])
def test_every_role_needs_its_password(server: EmbeddedServer, role: str) -> None:
    # On main the server trusted 127.0.0.1: any local user logged in as any role, postgres too.
    assert "password" in _refused(_bare(server, role))
    assert "password authentication failed" in _refused(_bare(server, role, password="guess"))
    with psycopg.connect(server.url("postgres", role)) as conn:
        assert conn.execute("select current_user").fetchone()[0] == role


def test_replication_needs_the_password(server: EmbeddedServer) -> None:
    assert "password" in _refused(_bare(server, INGEST_ROLE), replication="database")
    with psycopg.connect(server.url("postgres", INGEST_ROLE), replication="database",
                         autocommit=True) as conn:
        assert conn.execute("IDENTIFY_SYSTEM").fetchone()[0]


def test_another_os_user_is_refused(server: EmbeddedServer) -> None:
    # `nobody` is on every Debian machine (a user made by hand, alice, was not on a fresh one:
    # the test skipped there, CI included)
    pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another OS user")
    psql = str(server_binary("psql"))
    tries = {"no password": _bare(server, ADMIN_USER),
             "the owner's pgpass": server.admin_url("postgres")}  # nobody cannot read it
    for what, url in tries.items():
        done = subprocess.run([psql, url, "-w", "-Atc", "select 1"], user="nobody",
                              env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode != 0 and done.stdout == "", (what, done.stdout, done.stderr)
        # refused for want of the password (not a psql that could not start at all)
        assert "password" in done.stderr, (what, done.stderr)


def test_passfile_is_the_owners_only(server: EmbeddedServer) -> None:
    mode = server.passfile.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.geteuid()
    passwords = read_passwords(server.passfile)
    assert set(passwords) == set(ROLES) and len(set(passwords.values())) == len(ROLES)
    assert all(len(p) >= 32 for p in passwords.values())
    # the server never received a password: not in its files or logs, only SCRAM verifiers
    with psycopg.connect(server.admin_url("postgres")) as conn:
        stored = dict(conn.execute("select rolname, rolpassword from pg_authid").fetchall())
    for role, password in passwords.items():
        assert stored[role].startswith("SCRAM-SHA-256$") and password not in stored[role]
    for path in [*server.settings.log_dir.rglob("*"), server.pgdata / "pg_hba.conf",
                 server.pgdata / "tidemark.conf"]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(p in text for p in passwords.values()), path


def test_a_passfile_others_can_read_is_replaced(tmp_path: Path) -> None:
    first, _ = ensure_passfile(tmp_path)
    assert ensure_passfile(tmp_path) == (first, set())
    (tmp_path / "pgpass").chmod(0o644)
    second, new = ensure_passfile(tmp_path)
    assert new == set(ROLES) and not set(first.values()) & set(second.values())
    assert stat.S_IMODE((tmp_path / "pgpass").stat().st_mode) == 0o600


def _trusting_home(home: Path) -> EmbeddedServer:
    """A stopped server whose home is one main made: trust, no password, no pgpass."""
    server = _server(home)
    server.start()
    ensure_roles(server.admin_url("postgres"))
    with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
        for role in ROLES:
            conn.execute(f"alter role {role} password null")
    server.stop()
    (server.pgdata / "pg_hba.conf").write_text(TRUST_HBA)
    server.passfile.unlink()
    return server


def test_a_trusting_home_is_upgraded_on_start(tmp_path: Path) -> None:
    server = _trusting_home(tmp_path / "home")
    try:
        assert server.start() is True
        assert "password" in _refused(_bare(server, ADMIN_USER))
        assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
        ensure_roles(server.admin_url("postgres"))  # what `tidemark up` does next
        for role in ROLES:
            with psycopg.connect(server.url("postgres", role)):
                pass
    finally:
        server.stop()


def test_a_trusting_server_still_running_is_upgraded(tmp_path: Path) -> None:
    # `tidemark up` of the new version while the old one's server runs (trusting loopback)
    server = _trusting_home(tmp_path / "home")
    server._pg_ctl(["-l", str(server.log_file), "-w", "start"], 70, "start")  # as main did
    try:
        with psycopg.connect(_bare(server, ADMIN_USER)):
            pass  # trusted, as on main
        assert server.start() is False
        assert "password" in _refused(_bare(server, ADMIN_USER))
        with psycopg.connect(server.admin_url("postgres")):
            pass
    finally:
        server.stop()


def test_a_pgpass_lost_while_running_is_named_and_a_restart_recovers(tmp_path: Path) -> None:
    server = _server(tmp_path / "home")
    server.start()
    try:
        server.passfile.unlink()
        ensure_passfile(server.settings.home)  # new passwords the server does not know
        started = time.monotonic()
        with pytest.raises(DatabaseStartError, match="refuses the admin password.*db stop"):
            server.start()
        # at once: well under the 60 s start timeout it would otherwise wait out (a loaded CI
        # machine takes seconds for what is instant on a quiet one)
        assert time.monotonic() - started < 30, "said at once, not after the start timeout"
        server.stop()
        assert server.start() is True
        with psycopg.connect(server.admin_url("postgres")):
            pass
    finally:
        server.stop()


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_no_command_shows_a_password(server: EmbeddedServer, tmp_path: Path) -> None:
    env = {**os.environ, "TIDEMARK_HOME": str(server.settings.home),
           "TIDEMARK_PG_PORT": str(server.port)}
    for name in ("TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL", "PGPASSFILE"):
        env.pop(name, None)
    passwords = read_passwords(server.passfile).values()
    commands = {("db", "start", "--json"): 0, ("db", "status", "--json"): 0, ("db", "url"): 0,
                ("db", "url", "--database", "landing"): 0, ("status", "--json"): None,
                ("db", "psql", "-c", "select current_user"): 0,
                ("db", "psql", "-c", "select * from no_such_table"): 1}
    for command, code in commands.items():
        done = subprocess.run([TIDEMARK, *command], env=env, capture_output=True, text=True,
                              timeout=180, check=False)
        output = done.stdout + done.stderr
        assert code is None or done.returncode == code, (command, output)
        assert not any(p in output for p in passwords), command
    assert "postgres" in subprocess.run([TIDEMARK, "db", "psql", "-c", "select current_user"],
                                        env=env, capture_output=True, text=True).stdout
