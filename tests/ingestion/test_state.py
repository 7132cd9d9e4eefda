"""Landing's state tables (:mod:`ingestion.state`)."""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from ingestion.state import ensure_state
from tests.support import create_database


def test_processes_starting_at_once_create_the_state_once(pg) -> None:
    # `tidemark ingest run` and a polling `tidemark ingest status` started together on a new
    # landing: each ran the CREATE TABLE IF NOT EXISTS, and one failed with "duplicate key
    # value violates unique constraint pg_type_typname_nsp_index" (the run stopped for good),
    # because the advisory lock of an autocommit connection ended with its own statement.
    errors: list[BaseException] = []
    for round_ in range(6):
        url = create_database(pg, "state_race")
        gate = threading.Barrier(4)

        def start(url: str = url, gate: threading.Barrier = gate) -> None:
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    gate.wait()
                    ensure_state(conn, "raced")
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, (round_, errors)
        with psycopg.connect(url) as conn:
            assert conn.execute(sql.SQL("select count(*) from {}").format(
                sql.Identifier("tidemark", "checkpoints"))).fetchone() == (0,)


def test_an_older_landing_gets_the_waiting_letters_index_in_commit_order(pg) -> None:
    # Before round 36 the waiting letters' index was (source, table_name): `ingest prune`'s
    # oldest waiting letter then read every waiting letter, or walked the unique index past the
    # resolved ones. An older landing gets the index in commit order and loses the old one.
    url = create_database(pg, "state_upgrade")
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_state(conn, "s")
        conn.execute("drop index tidemark.dead_letters_waiting_lsn")
        conn.execute("create index dead_letters_waiting on tidemark.dead_letters"
                     " (source, table_name) where replayed_at is null")
        ensure_state(conn, "s")
        indexes = dict(conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = 'tidemark' and"
            " tablename = 'dead_letters' and indexname like 'dead_letters_waiting%'").fetchall())
    assert sorted(indexes) == ["dead_letters_waiting_lsn", "dead_letters_waiting_seen"]
    assert "(source, table_name, commit_lsn, seq) WHERE (replayed_at IS NULL)" in indexes[
        "dead_letters_waiting_lsn"]
