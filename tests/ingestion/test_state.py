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
