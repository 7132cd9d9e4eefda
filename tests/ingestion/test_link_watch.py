"""ingestion.link_watch: a statement that is slow, not silent, is left to run."""

from __future__ import annotations

from pathlib import Path

import psycopg

from ingestion.link_watch import LinkWatch
from tests.ingestion.conftest import Pair
from tests.netproxy import Pgbouncer, needs_pgbouncer


def _sleep_watched(url: str, limit_s: float, seconds: float) -> None:
    watch = LinkWatch(limit_s, "x")
    with psycopg.connect(url, autocommit=True) as conn:
        watch.watch("landing", conn, url)
        try:
            conn.execute("select pg_sleep(%s)", (seconds,))
        finally:
            watch.stop()


def test_a_slow_statement_is_left_to_run(pair: Pair) -> None:
    """A statement the server works on for longer than half the limit is not a silence."""
    _sleep_watched(pair.land, 2.0, 3.0)


@needs_pgbouncer
def test_a_slow_statement_through_a_session_pool_is_left_to_run(pair: Pair,
                                                                tmp_path: Path) -> None:
    """pgbouncer hands its clients a backend key of its own, so the process id libpq reports
    is not the server's: the watch looked that id up, found no such process, took the
    connection for one whose server process was gone and ended it — any landing statement
    that ran for half of TIDEMARK_STREAM_SILENCE_S (a large batch, an index build), again at
    every retry. The watch asks the server for its process id."""

    bouncer = Pgbouncer(pair.land, "session", str(tmp_path / "pgbouncer"))
    try:
        _sleep_watched(bouncer.url(pair.land), 2.0, 3.0)
    finally:
        bouncer.stop()
