"""One writer reshaping a changelog at a time: resync against ``tidemark ingest prune``.

A resync alters a table's changelog (new or retyped columns: ``ACCESS EXCLUSIVE``) in a
transaction that lasts as long as the snapshot's copy. A prune overlapping it used to wait,
silently, until that transaction ended; a resync arriving while a prune batch ran waited behind
the batch while holding the emptied mirror's ``ACCESS EXCLUSIVE`` lock. They now share an
advisory lock per changelog, on landing: a resync takes it exclusively for its transaction
(waiting at most one prune batch, before it empties the mirror or alters the changelog; the
source's ingestion, whose lock the resync holds by then, waits as long); a prune takes it
shared, and only if it is free, for each of its transactions, and otherwise stops pruning that
table with a message saying why.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger("tidemark.ingestion")

_KEY = "tidemark:changelog"


def _params(source: str, table: str) -> tuple[str, str]:
    return _KEY, f"{source}.{table}"


def lock_for_resync(conn: psycopg.Connection, source: str, table: str) -> None:
    """Take the changelog's lock for the caller's transaction, waiting for a prune batch.

    Args:
        conn: landing connection in the resync's open transaction.
        source: source name.
        table: landing table name.
    """
    got = conn.execute("select pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                       _params(source, table)).fetchone()[0]
    if not got:
        log.info("resync of %s.%s waits for the running prune of its changelog (one batch)",
                 source, table)
        conn.execute("select pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                     _params(source, table))


def try_lock_for_prune(conn: psycopg.Connection, source: str, table: str) -> bool:
    """Take the changelog's lock shared for the caller's transaction, if no resync holds it.

    Args:
        conn: landing connection in the prune's open transaction.
        source: source name.
        table: landing table name.

    Returns:
        False when a resync of the table is running (nothing was locked).
    """
    return conn.execute("select pg_try_advisory_xact_lock_shared(hashtext(%s), hashtext(%s))",
                        _params(source, table)).fetchone()[0]


def resync_running(source: str, table: str) -> str:
    """What a prune says of a table it stopped pruning because a resync of it is running."""
    return (f"a resync of {source}.{table} is running; prune it again when the resync has "
            f"finished")
