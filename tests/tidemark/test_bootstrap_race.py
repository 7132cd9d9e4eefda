"""The bootstrap's landing grants beside ingestion's DDL (round 38's CI: `tidemark up`'s view
ticker failed with "tuple concurrently updated" while `ingest run` of a second source created
its tables). A GRANT or REVOKE that meets a catalog row another open transaction updated waits
for it, then fails when it commits. Ingestion's DDL now takes the bootstrap's advisory lock
shared in its transaction and the grants take it exclusively, so they wait for each other
instead (round 38 only ran the grants again)."""

from __future__ import annotations

import threading
import time

import psycopg

from ingestion.tables import ColumnInfo, TableInfo, add_column, create_landing_tables
from tests.support import create_database
from tidemark.settings import APP_ROLE
from tidemark.stack.bootstrap import ensure_roles, grant_landing
from tidemark.stack.embedded import EmbeddedServer


def _info() -> TableInfo:
    return TableInfo(source="racesrc", name="t", source_schema="public", source_table="t",
                     source_oid=1, columns=[ColumnInfo("id", 23, -1, "integer")], key=["id"])


def _waiting(conn: psycopg.Connection, pid_not: int) -> str | None:
    """What another session of this database waits for (``Lock``'s type), or None."""
    row = conn.execute("select wait_event from pg_stat_activity where datname ="
                       " current_database() and pid <> %s and pid <> pg_backend_pid()"
                       " and wait_event_type = 'Lock'", (pid_not,)).fetchone()
    return row[0] if row else None


def test_landing_grants_wait_for_ingestions_ddl_instead_of_failing(pg: EmbeddedServer) -> None:
    """On main the grants waited for the transaction's catalog row, then failed with "tuple
    concurrently updated" when it committed."""
    name = "grants_race"
    landing = create_database(pg, name)
    ensure_roles(pg.admin_url("postgres"))
    grant_landing(landing)
    app = pg.url(name, APP_ROLE)
    info = _info()
    with psycopg.connect(app) as conn:
        create_landing_tables(conn, info)
    errors: list[BaseException] = []
    with psycopg.connect(app) as ingest, psycopg.connect(landing, autocommit=True) as watch:
        # a schema change followed from the source: ingestion's landing transaction adds the
        # column to the changelog (its catalog row, which the grants on cdc rewrite)
        add_column(ingest, info, ColumnInfo("note", 25, -1, "text"))

        def bootstrap() -> None:
            try:
                grant_landing(landing)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=bootstrap)
        thread.start()
        for _ in range(200):  # until the grants wait for the open DDL transaction
            if _waiting(watch, ingest.info.backend_pid):
                break
            time.sleep(0.05)
        waited_for = _waiting(watch, ingest.info.backend_pid)
        ingest.commit()
        thread.join(60)
    assert not errors, errors
    assert waited_for == "advisory"  # for ingestion.grants_lock, not for a catalog row
