"""Initial snapshot: the slot's exported snapshot, COPYed table by table into landing.

``CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`` on the replication connection returns the
slot's consistent point and a snapshot name; a second (normal) connection reads every published
table in ``REPEATABLE READ`` with ``SET TRANSACTION SNAPSHOT``, while the replication connection
stays idle. Streaming then starts at the consistent point: every transaction committed before it
is in the snapshot, every later one comes from the slot, so there is no gap and no duplicate.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg2 import sql as sql2

from ingestion.applier import Applier
from ingestion.catalog import published_tables
from ingestion.copytext import parse_lines
from ingestion.lsn import str_to_lsn
from ingestion.relations import RelationTracker
from ingestion.tables import SNAPSHOT_SEQ, TableInfo, mark_resnapshot

log = logging.getLogger("tidemark.ingestion")


def create_slot_exporting(repl_cursor, slot: str, temporary: bool = False) -> tuple[int, str]:
    """Create a pgoutput slot on a psycopg2 replication cursor, exporting its snapshot.

    Returns:
        (consistent point LSN, exported snapshot name).
    """
    command = sql2.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
        sql2.Identifier(slot), sql2.SQL("TEMPORARY" if temporary else ""))
    repl_cursor.execute(command)
    row = repl_cursor.fetchone()
    return str_to_lsn(row[1]), row[2]


def open_snapshot(source_dsn: str, snapshot_name: str) -> psycopg.Connection:
    """A source connection whose transaction sees exactly the exported snapshot."""
    conn = psycopg.connect(source_dsn)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot_name)))
    return conn


def copy_table(src: psycopg.Connection, applier: Applier, info: TableInfo, lsn: int,
               seq_start: int = SNAPSHOT_SEQ) -> int:
    """COPY one table from the snapshot connection into the applier as ``r`` changes.

    Their ``_seq`` count up from :data:`~ingestion.tables.SNAPSHOT_SEQ` (negative): a source
    transaction that commits exactly at the snapshot's LSN is streamed with positive ``_seq``
    values at the same ``_commit_lsn``, after the snapshot's rows and never equal to them.

    Returns:
        The number of rows read.
    """
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    query = sql.SQL("copy (select {} from {}) to stdout").format(
        cols, sql.Identifier(info.source_schema, info.source_table))
    seq = seq_start
    with src.cursor() as cur, cur.copy(query) as copy:
        for row in parse_lines(copy):
            seq += 1
            applier.add(info, "r", row, None, lsn, seq)
    return seq - seq_start


def snapshot_tables(src: psycopg.Connection, applier: Applier, tracker: RelationTracker,
                    publication: str, lsn: int, only: set[str] | None = None) -> int:
    """Load every published table (or those named in ``only``) as of the snapshot.

    The mirrors are emptied first; everything happens in the applier's open transaction, which
    the caller commits together with the checkpoint.

    Returns:
        Rows loaded.
    """
    applier.begin()
    applier.start_source_txn(lsn, datetime.now(UTC), None)
    total = 0
    for oid, namespace, table in published_tables(src, publication):
        info = tracker.from_catalog(oid, namespace, table)
        if only is not None and info.name not in only:
            continue
        if info.paused_reason is not None:
            log.warning("snapshot skips paused table %s: %s", info.qualified, info.paused_reason)
            continue
        applier.conn.execute(sql.SQL("delete from {}").format(info.mirror))
        mark_resnapshot(applier.conn, info, lsn)
        rows = copy_table(src, applier, info, lsn)
        applier.flush(info)
        log.info("snapshot: %s rows of %s", rows, info.qualified)
        total += rows
    return total
