"""Shared fixtures: one real embedded PostgreSQL for the whole test session.

``pg`` is the session server (a temporary ``TIDEMARK_HOME``, a free port, fsync off for speed).
``module_db`` gives each test module its own fresh database on it, named after the module.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from orchestration.stack.bootstrap import ensure_database, ensure_roles
from orchestration.stack.embedded import EmbeddedServer
from orchestration.stack.settings import Settings

TEST_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The session's embedded PostgreSQL server, with the Tidemark roles."""
    home = tmp_path_factory.mktemp("tidemark-home")
    server = EmbeddedServer(Settings(home=home, port=free_port(), source_url=None,
                                     landing_url=None), extra_conf=TEST_CONF)
    server.start()
    ensure_roles(server.admin_url("postgres"))
    yield server
    server.stop()


def create_database(pg: EmbeddedServer, name: str) -> str:
    """Drop and create database ``name`` on the session server; return its superuser URL."""
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    ensure_database(pg.admin_url("postgres"), name)
    return pg.admin_url(name)


@pytest.fixture(scope="module")
def module_db(pg: EmbeddedServer, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test module; returns its superuser URL."""
    name = re.sub(r"[^a-z0-9_]", "_", Path(request.module.__file__).stem.lower())[:60]
    return create_database(pg, name)
