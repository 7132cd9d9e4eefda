"""A replication stream whose connection goes silent without closing (ingestion.silence)."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from ingestion import run
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, wait_until
from tests.netproxy import SilentProxy


def _landed(p: Pair) -> int:
    with psycopg.connect(p.land) as conn:
        row = conn.execute("select to_regclass(%s) is not null", (f"{p.source}.t",)).fetchone()
        if not row[0]:
            return 0
        return conn.execute(f'select count(*) from "{p.source}".t').fetchone()[0]


def test_a_silent_stream_is_noticed_and_streamed_again_without_loss(
        pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A NAT idle timeout (no FIN, no RST) on the replication connection: before, the session
    read nothing for good while its status said streaming, and the walsender kept the slot
    (``wal_sender_timeout``, or for good at 0). Now: said, reconnected, nothing lost or twice."""
    monkeypatch.setenv("TIDEMARK_STREAM_SILENCE_S", "4")
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    pair.src_exec("alter system set wal_sender_timeout = 0", "select pg_reload_conf()",
                  "create table t (id int primary key, v text)", "insert into t values (1, 'a')")
    proxy, src = SilentProxy.before(pair.src)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(src, pair.land, pair.source), daemon=True,
                              kwargs={"stop": stop, "max_backoff_s": 1.0, "heartbeat_s": 1.0})
    thread.start()
    try:
        assert wait_until(lambda: _landed(pair) == 1 and "streaming from slot" in caplog.text,
                          30), caplog.text
        assert proxy.silence(replication=True) == 1
        pair.src_exec("insert into t values (2, 'b')", "update t set v = 'c' where id = 1")
        assert wait_until(lambda: _landed(pair) == 2, 20), \
            f"the silent stream was not noticed:\n{caplog.text}"
        assert "no message from the source for" in caplog.text
        assert "ended server process" in caplog.text
        assert wait_until(lambda: len(changelog(pair.land, pair.source, "t")) == 3, 10)
        assert_mirror_equals(pair, "t")
        assert [r[0] for r in changelog(pair.land, pair.source, "t", "_op")] == ["r", "c", "u"]
    finally:
        stop.set()
        thread.join(30)
        proxy.close()
        pair.src_exec("alter system reset wal_sender_timeout", "select pg_reload_conf()")
    assert not thread.is_alive()


@pytest.mark.parametrize("raw", ["1", "x", "-3", "inf"])
def test_a_silence_limit_that_is_not_seconds_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                        raw: str) -> None:
    from ingestion.errors import SetupError
    from ingestion.silence import silence_limit

    monkeypatch.setenv("TIDEMARK_STREAM_SILENCE_S", raw)
    with pytest.raises(SetupError, match="TIDEMARK_STREAM_SILENCE_S"):
        silence_limit()


def test_the_silence_limit_defaults_to_a_minute_and_0_turns_it_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestion.silence import silence_limit

    monkeypatch.delenv("TIDEMARK_STREAM_SILENCE_S", raising=False)
    assert silence_limit() == 60
    monkeypatch.setenv("TIDEMARK_STREAM_SILENCE_S", "0")
    assert silence_limit() == 0


@pytest.mark.parametrize("side", ["landing", "source"])
def test_a_connection_silent_in_a_statement_is_ended_and_the_session_retried(
        pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        side: str) -> None:
    """The landing connection (a commit) or the source's catalog connection (the look-up of a
    changed table) goes silent behind something that still answers TCP: before, the statement
    waited for its result for good, the session with it, while the stale server process kept
    the session's locks. Now: said, ended, reconnected, nothing lost or twice."""
    monkeypatch.setenv("TIDEMARK_STREAM_SILENCE_S", "4")
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    pair.src_exec("create table t (id int primary key, v text)", "insert into t values (1, 'a')")
    proxy, url = SilentProxy.before(pair.land if side == "landing" else pair.src)
    src, land = (pair.src, url) if side == "landing" else (url, pair.land)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(src, land, pair.source), daemon=True,
                              kwargs={"stop": stop, "max_backoff_s": 1.0})
    thread.start()
    try:
        assert wait_until(lambda: _landed(pair) == 1 and "streaming from slot" in caplog.text,
                          30), caplog.text
        assert proxy.silence(replication=None if side == "landing" else False) >= 1
        # a column added: the stream's Relation message is looked up in the source's catalog
        pair.src_exec("alter table t add column w int", "insert into t values (2, 'b', 5)",
                      "update t set v = 'c' where id = 1")
        assert wait_until(lambda: f"the {side} connection went silent" in caplog.text, 20), \
            f"the silent {side} connection was not noticed:\n{caplog.text}"
        pair.src_exec("insert into t values (3, 'd', 6)")
        assert wait_until(lambda: len(changelog(pair.land, pair.source, "t")) == 4, 20), \
            caplog.text
        assert_mirror_equals(pair, "t")
        assert [r[0] for r in changelog(pair.land, pair.source, "t", "_op")] == \
            ["r", "c", "u", "c"]
    finally:
        stop.set()
        thread.join(30)
        proxy.close()
    assert not thread.is_alive()
