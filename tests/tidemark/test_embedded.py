"""The embedded PostgreSQL manager: start, stop, idempotence, crash recovery, port conflicts."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psycopg
import pytest

from tests.support import TEST_CONF, free_port
from tidemark.errors import DatabaseNotRunningError, PortInUseError
from tidemark.settings import Settings
from tidemark.stack.embedded import EmbeddedServer


@pytest.fixture
def server(tmp_path: Path):
    srv = EmbeddedServer(Settings(home=tmp_path / "home", port=free_port(), source_url=None,
                                  landing_url=None), extra_conf=TEST_CONF)
    yield srv
    srv.stop()


def _show(server: EmbeddedServer, setting: str) -> str:
    with psycopg.connect(server.admin_url("postgres")) as conn:
        return conn.execute(f"show {setting}").fetchone()[0]


def test_start_configures_logical_replication_on_loopback(server: EmbeddedServer) -> None:
    assert server.start() is True
    assert server.is_running()
    assert _show(server, "wal_level") == "logical"
    assert int(_show(server, "max_replication_slots")) >= 10
    assert int(_show(server, "max_wal_senders")) >= 10
    assert _show(server, "listen_addresses") == "127.0.0.1"
    assert server.log_file.exists()


def test_no_secret_of_the_caller_reaches_the_server(server: EmbeddedServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A superuser can read the postmaster's environment (and the server trusted loopback, so
    # any local user was one); on main it held every secret of the shell that started it.
    for name in ("TIDEMARK_SOURCE_MYDB_PASSWORD", "PGPASSWORD", "TIDEMARK_LANDING_URL"):
        monkeypatch.setenv(name, f"Sekr3t-{name}")
    monkeypatch.setenv("LC_MESSAGES", "C")
    server.start()
    with psycopg.connect(server.admin_url("postgres")) as conn:
        environ = conn.execute("select pg_read_binary_file('/proc/' || %s || '/environ')",
                               (str(server.status().pid),)).fetchone()[0]
    assert b"Sekr3t" not in environ
    assert b"PATH=" in environ and b"LC_MESSAGES=C" in environ


def test_every_connection_needs_a_password(server: EmbeddedServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # main's pg_hba.conf trusted 127.0.0.1: any local OS user logged in as the superuser.
    server.start()
    with psycopg.connect(server.admin_url("postgres")) as conn:
        rules = conn.execute("select type, auth_method from pg_hba_file_rules").fetchall()
    assert rules and all(method == "scram-sha-256" for _, method in rules), rules
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    bare = f"postgresql://postgres@127.0.0.1:{server.port}/postgres?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(bare, connect_timeout=5)


def test_start_twice_is_harmless(server: EmbeddedServer) -> None:
    assert server.start() is True
    pid = server.status().pid
    assert server.start() is False
    assert server.status().pid == pid


def test_stop_is_clean_and_idempotent(server: EmbeddedServer) -> None:
    server.start()
    assert server.stop() is True
    assert not server.is_running()
    assert not (server.pgdata / "postmaster.pid").exists()
    assert server.stop() is False
    with pytest.raises(DatabaseNotRunningError, match="tidemark db start"):
        server.require_running()


def test_data_survives_restart(server: EmbeddedServer) -> None:
    server.start()
    with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
        conn.execute("create table kept (x int)")
        conn.execute("insert into kept values (42)")
    server.stop()
    server.start()
    with psycopg.connect(server.admin_url("postgres")) as conn:
        assert conn.execute("select x from kept").fetchone() == (42,)


def test_stale_pid_file_after_crash_is_recovered(server: EmbeddedServer) -> None:
    server.start()
    pid = server.status().pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (server.pgdata / "postmaster.pid").exists(), "a crash leaves the pid file behind"
    assert server.start() is True
    assert server.is_running()


def test_pid_file_naming_another_live_process_is_recovered(server: EmbeddedServer) -> None:
    server.start()
    server.stop()
    # A pid that is alive but is not a postgres (this very test process), as after a reboot
    # when the old postmaster's pid has been reused.
    (server.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{server.pgdata}\n")
    assert server.start() is True
    assert server.is_running()


def test_port_taken_gives_a_clear_error(server: EmbeddedServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", server.port))
        blocker.listen()
        with pytest.raises(PortInUseError) as info:
            server.start()
    message = str(info.value)
    assert str(server.port) in message
    assert "TIDEMARK_PG_PORT" in message
    assert not server.is_running()
