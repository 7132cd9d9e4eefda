"""A first catch_up whose slot creation waits on a transaction left open says which one."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from ingestion import catch_up, slotwait
from tests.ingestion.conftest import Pair, wait_until
from tests.support import give_password


def test_slot_creation_names_the_open_transaction_it_waits_for(
        pair: Pair, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slotwait, "FIRST_REPORT_S", 0.5)
    pair.src_exec("create table t (id int primary key)", "create table other (id int)",
                  "insert into t values (1)")
    # A session left "idle in transaction" after a write: it holds a transaction ID.
    blocker = psycopg.connect(pair.src, application_name="forgotten-session")
    blocker.execute("insert into other values (1)")
    pid = blocker.info.backend_pid
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(
        catch_up(pair.src, pair.land, pair.source, timeout_s=120)))
    caplog.set_level(logging.WARNING, logger="tidemark.ingestion")
    try:
        thread.start()
        assert wait_until(lambda: any(f"pid {pid} " in r.getMessage() for r in caplog.records),
                          timeout=30), [r.getMessage() for r in caplog.records]
        message = next(r.getMessage() for r in caplog.records if f"pid {pid} " in r.getMessage())
        assert f"replication slot tidemark_{pair.source}" in message
        assert "forgotten-session" in message and "idle in transaction" in message
        assert f"pg_terminate_backend({pid})" in message
        assert thread.is_alive() and not result, "the slot waits while the transaction is open"
    finally:
        blocker.commit()
        blocker.close()
    thread.join(60)
    assert not thread.is_alive() and result, "the slot is created once the transaction ends"
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f'select count(*) from "{pair.source}".t').fetchone() == (1,)


def test_a_quick_slot_creation_reports_nothing(pair: Pair,
                                              caplog: pytest.LogCaptureFixture) -> None:
    pair.src_exec("create table t (id int primary key)")
    caplog.set_level(logging.WARNING, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source, timeout_s=60)
    assert not [r for r in caplog.records if "creating replication slot" in r.getMessage()]


def test_an_unprivileged_role_still_sees_which_pid_holds_a_transaction(pair: Pair) -> None:
    pair.src_exec("create table other (id int)", "drop role if exists tm_slotwait_watcher",
                  "create role tm_slotwait_watcher login")
    give_password(pair.src, "tm_slotwait_watcher")
    blocker = psycopg.connect(pair.src)
    try:
        blocker.execute("insert into other values (1)")
        pid = blocker.info.backend_pid
        with psycopg.connect(pair.src, user="tm_slotwait_watcher", autocommit=True) as watcher:
            found = [f for f in slotwait.blocking_transactions(watcher) if f"pid {pid} " in f]
        assert len(found) == 1 and "hidden from this role: pg_read_all_stats" in found[0]
        assert f"pg_terminate_backend({pid})" in found[0]
    finally:
        blocker.rollback()
        blocker.close()
        pair.src_exec("drop role tm_slotwait_watcher")
