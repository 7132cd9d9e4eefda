"""Other session defaults on both servers (``ALTER DATABASE ... SET``: date and interval styles,
time zone, float digits, bytea output) and in the user's libpq environment (``PGDATESTYLE``,
``PGTZ``, ``PGOPTIONS``) change no value landed, through snapshot and stream, once the process
pinned its sessions as ``tidemark`` and the Dagster code location do."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up
from tests.ingestion.conftest import Pair
from tests.netproxy import Pgbouncer, needs_pgbouncer
from tidemark.session_env import pin_session_environment, session_options

HOSTILE = {"DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard", "TimeZone": "Asia/Kolkata",
           "extra_float_digits": "0", "bytea_output": "escape"}

TABLE = """create table odd (id int primary key, ts timestamptz, t timestamp, d date,
    iv interval, f8 double precision, f4 real, by bytea)"""
ROWS = """insert into odd values
 (1, '2026-03-04 05:06:07.891+00', '2026-03-04 05:06:07', '2026-03-04', '1 year 2 mons -3 days
  04:05:06.7', 0.1 + 0.2, 1.1::real * 3, '\\x00ff5c'),
 (2, '2026-12-31 23:59:59+00', '2026-01-02 03:04:05', '2026-01-02', '-1 day +02:00', 1e-300,
  'NaN', '\\x'), (3, 'infinity', '-infinity', 'infinity', '0', '-0', 'Infinity', null)"""


def _set_defaults(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        db = sql.Identifier(conn.execute("select current_database()").fetchone()[0])
        for name, value in HOSTILE.items():
            conn.execute(sql.SQL("alter database {} set {} = {}").format(
                db, sql.Identifier(name), sql.Literal(value)))


def _rows(url: str, table: str) -> list[str]:
    """The rows' text forms, printed under Tidemark's pinned settings (every digit shown)."""
    with psycopg.connect(url, options=session_options()) as conn:
        return sorted(r[0] for r in conn.execute(
            sql.SQL("select row(id, ts, t, d, iv, f8, f4, by)::text from {}").format(
                sql.Identifier(*table.split(".")))))


def test_other_session_defaults_on_both_servers_change_no_value(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # Unpinned, the first timestamp read raised NotImplementedError: "can't parse timestamptz
    # with DateStyle 'SQL, DMY'" (the source's default), and the user's environment wins over
    # the server's defaults.
    for name, value in (("PGDATESTYLE", "German"), ("PGTZ", "America/Los_Angeles"),
                        ("PGOPTIONS", "-c extra_float_digits=-15 -c IntervalStyle=iso_8601")):
        monkeypatch.setenv(name, value)
    assert sorted(pin_session_environment()) == ["PGDATESTYLE", "PGOPTIONS", "PGTZ"]
    pair.src_exec(TABLE, ROWS)
    _set_defaults(pair.src)
    _set_defaults(pair.land)
    catch_up(pair.src, pair.land, pair.source)
    assert _rows(pair.land, f"{pair.source}.odd") == _rows(pair.src, "public.odd")
    pair.src_exec("delete from odd", ROWS, "update odd set f8 = f8 * 3, ts = ts + interval '1 s'")
    catch_up(pair.src, pair.land, pair.source)
    assert _rows(pair.land, f"{pair.source}.odd") == _rows(pair.src, "public.odd")


def _keepalive(fd: int) -> tuple[int, int, int, int]:
    import socket

    sock = socket.socket(fileno=os.dup(fd))
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
    finally:
        sock.close()


def test_a_sessions_connections_notice_a_vanished_peer_within_a_minute(pair: Pair) -> None:
    """The stream, catalog and landing connections probe an idle peer after 30 s and give up
    on unacknowledged data after 60 s (a cable pulled, a NAT that dropped them): before, the
    system's two hours and 15 minutes of retransmissions, while the session hung. A URL's own
    setting wins."""
    from ingestion.session import Session
    from ingestion.session_config import SessionConfig

    pair.src_exec("create table t (id int primary key)")
    from psycopg.conninfo import make_conninfo

    land = make_conninfo(pair.land, keepalives_idle="45")
    session = Session(SessionConfig(pair.src, land, pair.source))
    try:
        session.open()
        assert _keepalive(session.repl.fileno()) == (1, 30, 3, 60000)
        assert _keepalive(session.source_conn.fileno()) == (1, 30, 3, 60000)
        assert _keepalive(session.landing.fileno()) == (1, 45, 3, 60000)
    finally:
        session.close()


@needs_pgbouncer
@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_landing_through_pgbouncer_streams_in_session_mode_and_is_refused_in_transaction_mode(
        pair: Pair, tmp_path: Path, mode: str) -> None:
    """Before, a landing URL through transaction pooling was taken without a word: landing's
    lock of the source and the session settings did not hold, and two ingestions could apply
    one source at once. The source through pgbouncer < 1.23 names the pooler and the fix."""
    from ingestion.errors import PermanentSourceError, SetupError

    pair.src_exec("create table t (id int primary key)", "insert into t values (1)")
    bouncer = Pgbouncer(pair.land, mode, str(tmp_path / "pgbouncer"))
    try:
        land = bouncer.url(pair.land)
        if mode == "session":
            catch_up(pair.src, land, pair.source)
            with psycopg.connect(pair.land) as conn:
                assert conn.execute(f'select count(*) from "{pair.source}".t').fetchone()[0] == 1
            with pytest.raises(PermanentSourceError, match="connection pooler.*1.23"):
                catch_up(bouncer.url(pair.src), pair.land, pair.source)
        else:
            with pytest.raises(SetupError, match="transaction pooling"):
                catch_up(pair.src, land, pair.source)
    finally:
        bouncer.stop()
