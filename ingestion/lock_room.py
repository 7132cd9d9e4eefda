"""Room in landing's lock table for a snapshot of many tables.

A snapshot lands every table it copies in one landing transaction (committed with the
checkpoint). A staged table new to landing is moved in with ~2 locks (``SET SCHEMA`` of its
mirror and changelog: 629 locks for 300 tables); one whose landing names are taken is swapped
in instead (its landing tables created, dropped, the staged ones moved and renamed with their
indexes and TOAST tables), and a landing role that may not create schemas loads every table in
place: up to :data:`LOCKS_PER_TABLE` locks per table (measured: 415 for 20 tables, 815 for
40), all held until it commits. PostgreSQL's lock table
holds ``max_locks_per_transaction`` × (``max_connections`` + ``max_prepared_transactions``)
of them (a little more in practice) for the whole server, so a source of a few thousand tables
fails its first snapshot with ``out of shared memory`` at PostgreSQL's default of 64. That
error is of the "insufficient resources" class, which ingestion would otherwise retry forever,
redoing the whole snapshot each time: :func:`locks_error` turns it into a permanent error with
the setting to raise.
"""

from __future__ import annotations

import math

import psycopg

from ingestion.errors import LandingLocksError

LOCKS_PER_TABLE = 40
"""Locks a table's snapshot takes in the final landing transaction at most (rounded up)."""


def wanted_locks_setting(tables: int, backends: int) -> int:
    """The ``max_locks_per_transaction`` that holds a snapshot of ``tables`` tables, for a
    server of ``backends`` connections (``max_connections`` + ``max_prepared_transactions``),
    rounded up to a multiple of 64."""
    return max(64, math.ceil(LOCKS_PER_TABLE * tables / max(backends, 1) / 64) * 64)


def tables_per_transaction(conn: psycopg.Connection, locks_per_table: int = 8) -> int:
    """How many tables one transaction of ``conn`` may create or drop, ~``locks_per_table``
    locks each (a table, its indexes, its TOAST table and index, a sequence), and stay within
    its share of the lock table (``max_locks_per_transaction``): at least 1, at most 100.
    Ends ``conn``'s transaction (a rollback)."""
    per = conn.execute("select current_setting('max_locks_per_transaction')::int").fetchone()[0]
    conn.rollback()
    return max(1, min(100, per // locks_per_table))


def locks_error(landing_dsn: str, source: str, tables: int,
                exc: psycopg.errors.OutOfMemory) -> LandingLocksError:
    """The permanent error to raise for ``exc``, landing's ``out of shared memory`` during the
    snapshot of ``tables`` tables: what the snapshot needs and the setting that gives it."""
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        per, backends = conn.execute(
            "select current_setting('max_locks_per_transaction')::int,"
            " current_setting('max_connections')::int"
            " + current_setting('max_prepared_transactions')::int").fetchone()
    wanted = wanted_locks_setting(tables, backends)
    return LandingLocksError(
        f"source {source}: the snapshot of {tables:,} tables takes about "
        f"{LOCKS_PER_TABLE * tables:,} locks in one landing transaction, more than landing's "
        f"lock table holds (max_locks_per_transaction = {per} for {backends} connections; "
        f"PostgreSQL says: {(exc.diag.message_primary or str(exc)).strip()}). On landing, as "
        f"a superuser, run  alter system set max_locks_per_transaction = {wanted};  and "
        f"restart the server, then start ingestion again (or split the tables between "
        f"sources, each with --tables or fewer --schemas).")
