"""Plain helpers for tests (no fixtures): free ports, fresh databases, test server settings,
the user's own contracted tables on a seeded demo source."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from contracts import ContractSet
from tests.pgversions import require
from tidemark.demo import schema as demo_schema
from tidemark.settings import ADMIN_USER, PASSFILE, Settings, embedded_server_url
from tidemark.stack.bootstrap import ensure_roles
from tidemark.stack.credentials import password_statement, read_passwords
from tidemark.stack.embedded import EmbeddedServer

TEST_CONF = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
             "max_prepared_transactions": "10"}
FEW_LOCKS_CONF = {"max_locks_per_transaction": "10", "max_connections": "20",
                  "max_prepared_transactions": "0", "max_wal_senders": "2",
                  "max_replication_slots": "2"}
"""A server whose lock table holds a few hundred locks: what fails with "out of shared memory"
at a few thousand tables on a default server fails here at a few hundred."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_url(home: Path, port: int, database: str, user: str = ADMIN_USER) -> str:
    """The URL ``tidemark`` gives ``database`` of the embedded server of ``home`` as ``user``
    (the password in the home's pgpass file, which the URL names)."""
    return embedded_server_url(port, database, user, home / PASSFILE)


def give_password(admin_url: str, role: str) -> None:
    """Let ``role`` (made by a test) log in: a password set, and kept in the pgpass file that
    ``admin_url`` (an embedded server's URL) names, where every URL of that server finds it.

    The embedded server asks every role for a password; the test roles' URLs are the admin's
    with another user, so they name the same file.
    """
    passfile = Path(conninfo_to_dict(admin_url)["passfile"])
    password = secrets.token_urlsafe(24)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(password_statement(role, password))
    kept = [line for line in passfile.read_text().splitlines()
            if line.split(":")[3:4] != [role]]
    passfile.write_text("\n".join([*kept, f"127.0.0.1:*:*:{role}:{password}"]) + "\n")


def other_database(url: str, database: str) -> str:
    """``url`` with another database (its query, e.g. the pgpass file, kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def create_database(pg: EmbeddedServer, name: str) -> str:
    """Drop and create database ``name`` on the session server; return its superuser URL."""
    return create_databases(pg, name)[0]


def create_databases(pg: EmbeddedServer, *names: str) -> list[str]:
    """Drop and create each database of ``names`` on one admin connection (a connection costs
    about as much as an empty database's creation); return their superuser URLs, in order."""
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        force = " with (force)" if conn.info.server_version >= 130000 else ""  # 13+
        for name in names:
            conn.execute(sql.SQL("drop database if exists {}" + force).format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return [pg.admin_url(name) for name in names]


def drop_databases(pg: EmbeddedServer, *urls: str) -> None:
    """Drop the databases of ``urls`` (``with (force)``) on one admin connection of ``pg``."""
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        for url in urls:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(conninfo_to_dict(url)["dbname"])))


def start_test_server(home: Path, roles: bool = True, major: int | None = None,
                      conf: dict[str, str] | None = None) -> EmbeddedServer:
    """Start an embedded server for tests in ``home`` (a free port, fsync off).

    Args:
        home: the server's TIDEMARK_HOME.
        roles: create the Tidemark roles (False: a brand-new cluster, as a container starts).
        major: the PostgreSQL major version to run (tests/pgversions.py; the test is skipped
            when it is not available here); None: the wheel's 18.
        conf: server settings beside :data:`TEST_CONF`.

    Replication slot names are cluster-wide: tests that keep a slot for a whole session take a
    server of their own from here rather than share the session server.
    """
    bin_dir = None if major is None else require(major)
    server = EmbeddedServer(Settings(home=home, port=free_port(), source_url=None,
                                     landing_url=None), extra_conf={**TEST_CONF, **(conf or {})},
                            bin_dir=bin_dir)
    server.start()
    if roles:
        ensure_roles(server.admin_url("postgres"))
    return server



def start_standby(primary: EmbeddedServer, home: Path,
                  conf: dict[str, str] | None = None) -> EmbeddedServer:
    """Start a streaming standby of ``primary`` in ``home``, on a port of its own.

    The primary stops for a moment: its data directory, shut down cleanly, is the standby's
    base (no base backup tool needed), with ``standby.signal`` and a ``primary_conninfo`` as
    the admin role. ``hot_standby_feedback`` is off unless ``conf`` says otherwise, so the
    primary's VACUUM may remove catalog rows a logical slot on the standby still needs.
    """
    primary.stop()
    try:
        shutil.copytree(primary.settings.home, home, symlinks=True,
                        ignore=shutil.ignore_patterns("logs", "postmaster.pid"))
    finally:
        primary.start()
    pgdata = home / "pgdata"
    owner = primary.pgdata.stat()
    (pgdata / "standby.signal").touch()
    for path in [pgdata, *pgdata.rglob("*")]:
        os.lchown(path, owner.st_uid, owner.st_gid)
    password = read_passwords(primary.passfile)[ADMIN_USER]
    standby_conf = {**TEST_CONF, "hot_standby_feedback": "off",
                    "primary_conninfo": f"'host=127.0.0.1 port={primary.port} user={ADMIN_USER}"
                                        f" password={password}'", **(conf or {})}
    server = EmbeddedServer(Settings(home=home, port=free_port(), source_url=None,
                                     landing_url=None), extra_conf=standby_conf,
                            bin_dir=primary.bin_dir)
    server.start()
    return server


def create_contracted_tables(source_url: str, contracts: ContractSet, source: str = "shop",
                             schema: str = "public") -> list[str]:
    """Create, empty, every contracted table of ``source`` that the seeded database lacks.

    The demo seeder creates the demo's tables only; tests that seed it and build the project
    need a user's own tables too (README "Extending"), as ``tidemark up`` creates them
    (:func:`tidemark.demo.schema.create_contracted_tables`). A table that cannot be created
    fails the test.

    Args:
        source_url: the seeded source database (a role that may create tables in ``schema``).
        contracts: the contracts (``contracts.load_contracts()``).
        source: the source name of the contracts to follow.
        schema: the source schema the demo seeds (``public``).

    Returns:
        The names of the tables created, sorted (none when the contracts are the demo's).
    """
    created, failed = demo_schema.create_contracted_tables(source_url, contracts.tables(source),
                                                           schema)
    assert not failed, failed
    return created


def await_ended_sessions(conn: psycopg.Connection, keep: Iterable[int] = (),
                         timeout_s: float = 120.0) -> None:
    """Wait until every other session of ``conn``'s database (but ``keep``) has ended.

    A session reports its statistics (``pg_stat_user_tables``, ``pg_stat_database``) as it
    exits, a moment after its client closed it, and leaves ``pg_stat_activity`` only after that
    report (PostgreSQL 15+): once the sessions a test's action opened are gone, the counters
    hold all they did. A fixed sleep instead is too short on a loaded machine.

    Args:
        conn: an autocommit connection to the database (its own session is not waited for).
        keep: pids of sessions the test holds open on purpose.
        timeout_s: how long to wait before failing, naming the sessions still there.

    Raises:
        AssertionError: sessions were still there after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = conn.execute(
            "select pid, backend_type, application_name, state from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and backend_type in ('client backend', 'walsender', 'parallel worker')"
            " and pid <> all(%s)", (list(keep),)).fetchall()
        if not left:
            conn.execute("select pg_stat_clear_snapshot()")
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions still open after {timeout_s:.0f} s: {left}")
        time.sleep(0.05)


def letter_heap_reads(url: str) -> int:
    """Heap pages of ``tidemark.dead_letters`` read so far (hits too), once every other session
    has ended (a session reports its reads as it exits): what a dead-letter read costs, whatever
    the machine's load."""
    with psycopg.connect(url, autocommit=True) as conn:
        await_ended_sessions(conn)
        return conn.execute("select heap_blks_read + heap_blks_hit from pg_statio_user_tables"
                            " where schemaname = 'tidemark' and relname = 'dead_letters'"
                            ).fetchone()[0]
