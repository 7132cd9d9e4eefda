"""Relation tracking: maps the stream's relation OIDs to landing tables and keeps the landing DDL in
step with Relation messages (new tables, added columns, breaking changes that pause a table).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import psycopg
from psycopg import sql

from ingestion.applier import Applier
from ingestion.catalog import key_columns, table_columns, type_names
from ingestion.decoder import Relation
from ingestion.lsn import lsn_to_str
from ingestion.names import landing_table_name
from ingestion.state import record_schema_change
from ingestion.tables import (
    ColumnInfo,
    TableInfo,
    add_column,
    create_landing_tables,
    diff_columns,
    load_tables,
    save_table,
    table_versions,
)

log = logging.getLogger("tidemark.ingestion")


def resync_hint(source: str, table: str) -> str:
    """The command that rebuilds a paused table."""
    return f"`tidemark ingest resync {table} --source {source}`"


class RelationTracker:
    """Knows every replicated table of a source and which stream relation OID maps to which.

    Args:
        applier: the applier (its connection carries the landing DDL, in its transaction).
        source_conn: an autocommit psycopg connection to the source (catalog look-ups).
        source: source name.
    """

    def __init__(self, applier: Applier, source_conn: psycopg.Connection, source: str) -> None:
        self.applier = applier
        self.source_conn = source_conn
        self.source = source
        self.by_oid: dict[int, TableInfo] = {}
        self.messages: dict[int, Relation] = {}
        self._versions: dict[str, tuple[int, bool]] = {}

    # -- registry ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the registry (inside the applier's transaction)."""
        self.applier.tables = load_tables(self.applier.conn, self.source)
        self._versions = {n: (t.version, t.paused_reason is not None)
                          for n, t in self.applier.tables.items()}

    def refresh_if_changed(self) -> None:
        """Reload tables that another process (a resync) changed since we read them."""
        current = table_versions(self.applier.conn, self.source)
        if current == self._versions:
            return
        self.load()
        for oid, rel in list(self.messages.items()):
            self.by_oid.pop(oid, None)
            self.on_relation(rel, None)

    # -- building table info ----------------------------------------------------------------

    def _columns(self, cols: list[tuple[str, int, int]]) -> list[ColumnInfo]:
        names = type_names(self.source_conn, [(t, m) for _, t, m in cols])
        return [ColumnInfo(n, t, m, names[(t, m)]) for n, t, m in cols]

    def register(self, oid: int, namespace: str, table: str,
                 columns: list[ColumnInfo], lsn: int | None) -> TableInfo:
        """Create landing tables and the registry row for a table seen for the first time."""
        name = landing_table_name(namespace, table)
        key = key_columns(self.source_conn, oid)
        info = TableInfo(self.source, name, namespace, table, oid, columns, key)
        if not key:
            info.paused_reason = (
                f"Table {info.qualified} has no primary key or replica identity index, so its "
                f"mirror cannot be kept; its changes are kept in tidemark.paused_changes. Add a "
                f"primary key on the source, then run {resync_hint(self.source, name)}.")
            log.error(info.paused_reason)
        else:
            create_landing_tables(self.applier.conn, info)
            contract = self.applier.contract_for(info)
            idem = getattr(contract, "idempotency_key", None) if contract is not None else None
            if idem and idem in info.column_names:
                self.applier.conn.execute(sql.SQL("create index if not exists {} on {} ({})")
                                          .format(sql.Identifier(f"{name}__{idem}_idem"[:63]),
                                                  info.mirror, sql.Identifier(idem)))
        save_table(self.applier.conn, info)
        record_schema_change(self.applier.conn, self.source, name,
                             lsn_to_str(lsn) if lsn is not None else None, "create_table", None,
                             f"landing tables created with {len(columns)} columns, key "
                             f"{', '.join(key) or 'none'}", "applied")
        self.applier.tables[name] = info
        self._versions[name] = (info.version, info.paused_reason is not None)
        return info

    def from_catalog(self, oid: int, namespace: str, table: str) -> TableInfo:
        """The table as the source catalog shows it now (registering it if new)."""
        self.applier.begin()
        name = landing_table_name(namespace, table)
        info = self.applier.tables.get(name)
        if info is None:
            cols = self._columns([(n, t, m) for n, t, m, _ in table_columns(self.source_conn,
                                                                               oid)])
            info = self.register(oid, namespace, table, cols, None)
        return info

    # -- stream -----------------------------------------------------------------------------

    def table(self, relid: int) -> TableInfo:
        """The landing table of a stream relation OID."""
        return self.by_oid[relid]

    def on_relation(self, rel: Relation, lsn: int | None) -> TableInfo:
        """Handle a Relation message: map it, create or alter landing tables, or pause."""
        self.messages[rel.oid] = rel
        self.applier.begin()
        cols = self._columns([(c.name, c.type_oid, c.typmod) for c in rel.columns])
        name = landing_table_name(rel.namespace, rel.name)
        info = self.applier.tables.get(name)
        if info is None:
            info = self.register(rel.oid, rel.namespace, rel.name, cols, lsn)
        elif info.paused_reason is None:
            info = self._follow(info, cols, lsn)
        if info.paused_reason is not None and [c.name for c in cols] != info.column_names:
            # Keep the raw changes under the column names the stream uses now.
            info = replace(info, columns=cols)
        self.by_oid[rel.oid] = info
        return info

    def _follow(self, info: TableInfo, cols: list[ColumnInfo], lsn: int | None) -> TableInfo:
        not_null = {n for n, _, _, nn in table_columns(self.source_conn, info.source_oid) if nn}
        changes = diff_columns(info.columns, cols, not_null)
        if not changes:
            return info
        contract = self.applier.contract_for(info)
        at = lsn_to_str(lsn) if lsn is not None else None
        blocking = [c for c in changes if c.breaking or
                    (contract is not None and not contract.allows(c.kind, c.column))]
        self.applier.flush(info)
        if blocking:
            first = blocking[0]
            info.paused_reason = (
                f"Table {info.qualified} is paused at LSN {at}: {first.detail} on the source "
                f"({first.kind}"
                + ("" if first.breaking else ", not allowed by its contract")
                + f"). Its other changes are kept in tidemark.paused_changes and other tables keep"
                f" flowing. Resolve with {resync_hint(self.source, info.name)}, which rebuilds it"
                f" from a fresh snapshot and loses nothing.")
            log.error(info.paused_reason)
            for change in changes:
                record_schema_change(self.applier.conn, self.source, info.name, at, change.kind,
                                     change.column, change.detail, "paused")
        else:
            for change in changes:
                add_column(self.applier.conn, info, change.new_column)
                record_schema_change(self.applier.conn, self.source, info.name, at, change.kind,
                                     change.column, change.detail, "applied")
                log.info("%s: %s; added to mirror and changelog", info.qualified, change.detail)
            info.columns = cols
            info.refresh()
        info.version += 1
        save_table(self.applier.conn, info)
        self._versions[info.name] = (info.version, info.paused_reason is not None)
        return info
