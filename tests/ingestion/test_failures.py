"""Permanent failures stop ingestion once with what to do; transient ones are retried."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import psycopg2
import pytest

from ingestion import run
from ingestion.errors import PermanentSourceError, SourceStreamEndedError
from ingestion.failures import (
    ended_stream,
    failed_side,
    is_transient,
    permanent,
    quiet_pipeline,
    retry_reason,
)
from tests.ingestion.conftest import Pair
from tests.support import other_database
from tidemark.stack.credentials import read_passwords


@pytest.mark.parametrize("message, transient", [
    ("connection failed: connection to server at \"10.0.0.1\", port 5432 failed: Connection "
     "refused", True),
    ("server closed the connection unexpectedly", True),
    ("FATAL:  the database system is starting up", True),
    ("FATAL:  terminating connection due to administrator command", True),
    ("connection failed: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  "
     "password authentication failed for user \"app\"", False),
    ("connection to server failed: FATAL:  no pg_hba.conf entry for replication connection",
     False),
    ("connection to server failed: FATAL:  database \"nope\" does not exist", False),
    ("replication slot \"tidemark_a\" was not created in this database", False),
    ("logical decoding requires wal_level >= logical", False),
    ("must be superuser or replication role to start walsender", False),
])
def test_classification(message: str, transient: bool) -> None:
    assert is_transient(psycopg.OperationalError(message)) is transient


def test_a_clean_up_error_after_a_lost_connection_is_retried() -> None:
    # kill -9 of the embedded PostgreSQL under `tidemark up` at 10x rate: the landing commit's
    # pipeline lost its connection, psycopg's Pipeline.__exit__ then raised "cannot exit
    # pipeline mode while busy" from its `finally` (the lost connection as its __context__),
    # and ingestion stopped the source for good: "Retrying will not fix this".
    with pytest.raises(psycopg.OperationalError) as caught:
        try:
            raise psycopg.OperationalError("consuming input failed: server closed the connection"
                                           " unexpectedly")
        finally:
            raise psycopg.OperationalError("cannot exit pipeline mode while busy")
    assert str(caught.value) == "cannot exit pipeline mode while busy"
    assert is_transient(caught.value)
    # a cause named with its fix stays permanent, whatever it interrupted
    with pytest.raises(psycopg.OperationalError) as caught:
        try:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        finally:
            raise psycopg.OperationalError('FATAL:  database "nope" does not exist')
    assert not is_transient(caught.value)


def test_a_pipeline_on_a_lost_connection_raises_its_error_without_psycopgs_warning(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    # A crash recovery of the server under `tidemark up` printed psycopg's "error ignored
    # terminating <psycopg.Pipeline [BAD] ...>: the connection is lost" once per crash, beside
    # the reconnect message that already says what happened.
    caplog.set_level(logging.WARNING, logger="psycopg")

    def terminated() -> psycopg.Connection:
        conn = psycopg.connect(pair.land, autocommit=True)
        with psycopg.connect(pair.land, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return conn

    with terminated() as conn, pytest.raises(psycopg.OperationalError):
        with conn.pipeline():  # psycopg's own: the warning (what the test guards against)
            conn.execute("select 1").fetchone()
    assert "error ignored terminating" in caplog.text
    caplog.clear()
    with terminated() as conn, pytest.raises(psycopg.OperationalError) as caught:
        with quiet_pipeline(conn):
            conn.execute("select 1").fetchone()
    assert conn.broken and is_transient(caught.value)  # the block's own error, retried
    assert "the connection is lost" not in str(caught.value)  # not the exit's
    assert caplog.records == []
    # any other error leaves the pipeline as psycopg does, and the connection usable
    with psycopg.connect(pair.land, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero), quiet_pipeline(conn):
            conn.execute("select 1 / 0").fetchone()
        assert conn.execute("select 2").fetchone() == (2,)
        with quiet_pipeline(conn) as pipe:
            cur = conn.execute("select 3")
            pipe.sync()
            assert cur.fetchone() == (3,)
    assert caplog.records == []


def test_a_replication_stream_the_server_ended_is_a_lost_connection(pair: Pair) -> None:
    # A walsender ends its COPY without an error when its server shuts down (a restart for
    # maintenance); psycopg2's next read or acknowledgement on the stream raises libpq's "no
    # COPY in progress", which stopped ingestion for good (round 36's CI; test_engine.py
    # restarts a real source server).
    assert is_transient(psycopg2.DatabaseError("no COPY in progress"))
    ended = ended_stream(psycopg2.DatabaseError("no COPY in progress"), None)
    assert isinstance(ended, SourceStreamEndedError) and is_transient(ended)
    assert "ended the replication stream" in str(ended)
    assert ended_stream(psycopg2.DatabaseError("unexpected message"), None) is None
    # the cause, when the session's other connection to the source was terminated with it
    with psycopg.connect(pair.src, autocommit=True) as conn, \
            psycopg.connect(pair.src, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
        ended = ended_stream(psycopg2.DatabaseError("no COPY in progress"), conn)
    assert "terminating connection due to administrator command" in str(ended)
    assert is_transient(ended)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        assert "the server still answers" in str(ended_stream(
            psycopg2.DatabaseError("no COPY in progress"), conn))


@pytest.mark.parametrize("message, advice", [
    ('connection failed: FATAL:  permission denied for database "mydb"\nDETAIL:  User does not '
     'have CONNECT privilege.', "grant connect on database"),
    ("permission denied for schema sales", "grant usage on schema"),
    ('FATAL:  number of requested standby connections exceeds "max_wal_senders" (currently 2)',
     "raise max_wal_senders"),
    ('query would be affected by row-level security policy for table "t"', "bypassrls"),
])
def test_advice_names_the_statement(message: str, advice: str) -> None:
    assert advice in str(permanent("mydb", psycopg.OperationalError(message)))
    assert not is_transient(psycopg.OperationalError(message))


def test_advice_names_the_password_variable() -> None:
    err = permanent("mydb", psycopg.OperationalError("password authentication failed for user x"))
    assert "TIDEMARK_SOURCE_MYDB_PASSWORD" in str(err)


def test_permanent_error_is_reported_once_not_retried(pair: Pair,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    missing = other_database(pair.src, f"absent_{pair.source}")
    started = time.monotonic()
    with pytest.raises(PermanentSourceError, match="does not exist.*Fix the registered URL"):
        run(missing, pair.land, pair.source, stop=threading.Event())
    assert time.monotonic() - started < 30  # once: retries would back off 0.5, 1, 2 ... 30 s
    assert "reconnecting" not in caplog.text


def test_a_slot_in_another_database_stops_run_once_not_retried(pair: Pair, pg,
                                                               caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    """Issue 10 item 7, the example it gave: the source's slot name taken in another database of
    the server was retried forever as "connection lost". ``run`` (what `ingest run` and
    `tidemark up` call) now stops at once; test_source_admin checks ``add`` and ``catch_up``.
    Run in a thread so that a retry loop fails the test instead of hanging it (audit51)."""
    from tests.support import create_database

    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    other = create_database(pg, f"slots_{pair.source}")
    slot = f"tidemark_{pair.source}"
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    stop, raised = threading.Event(), []

    def target() -> None:
        try:
            run(pair.src, pair.land, pair.source, stop=stop, max_backoff_s=1.0)
        except Exception as exc:  # what the thread ended with, for the test to judge
            raised.append(exc)

    thread = threading.Thread(target=target)
    try:
        thread.start()
        thread.join(60)
        retried = thread.is_alive()
        stop.set()
        thread.join(30)
    finally:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database "slots_{pair.source}"')
    assert not retried, f"still retrying after 60 s:\n{caplog.text[-2000:]}"
    assert len(raised) == 1 and isinstance(raised[0], PermanentSourceError), raised
    assert f"exists on this server but in database 'slots_{pair.source}'" in str(raised[0])
    assert "reconnecting" not in caplog.text


def test_wrong_password_is_permanent_and_the_right_one_comes_from_the_environment(
        pair: Pair, pg, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestion import catch_up
    from ingestion.sources import SourceSpec

    role = f"pw_{pair.source}"
    hba = pg.pgdata / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        conn.execute(f"create role {role} login replication password 'right-one'")
    pair.src_exec("create table t (id int primary key)", f"grant select on t to {role}")
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n"
                   f"host replication {role} 127.0.0.1/32 scram-sha-256\n" + original)
    try:
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute("select pg_reload_conf()")
        spec = SourceSpec(pair.source, url=pair.src.replace("postgres@", f"{role}@", 1),
                          admin_url=pair.src)
        monkeypatch.setenv(f"TIDEMARK_SOURCE_{pair.source.upper()}_PASSWORD", "wrong")
        # the admin URL's password (the server asks every role for its own)
        monkeypatch.setenv(f"TIDEMARK_SOURCE_{pair.source.upper()}_ADMIN_PASSWORD",
                           read_passwords(pg.passfile)["postgres"])
        with pytest.raises(PermanentSourceError) as info:
            run(spec.dsn(), pair.land, pair.source, setup_dsn=spec.admin_dsn(),
                stop=threading.Event())
        assert "password authentication failed" in str(info.value)
        assert f"TIDEMARK_SOURCE_{pair.source.upper()}_PASSWORD" in str(info.value)
        assert "wrong" not in str(info.value)
        monkeypatch.setenv(f"TIDEMARK_SOURCE_{pair.source.upper()}_PASSWORD", "right-one")
        stats = catch_up(spec.dsn(), pair.land, pair.source, setup_dsn=spec.admin_dsn())
        assert stats.lsn
    finally:
        hba.write_text(original)
        with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
            conn.execute("select pg_reload_conf()")
            for url in (pair.src, pair.land):
                with psycopg.connect(url, autocommit=True) as other:
                    other.execute(f"drop owned by {role} cascade")
            conn.execute(f"drop role {role}")


def test_a_landing_that_refuses_the_connection_is_named_landing_not_source(pair: Pair) -> None:
    """A failure connecting to landing used to be reported as the source's ("source error:
    ... port <landing's port>", with advice to fix the registered source URL)."""
    missing = other_database(pair.land, f"absent_{pair.source}")
    with pytest.raises(PermanentSourceError) as info:
        run(pair.src, missing, pair.source, stop=threading.Event())
    said = str(info.value)
    assert "landing error" in said and "source error" not in said, said
    assert "TIDEMARK_LANDING_URL" in said and "registered URL" not in said, said
    try:
        psycopg.connect(missing)
    except psycopg.OperationalError as exc:
        assert failed_side(exc, missing) == "landing"
        assert failed_side(exc, pair.src) == "source"


def test_a_source_out_of_disk_space_is_named_source() -> None:
    """The replication stream's errors are the source's: a walsender that cannot spill a large
    transaction says "No space left on device", and landing is not the one to clean up."""
    spill = psycopg2.OperationalError(
        'could not write to data file for XID 7: No space left on device')
    assert failed_side(spill, "postgresql://u@127.0.0.1:1/land") == "source"
    assert "the source is out of disk space" in retry_reason(spill, "source")
    full = psycopg.errors.DiskFull("could not extend file \"base/1/2\": No space left on device")
    assert failed_side(full, "postgresql://u@127.0.0.1:1/land") == "landing"
    assert "landing is out of disk space" in retry_reason(full, "landing")


def test_landing_out_of_disk_space_is_retried_said_and_loses_nothing(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """A landing whose disk is full fails the applier's statements with SQLSTATE 53100 (here
    raised by a trigger on the mirror, as a full volume would: the same error from the same
    server). Ingestion says landing is full and what to do, keeps retrying (the source keeps
    the changes in the slot), and lands every change once space is back."""
    from ingestion import catch_up
    from tests.ingestion.conftest import assert_mirror_equals, wait_until

    pair.src_exec("create table r (id int primary key, v text)",
                  "insert into r select g, 'x' from generate_series(1, 10) g")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("create table disk_full (on_ boolean)")
        conn.execute("insert into disk_full values (true)")
        conn.execute(
            "create function full_disk() returns trigger language plpgsql as $$ begin"
            " if exists (select from public.disk_full) then raise exception using errcode ="
            " 'disk_full', message = 'could not extend file \"base/1/2\": No space left on"
            " device'; end if; return null; end $$")
        conn.execute(f"create trigger full_disk after insert or update on {pair.source}.r"
                     " for each statement execute function full_disk()")
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "max_backoff_s": 0.5})
    thread.start()
    try:
        pair.src_exec("insert into r select g, 'y' from generate_series(11, 20) g",
                      "update r set v = 'z' where id <= 3")
        assert wait_until(lambda: caplog.text.count("landing is out of disk space") >= 2, 60)
        assert thread.is_alive(), caplog.text
        assert "free space on landing's server" in caplog.text
        with psycopg.connect(pair.land, autocommit=True) as conn:
            conn.execute("delete from disk_full")
        with psycopg.connect(pair.land) as conn:
            assert wait_until(lambda: conn.execute(
                f"select count(*) filter (where v = 'z') from {pair.source}.r").fetchone()[0]
                == 3 and not conn.rollback(), 60)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert_mirror_equals(pair, "r")
