"""A running ingestion picks changed contracts up without a restart (between transactions);
catch_up's target is taken when the call starts (a first call returns at the snapshot), and it
returns on a source whose role is refused heartbeats. ``run`` goes on streaming through a restart
of the source server (fast and smart shutdown), its walsender terminated and a refused drop of
its slot."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import psutil
import psycopg
import pytest

from contracts import load_contracts
from ingestion import catch_up, run
from ingestion.lsn import str_to_lsn
from ingestion.names import slot_name
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, wait_until
from tests.ingestion.test_crash_recovery import Case, _case
from tests.support import give_password
from tidemark.stack.embedded import EmbeddedServer

CONTRACT = """version: {version}
primary_key: [id]
compatibility: backward
allowed_lateness: 0s
freshness: {{warn_after: 1h, error_after: 1d}}
columns:
  id: {{type: integer}}
  status: {{type: text, allowed_values: [{allowed}]}}
"""


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(query).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return -1


def test_changed_contract_applies_without_restart(pair: Pair, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "contracts"
    (root / pair.source).mkdir(parents=True)
    path = root / pair.source / "t.yml"
    path.write_text(CONTRACT.format(version=1, allowed="a, b"))
    pair.src_exec("create table t (id int primary key, status text)",
                  "insert into t values (1, 'a')")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "contracts": load_contracts(root)})
    thread.start()
    mirror = f'select count(*) from "{pair.source}".t'
    dead = "select count(*) from tidemark.dead_letters"
    try:
        assert wait_until(lambda: _count(pair.land, mirror) == 1)
        pair.src_exec("insert into t values (2, 'c')")
        assert wait_until(lambda: _count(pair.land, dead) == 1), "'c' breaks version 1"
        caplog.set_level(logging.INFO, logger="tidemark.contracts")
        path.write_text(CONTRACT.format(version=2, allowed="a, b, c"))
        # the folder is looked at every 2 s, between transactions: a fixed 3 s was too short
        # for a stream thread the loaded machine had not run in that time
        assert wait_until(lambda: "changed: reloaded" in caplog.text), caplog.text
        pair.src_exec("insert into t values (3, 'c')")
        assert wait_until(lambda: _count(pair.land, mirror) == 2), "version 2 allows 'c'"
        assert _count(pair.land, dead) == 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select contract_version from tidemark.dead_letters").fetchone() \
            == ("1",)


def _role_refused_heartbeats(pair: Pair) -> str:
    """A LOGIN REPLICATION role owning schema public's tables, in a source database where
    EXECUTE on pg_logical_emit_message is revoked from PUBLIC; its URL."""
    role = f"own_{pair.source}"
    with psycopg.connect(pair.src, autocommit=True) as conn:
        dbname = conn.info.dbname
    pair.src_exec(f"drop role if exists {role}", f"create role {role} login replication",
                  f'grant create on database "{dbname}" to {role}',
                  f"grant create on schema public to {role}",
                  "do $$ declare f regprocedure; begin for f in select oid::regprocedure from"
                  " pg_proc where proname = 'pg_logical_emit_message' loop execute format("
                  "'revoke execute on function %s from public', f); end loop; end $$")
    give_password(pair.src, role)
    url = pair.src.replace("postgres@", f"{role}@", 1)
    with psycopg.connect(url, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select pg_logical_emit_message(true, 'x', 'y')")
    return url


def test_catch_up_without_heartbeat_rights_returns_when_idle(pair: Pair) -> None:
    """A role refused heartbeats: the target is the source's WAL position, past the last commit
    (and past the snapshot's consistent point), which no streamed commit reaches on an idle
    source. catch_up returns once the stream has decoded past it, first call or not, and lands
    every commit made before the call."""
    owner = _role_refused_heartbeats(pair)
    role = owner.split("://", 1)[1].split("@", 1)[0].split(":", 1)[0]
    try:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("create table t (id int primary key, v text)")
            conn.execute("insert into t select g, 'v' || g from generate_series(1, 3000) g")
        # returning is the check (before, the target was never reached: CatchUpTimeoutError);
        # no bound on its seconds, which a loaded machine breaks (round 37: timing is bench/'s)
        first = catch_up(owner, pair.land, pair.source, timeout_s=120)
        assert first.snapshot_rows == 3000
        assert_mirror_equals(pair, "t")
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("insert into t values (3001, 'new')")
            conn.execute("update t set v = 'w' where id = 1")
        second = catch_up(owner, pair.land, pair.source, timeout_s=120)
        assert (second.snapshot_rows, second.transactions, second.changes) == (0, 2, 2)
        assert_mirror_equals(pair, "t")
        idle = catch_up(owner, pair.land, pair.source, timeout_s=120)
        assert (idle.transactions, idle.changes) == (0, 0)
    finally:
        pair.src_exec(f"reassign owned by {role} to postgres", f"drop owned by {role}")
        pair.src_exec(f"drop role if exists {role}")


def test_first_catch_up_returns_at_the_snapshot(pair: Pair) -> None:
    """catch_up's target is taken when the call starts, before the slot and the snapshot: the
    first call returns once the snapshot has committed (nothing streamed, so none of the WAL the
    snapshot wrote into landing — same server here, as in the default `tidemark up` — is decoded
    first), and a later call still lands everything committed before it."""
    pair.src_exec("create table t (id int primary key, v text)",
                  "insert into t select g, 'v' || g from generate_series(1, 5000) g")
    first = catch_up(pair.src, pair.land, pair.source)
    assert first.snapshot_rows == 5000
    assert str_to_lsn(first.target_lsn) <= str_to_lsn(first.lsn)
    assert (first.transactions, first.changes) == (0, 0), "the stream was read after the snapshot"
    assert_mirror_equals(pair, "t")
    assert [r[0] for r in changelog(pair.land, pair.source, "t", "_op")] == ["r"] * 5000
    pair.src_exec("insert into t values (5001, 'new')", "update t set v = 'w' where id = 1")
    second = catch_up(pair.src, pair.land, pair.source)
    assert second.snapshot_rows == 0 and second.changes == 2
    assert str_to_lsn(first.lsn) < str_to_lsn(second.target_lsn) <= str_to_lsn(second.lsn)
    assert_mirror_equals(pair, "t")


def test_catch_up_returns_with_the_slot_acknowledged(pair: Pair) -> None:
    """The walsender reads an acknowledgement asynchronously; catch_up returns only once the
    slot's confirmed position covers the checkpoint it reports (a CI run read the old position
    right after the call, on an idle source's heartbeat catch-up)."""
    pair.src_exec("create table t (id int primary key, v text)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for i in range(40):  # idle catch-ups (heartbeat only) and ones with a change
            if i % 2:
                conn.execute("insert into t values (%s, 'x')", (i,))
            stats = catch_up(pair.src, pair.land, pair.source)
            confirmed = conn.execute(
                "select confirmed_flush_lsn::text from pg_replication_slots"
                " where slot_name = %s", (slot_name(pair.source),)).fetchone()[0]
            assert str_to_lsn(confirmed) >= str_to_lsn(stats.lsn), (i, confirmed, stats.lsn)


def _restart(server: EmbeddedServer, mode: str) -> None:
    """``pg_ctl restart -m <mode>``: the postmaster gets that shutdown's signal (pg_ctl's own:
    SIGTERM smart, SIGINT fast), ends, and the server starts again."""
    master = psutil.Process(server.status().pid)
    master.send_signal({"smart": signal.SIGTERM, "fast": signal.SIGINT}[mode])
    master.wait(120)  # smart: until the last client session has gone
    server.start()


def _stream_until(case: Case, rows: int) -> bool:
    """Wait until the mirror holds ``rows`` rows, or ``run`` has died; whether it landed them."""
    assert wait_until(lambda: case.landed() == rows or not case.thread.is_alive(), 120)
    return case.landed() == rows


@pytest.mark.parametrize("mode", ["fast", "smart"])
def test_run_streams_on_through_a_restart_of_the_source_server(
        pg, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    """The source server restarted for maintenance while ``run`` streams. Fast: the walsender
    ends the replication COPY without an error, and psycopg2's next read said "no COPY in
    progress" — taken for a permanent failure, which stopped ingestion for good (round 36's CI,
    the bench's server stopped under its stream). Smart: the server waits for the clients'
    sessions to end (ingestion's heartbeat, refused, ends them). Both: a warning, a reconnect,
    every write before and after landed once."""
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    with _case(pg, tmp_path / "home", f"rst_{mode}", own="source") as case:
        p = case.pair
        p.src_exec("insert into r select g, 'before' from generate_series(1, 100) g")
        case.thread = threading.Thread(target=run, args=(p.src, p.land, p.source), daemon=True,
                                       kwargs={"stop": case.stop, "max_backoff_s": 1.0,
                                               # fast: no heartbeat may meet the shutdown first
                                               "heartbeat_s": 1.0 if mode == "smart" else 600})
        case.thread.start()
        assert _stream_until(case, 100), caplog.text
        p.src_exec("update r set v = 'just before' where id <= 10")
        assert wait_until(lambda: _count(p.land, f"select count(*) from {p.source}.r"
                                                 " where v = 'just before'") == 10)
        _restart(case.server, mode)
        p.src_exec("insert into r select g, 'after' from generate_series(101, 150) g",
                   "delete from r where id > 140")
        assert _stream_until(case, 140), f"ingestion stopped:\n{caplog.text}"
        case.stop.set()
        case.thread.join(60)
        assert not case.thread.is_alive()
        assert_mirror_equals(p, "r")
        changes = changelog(p.land, p.source, "r", "_commit_lsn, _seq")
        assert len(changes) == len(set(changes)) == 100 + 10 + 50 + 10
        lost = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "connection lost" in r.getMessage()]
        assert lost, caplog.text
        if mode == "fast":
            assert "the source server ended the replication stream" in lost[0], lost


def test_run_streams_on_after_its_walsender_is_terminated_and_a_slot_drop_refused(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """On the source: ``pg_drop_replication_slot`` while ``run`` streams is refused (the slot is
    active) and the stream goes on; ``pg_terminate_backend`` of the walsender is a lost
    connection: a warning, a new walsender, nothing lost."""
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    pair.src_exec("create table r (id int primary key, v text)",
                  "insert into r select g, 'a' from generate_series(1, 10) g")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "max_backoff_s": 1.0}, daemon=True)
    thread.start()
    mirror = f"select count(*) from {pair.source}.r"
    slot = slot_name(pair.source)
    active = "select active_pid from pg_replication_slots where slot_name = %s"
    try:
        assert wait_until(lambda: _count(pair.land, mirror) == 10 or not thread.is_alive())
        with psycopg.connect(pair.src, autocommit=True) as conn:
            # streaming: the slot is active (the snapshot lands before the stream takes it)
            assert wait_until(lambda: conn.execute(active, (slot,)).fetchone()[0] is not None)
            with pytest.raises(psycopg.errors.ObjectInUse, match="is active for PID"):
                conn.execute("select pg_drop_replication_slot(%s)", (slot,))
            pair.src_exec("insert into r values (11, 'after the refused drop')")
            assert wait_until(lambda: _count(pair.land, mirror) == 11 or not thread.is_alive())
            walsender = conn.execute(active, (slot,)).fetchone()[0]
            assert walsender is not None
            conn.execute("select pg_terminate_backend(%s)", (walsender,))
            pair.src_exec("insert into r select g, 'after' from generate_series(12, 20) g")
            assert wait_until(lambda: _count(pair.land, mirror) == 20 or not thread.is_alive())
            assert thread.is_alive(), caplog.text
            assert conn.execute(active, (slot,)).fetchone()[0] not in (None, walsender)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert_mirror_equals(pair, "r")
    assert len(changelog(pair.land, pair.source, "r", "_commit_lsn, _seq")) == 20
    assert "connection lost (terminating connection due to administrator command)" \
        in caplog.text
