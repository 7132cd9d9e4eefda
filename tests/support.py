"""Plain helpers for tests (no fixtures): free ports, fresh databases, test server settings."""

from __future__ import annotations

import socket

import psycopg
from psycopg import sql

from orchestration.stack.bootstrap import ensure_database
from orchestration.stack.embedded import EmbeddedServer

TEST_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(pg: EmbeddedServer, name: str) -> str:
    """Drop and create database ``name`` on the session server; return its superuser URL."""
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        drop = sql.SQL("drop database if exists {} with (force)")
        conn.execute(drop.format(sql.Identifier(name)))
    ensure_database(pg.admin_url("postgres"), name)
    return pg.admin_url(name)
