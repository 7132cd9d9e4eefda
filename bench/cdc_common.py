"""Shared set-up of the CDC benchmarks: a private embedded PostgreSQL in a temporary directory."""

from __future__ import annotations

import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from tidemark.settings import Settings
from tidemark.stack.embedded import EmbeddedServer

# Same durability settings as the test server: the benchmark measures Tidemark, not the disk.
BENCH_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bench_cluster(extra_conf: dict[str, str] | None = None
                  ) -> Iterator[tuple[str, str, EmbeddedServer]]:
    """Start a throw-away server (:data:`BENCH_CONF` plus ``extra_conf``) with databases ``src``
    and ``land``; yield their superuser URLs and the server.

    SIGTERM (a ``timeout``, a ``kill``) ends the bench through its ``finally``, so the server
    stops with it: before, a killed bench left its server running.
    """
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with _cluster(extra_conf) as yielded:
            yield yielded
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _cluster(extra_conf: dict[str, str] | None) -> Iterator[tuple[str, str, EmbeddedServer]]:
    with tempfile.TemporaryDirectory(prefix="tidemark-bench-") as home:
        Path(home).chmod(0o755)
        server = EmbeddedServer(Settings(home=Path(home), port=_free_port(), source_url=None,
                                         landing_url=None),
                                extra_conf={**BENCH_CONF, **(extra_conf or {})})
        server.start()
        try:
            with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
                for db in ("src", "land"):
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(db)))
            yield server.admin_url("src"), server.admin_url("land"), server
        finally:
            server.stop()


@contextmanager
def bench_server() -> Iterator[tuple[str, str]]:
    """Start a throw-away server with databases ``src`` and ``land``; yield their URLs."""
    with bench_cluster() as (src, land, _):
        yield src, land
