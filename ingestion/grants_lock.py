"""Ingestion's DDL and the landing grants take turns.

The bootstrap's landing grants (``tidemark.stack.bootstrap.grant_landing``: ``GRANT ... ON ALL
TABLES IN SCHEMA cdc``, ``REVOKE ALL ON ALL TABLES IN SCHEMA tidemark``) rewrite the catalog
row of every table in those schemas. ingestion's DDL rewrites some of the same rows (a column
added to a changelog, a snapshot's swap, the state tables' upgrade). A GRANT that meets a row an
open transaction updated waits for it, then fails with "tuple concurrently updated" once it
commits (round 38: `tidemark up`'s view ticker beside `ingest run` of a second source).

So the grants hold :data:`GRANTS_LOCK` exclusively on the landing database while they run,
and every landing transaction of ingestion that alters or replaces a table of those schemas
takes it shared (:func:`hold_off_grants`) before its first DDL: the two wait for each other
instead of failing, and ingestion's transactions never wait for one another. A DDL taking it
while the grants run waits for them (a second at most); grants that start while a long DDL
transaction is open (a schema change's backfill) wait for its commit, as their GRANT did.

``CREATE INDEX CONCURRENTLY`` (the contracts' and the dead letters' indexes) runs outside a
transaction and does not take it: holding an advisory lock across it would deadlock with grants
waiting for the lock, whose snapshot it waits out. Its catalog updates are in-place or of rows
the grants do not touch (a new index).
"""

from __future__ import annotations

import psycopg

GRANTS_LOCK = "tidemark.bootstrap"
"""The advisory lock key (``hashtext``) of the landing grants, in the landing database."""


def hold_off_grants(conn: psycopg.Connection) -> None:
    """Take :data:`GRANTS_LOCK` shared until the end of ``conn``'s transaction (in which the
    caller's DDL runs); waits while the landing grants run."""
    conn.execute("select pg_advisory_xact_lock_shared(hashtext(%s))", (GRANTS_LOCK,))


def lock_grants(conn: psycopg.Connection) -> None:
    """Take :data:`GRANTS_LOCK` exclusively for ``conn``'s session (the landing grants' own
    connection: released when it closes); waits for ingestion's open DDL transactions."""
    conn.execute("select pg_advisory_lock(hashtext(%s))", (GRANTS_LOCK,))
