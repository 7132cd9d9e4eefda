"""Relation tracking: maps the stream's relation OIDs to landing tables and keeps the landing DDL in
step with Relation messages.

New tables get a mirror and changelog (with the table's key, or keyless). Changes landing can
follow are applied in the landing transaction, at their place in the stream: added columns (with
the value existing rows have on the source, see :mod:`ingestion.backfill`), safe type changes,
dropped columns the contract marks optional (kept, NULL from now on) and every dropped column of
a table without a contract (kept, NULL in rows written from now on), a key gained or lost. Any
other change pauses the table, at the commit LSN of the first change kept, with a message saying
what to do; a column added with a per-row default pauses it for an automatic resync. The DDL
that follows a change is :mod:`ingestion.schema_follow`'s.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from ingestion.applier import Applier
from ingestion.backfill import holds_no_rows, needs_resync
from ingestion.catalog import (
    column_attnums,
    column_defaults,
    copy_blocker,
    key_columns,
    table_columns,
    type_names,
)
from ingestion.catalog_batch import TableCatalog, tables_catalog
from ingestion.decoder import Relation
from ingestion.errors import TablesChangedError
from ingestion.landing_indexes import create_landing
from ingestion.letter_indexes import stale_letter_index
from ingestion.lsn import lsn_to_str
from ingestion.names import landing_table_name, publication_name
from ingestion.schema_changes import (
    SchemaChange,
    contract_lag_warning,
    diff_columns,
    renumbered_columns,
    with_defaults,
)
from ingestion.schema_follow import apply_changes, exclusive_tables
from ingestion.state import record_schema_change
from ingestion.tables import (
    ColumnInfo,
    TableInfo,
    landing_blocker,
    load_tables,
    save_table,
    table_versions,
)
from ingestion.versions import source_capabilities

log = logging.getLogger("tidemark.ingestion")

_BLOCKED_BY_DEPENDENTS = (psycopg.errors.DependentObjectsStillExist,
                          psycopg.errors.FeatureNotSupported)


def _kept_without_contract(change: SchemaChange) -> SchemaChange:
    """A dropped column of a table without a contract, saying what landing does with it."""
    return replace(change, detail=f"{change.detail} (no contract: mirror and changelog keep "
                                  f"the column, NULL in rows written from now on; earlier "
                                  f"rows keep their values)")


def resync_hint(source: str, table: str) -> str:
    """The command that rebuilds a paused table (the name quoted for the shell if needed)."""
    return f"`tidemark ingest resync {shlex.quote(table)} --source {source}`"


class RelationTracker:
    """Knows every replicated table of a source and which stream relation OID maps to which.

    Args:
        applier: the applier (its connection carries the landing DDL, in its transaction).
        source_conn: an autocommit psycopg connection to the source (catalog look-ups).
        source: source name.

    Attributes:
        resync_wanted: tables paused for an automatic resync (the session runs it).
    """

    def __init__(self, applier: Applier, source_conn: psycopg.Connection, source: str) -> None:
        self.applier = applier
        self.source_conn = source_conn
        self.source = source
        self.by_oid: dict[int, TableInfo] = {}
        self.messages: dict[int, tuple[Relation, int | None]] = {}  # the last, and its LSN
        self.resync_wanted: set[str] = set()
        self._routed: dict[int, bool] = {}
        self.routed_skipped: set[int] = set()  # partitions whose own changes were skipped
        self._versions: dict[str, tuple[int, bool]] = {}
        self._prefetched: dict[int, TableCatalog] = {}  # :meth:`prefetch`
        self._type_names: dict[tuple[int, int], str] = {}  # built-in types' never change
        applier.pause_hook = self._pause_from_applier

    # -- registry ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the registry (inside the applier's transaction)."""
        self.applier.tables = load_tables(self.applier.conn, self.source)
        self._versions = {n: (t.version, t.paused_reason is not None)
                          for n, t in self.applier.tables.items()}
        self.resync_wanted = {n for n, t in self.applier.tables.items() if t.auto_resync}

    @property
    def versions(self) -> dict[str, tuple[int, bool]]:
        """(version, paused) of every table as this tracker knows them."""
        return dict(self._versions)

    def refresh_if_changed(self) -> None:
        """Reload tables that another process (a resync) changed since we read them."""
        current = table_versions(self.applier.conn, self.source)
        if current == self._versions:
            return
        if self.applier.buffered():
            # Changes decoded while the previous landing commit ran were sorted with the old
            # registry (e.g. a resync's snapshot LSN unknown): redo them from the checkpoint.
            raise TablesChangedError(f"tables of source {self.source!r} changed in landing (a "
                                     f"resync) while changes were buffered; restarting the "
                                     f"session from the checkpoint")
        self.load()
        for oid, (rel, lsn) in list(self.messages.items()):
            self.by_oid.pop(oid, None)
            # At its own LSN: a message older than a resync's snapshot shows a shape older
            # than the resynced one (a DDL no row change has streamed yet), not a change.
            self.on_relation(rel, lsn)

    # -- building table info ----------------------------------------------------------------

    def columns(self, cols: list[tuple[str, int, int]]) -> list[ColumnInfo]:
        """Column infos, with landing type names, for (name, type OID, typmod) triples."""
        missing = [(t, m) for _, t, m in cols if (t, m) not in self._type_names]
        if missing:
            self._type_names.update(type_names(self.source_conn, missing))
        return [ColumnInfo(n, t, m, self._type_names[(t, m)]) for n, t, m in cols]

    def numbered(self, oid: int, cols: list[ColumnInfo], nums: dict[str, int] | None = None
                 ) -> list[ColumnInfo]:
        """``cols`` with their source ``attnum`` as the catalog has it now (``nums``: read
        already)."""
        nums = column_attnums(self.source_conn, oid) if nums is None else nums
        return [replace(c, attnum=nums.get(c.name)) for c in cols]

    def prefetch(self, oids: list[int]) -> None:
        """Read the source catalog of the tables ``oids`` at once
        (:func:`ingestion.catalog_batch.tables_catalog`): a first snapshot's
        :meth:`from_catalog` of each takes it from there. An empty list forgets what is left."""
        self._prefetched = tables_catalog(self.source_conn, oids, publication_name(self.source))
        self.columns([(n, t, m) for c in self._prefetched.values() for n, t, m, _ in c.columns])

    def _key(self, rel: Relation, info: TableInfo | None) -> list[str]:
        """The key the stream identifies rows by, as of the message.

        ``DEFAULT`` / ``USING INDEX``: the columns the message flags, exact at its point in the
        stream. ``FULL`` / ``NOTHING`` flag every column or none, so the catalog is asked, but the
        catalog is *now*, maybe later than the message: a keyless table stays keyless (under
        ``FULL`` bag semantics are always right), and a key the catalog no longer shows turns
        the table keyless; a key is taken only for a table seen for the first time.
        """
        if rel.replica_identity in ("d", "i"):
            flagged = [c.name for c in rel.columns if c.is_key]
            if info is not None and sorted(info.key) == sorted(flagged):
                return info.key
            catalog = key_columns(self.source_conn, rel.oid)
            return catalog if sorted(catalog) == sorted(flagged) else flagged
        catalog = key_columns(self.source_conn, rel.oid)
        if info is None:
            return catalog
        return info.key if info.key == catalog else []

    def register(self, oid: int, namespace: str, table: str, columns: list[ColumnInfo],
                 key: list[str], lsn: int | None, landing: bool = True,
                 catalog: TableCatalog | None = None) -> TableInfo:
        """Create landing tables (unless not ``landing``: a snapshot moves its staged ones in)
        and the registry row for a table seen for the first time (``catalog``: its source
        catalog, read already by :meth:`prefetch`)."""
        name = landing_table_name(namespace, table)
        columns = self.numbered(oid, columns, None if catalog is None else catalog.attnums)
        info = TableInfo(self.source, name, namespace, table, oid, columns, key)
        self.applier.tables[name] = info
        cannot = landing_blocker(info) or (
            self._unreadable(info) if catalog is None else catalog.blocker)
        if cannot is not None:  # landing tables once that is fixed, by a resync
            self.pause(info, [], lsn, cannot)
            return info
        if landing:
            create_landing(self.applier.conn, info, self.applier.contract_for(info))
        save_table(self.applier.conn, info)
        record_schema_change(self.applier.conn, self.source, name,
                             lsn_to_str(lsn) if lsn is not None else None, "create_table", None,
                             f"landing tables created with {len(columns)} columns, key "
                             f"{', '.join(key) or 'none (keyless: bag semantics)'}", "applied")
        self.applier.tables[name] = info
        self._versions[name] = (info.version, False)
        return info

    def from_catalog(self, oid: int, namespace: str, table: str,
                     lsn: int | None = None, landing: bool = True) -> TableInfo:
        """The table as the source catalog shows it now (registering it if new, as of the
        snapshot at ``lsn``; its landing tables too unless not ``landing``)."""
        self.applier.begin()
        name = landing_table_name(namespace, table)
        info = self.applier.tables.get(name)
        if info is None:
            pre = self._prefetched.pop(oid, None)
            rows = table_columns(self.source_conn, oid, publication_name(self.source)) \
                if pre is None else pre.columns
            cols = self.columns([(n, t, m) for n, t, m, _ in rows])
            key = key_columns(self.source_conn, oid) if pre is None else pre.key
            info = self.register(oid, namespace, table, cols, key, lsn, landing, pre)
        return info

    # -- stream -----------------------------------------------------------------------------

    def table(self, relid: int) -> TableInfo:
        """The landing table of a stream relation OID."""
        return self.by_oid[relid]

    def on_relation(self, rel: Relation, lsn: int | None) -> TableInfo | None:
        """Handle a Relation message: map it, create or alter landing tables, or pause.

        Args:
            rel: the message.
            lsn: where it takes effect: the commit LSN of the source transaction it came in
                (pgoutput sends Relation messages without an LSN of their own).

        Returns:
            The table, or None for a partition published within its root (no landing table).
        """
        name = landing_table_name(rel.namespace, rel.name)
        info = self.applier.tables.get(name)
        if info is None and self.within_root(rel.oid):
            return None
        self.applier.begin()
        if lsn is None and self.applier.txn is not None:
            lsn = self.applier.txn.commit_lsn
        self.messages[rel.oid] = (rel, lsn)
        if info is not None and lsn is not None and lsn < info.snapshot_lsn:
            # A shape from before the table's resync snapshot: its changes go to the
            # changelog only, mapped onto the current columns; nothing to follow.
            view = info.for_stream_shape([c.name for c in rel.columns])
            self.by_oid[rel.oid] = view
            return view
        cols = self.columns([(c.name, c.type_oid, c.typmod) for c in rel.columns])
        key = self._key(rel, info)
        if info is None:
            renamed = next((t for t in self.applier.tables.values() if t.source_oid == rel.oid),
                           None)
            info = self.register(rel.oid, rel.namespace, rel.name, cols, key, lsn)
            if renamed is not None:
                self.recopy(info, lsn, f"it is {renamed.source_schema}.{renamed.source_table} "
                            f"renamed, whose rows are in {renamed.qualified} (which stops "
                            f"changing; drop it when you no longer need it), not yet in "
                            f"{info.qualified}", "rename_table")
        elif info.paused_reason is None and info.source_oid and rel.oid != info.source_oid:
            if self._oid_now(rel) != rel.oid:  # the dropped table's, replayed from the cache
                view = info.for_stream_shape([c.name for c in rel.columns])
                self.by_oid[rel.oid] = view
                return view
            self.recreated(info, rel.oid, lsn)
        elif info.paused_reason is None:
            info = self._follow(info, cols, key, lsn)
        if info.paused_reason is not None and [c.name for c in cols] != info.column_names:
            # Keep the raw changes under the column names the stream uses now.
            info = replace(info, columns=cols)
        self.by_oid[rel.oid] = info
        return info

    def _allowed(self, contract: Any, change: SchemaChange) -> bool:
        if not change.followable:
            return False
        if contract is None:  # no promise to keep: follow it, a dropped column included
            return True
        return contract.allows(change.kind, change.column)

    def _follow(self, info: TableInfo, cols: list[ColumnInfo], key: list[str], lsn: int | None
                ) -> TableInfo:
        not_null = {n for n, _, _, nn in table_columns(
            self.source_conn, info.source_oid, publication_name(self.source)) if nn}
        changes = diff_columns(info.columns, cols, not_null, info.retired)
        cols = self.numbered(info.source_oid, cols)
        readded = [c.detail for c in changes if c.kind == "readd_column"] or renumbered_columns(
            info.columns, cols)
        if readded:
            # The source's rows hold the column's new values (NULL, or its default), and the
            # stream's rows may hold it at another place: only a fresh copy has them.
            self.recopy(info, lsn, "; ".join(readded), "readd_column")
            return info
        if not changes and sorted(key) == sorted(info.key):
            if any(c.attnum is None for c in info.columns):  # a registry from before attnums
                info.columns = cols
                save_table(self.applier.conn, info)
            return info
        added = [c.column for c in changes if c.kind.startswith("add_")]
        defaults = column_defaults(self.source_conn, info.source_oid, added) if added else {}
        changes = with_defaults(changes, defaults)
        contract = self.applier.contract_for(info)
        kept = {c.name for c in info.retired} if contract is None else set()
        back = [c.column for c in changes if c.kind.startswith("add_") and c.column in kept]
        if back:
            # Its values stayed in the mirror at the drop (no contract); the source's rows
            # read NULL (or the default) in the column added again: only a fresh copy has them.
            self.recopy(info, lsn, f"column {back[0]!r} was dropped on the source (landing "
                        f"kept its values) and added again, so the existing rows' values are "
                        f"not the ones landing holds", "readd_column")
            return info
        if contract is None:
            changes = [_kept_without_contract(c) if c.kind == "drop_column" else c
                       for c in changes]
        at = lsn_to_str(lsn) if lsn is not None else None
        self.applier.flush(info)
        blocking = [c for c in changes if not self._allowed(contract, c)]
        reserved = landing_blocker(replace(info, columns=cols))
        if reserved is not None:
            self.pause(info, changes, lsn, reserved)
            return info
        if blocking:
            first = blocking[0]
            self.pause(info, changes, lsn, f"{first.detail} on the source ({first.kind}"
                        + (", not allowed by its contract" if first.followable else "") + ")")
            return info
        per_row = needs_resync(defaults)
        if per_row and not holds_no_rows(self.applier.conn, info, self.applier._dead):
            expr = defaults[per_row[0]].expression or "an identity"
            info.auto_resync = True
            self.resync_wanted.add(info.name)
            self.pause(info, changes, lsn,
                        f"column {per_row[0]!r} was added with default {expr} and the source "
                        f"table was rewritten (a default evaluated per row, or a later "
                        f"rewrite), so only the source's rows hold the existing rows' values; "
                        f"Tidemark resyncs the table by itself, nothing to do")
            return info
        what = "apply a schema change (" + "; ".join(
            [c.detail for c in changes] + (["key changed"] if sorted(key) != sorted(info.key)
                                           else [])) + ")"
        stale = stale_letter_index(self.applier.conn, info, replace(info, columns=cols, key=key))
        try:
            # ALTER TABLE takes ACCESS EXCLUSIVE: waited for without queueing readers
            retired = self.applier.ddl_locks.run(
                self.applier.conn, info.qualified, exclusive_tables(info, changes, key, stale),
                what, lambda: apply_changes(self.applier, info, changes, cols, key, defaults,
                                            lsn, keep_values=contract is None, stale=stale))
        except _BLOCKED_BY_DEPENDENTS as exc:
            detail = (exc.diag.message_detail or exc.diag.message_primary or str(exc)).strip()
            self.pause(info, changes, lsn,
                        f"{changes[0].detail if changes else 'the key changed'} on the source, "
                        f"but other objects depend on the landing table ({detail}); update or "
                        f"drop them first")
            return info
        except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation) as exc:
            self.pause(info, changes, lsn,
                        f"the key became ({', '.join(key)}), which the mirror's rows do not fit"
                        f" ({exc.diag.message_primary})")
            return info
        info.retired = retired
        for change in changes:
            record_schema_change(self.applier.conn, self.source, info.name, at, change.kind,
                                 change.column, change.detail, "applied")
            log.info("%s: %s; applied to mirror and changelog", info.qualified, change.detail)
            lag = contract_lag_warning(contract, change)
            if lag is not None:
                log.warning("%s: %s", info.qualified, lag)
        if sorted(key) != sorted(info.key):
            record_schema_change(self.applier.conn, self.source, info.name, at, "change_key",
                                 None, f"key changed from ({', '.join(info.key)}) to "
                                       f"({', '.join(key)})", "applied")
        info.key = key
        info.columns = cols
        info.refresh()
        info.version += 1
        save_table(self.applier.conn, info)
        self._versions[info.name] = (info.version, False)
        return info

    def recopy(self, info: TableInfo, lsn: int | None, what: str, kind: str) -> None:
        """Pause a table whose landing rows are not the source table's (``what`` says why) and
        have the session resync it by itself: a fresh copy, then its kept changes."""
        self.applier.flush(info)
        info.auto_resync = True
        self.resync_wanted.add(info.name)
        self.pause(info, [], lsn, f"{what}; Tidemark copies the table again by itself, "
                    f"nothing to do")
        record_schema_change(self.applier.conn, self.source, info.name,
                             lsn_to_str(lsn) if lsn is not None else None, kind, None, what,
                             "paused")

    def within_root(self, oid: int) -> bool:
        """Whether a relation is a partition the publication sends within its root
        (``publish_via_partition_root``, PostgreSQL 13+): pgoutput sends the partition's
        Relation message beside the root's, but every change under the root's OID."""
        if oid not in self._routed:
            row = self.source_conn.execute(  # or its root lands: the option turned off
                "select c.relispartition and (p.pubviaroot or pg_partition_root(c.oid)::int ="
                " any(%s)) from pg_class c, pg_publication p where c.oid = %s and p.pubname = %s",
                ([t.source_oid for t in self.applier.tables.values() if t.source_oid], oid,
                 publication_name(self.source))).fetchone() \
                if source_capabilities(self.source_conn).partition_root else None
            self._routed[oid] = bool(row and row[0])
        return self._routed[oid]

    def _unreadable(self, info: TableInfo) -> str | None:
        """Why the source role cannot copy the table whole (:func:`copy_blocker`), or None."""
        return copy_blocker(self.source_conn, info.source_oid)

    def _oid_now(self, rel: Relation) -> int | None:
        """The OID the relation's name has on the source now (None: no such table)."""
        return self.source_conn.execute("select to_regclass(%s)::oid::int", (
            sql.Identifier(rel.namespace, rel.name).as_string(self.source_conn),)).fetchone()[0]

    def recreated(self, info: TableInfo, oid: int, lsn: int | None) -> None:
        """A table dropped and re-created on the source under the same name (now ``oid``):
        copied again (:meth:`recopy`)."""
        self.recopy(info, lsn, f"it was dropped and re-created on the source (relation OID "
                    f"{info.source_oid} is now {oid}): the mirror holds the old table's rows",
                    "recreate_table")

    def resync_failed(self, name: str, error: str) -> None:
        """An automatic resync could not run: say so in the pause reason, stop retrying."""
        conn = self.applier.conn
        self.applier.begin()
        info = load_tables(conn, self.source)[name]
        info.auto_resync = False
        info.paused_reason = (f"{info.paused_reason} The automatic resync failed: {error} "
                              f"Once resolved, run {resync_hint(self.source, name)}.")
        info.version += 1
        save_table(conn, info)
        conn.commit()
        self.applier.in_txn = False
        log.error(info.paused_reason)
        self.resync_wanted.discard(name)

    def _pause_from_applier(self, info: TableInfo, reason: str, lsn: int) -> None:
        self.applier._save_pause(info, reason, lsn)
        self._versions[info.name] = (info.version, True)

    def pause(self, info: TableInfo, changes: list[SchemaChange], lsn: int | None,
              what: str) -> None:
        """Pause a table at ``lsn`` because of ``changes`` (``what`` says why), for the user."""
        at = lsn_to_str(lsn) if lsn is not None else None
        hint = ("" if info.auto_resync else
                f" Resolve with {resync_hint(self.source, info.name)}, which rebuilds it from a"
                f" fresh snapshot and loses nothing.")
        info.pause(f"Table {info.qualified} is paused at LSN {at}: {what}. Its changes are kept "
                   f"in tidemark.paused_changes and other tables keep flowing.{hint}", lsn)
        # An automatic resync needs nobody: a warning; a pause that waits for the user: error.
        log.log(logging.WARNING if info.auto_resync else logging.ERROR, info.paused_reason)
        for change in changes:
            record_schema_change(self.applier.conn, self.source, info.name, at, change.kind,
                                 change.column, change.detail, "paused")
        info.version += 1
        save_table(self.applier.conn, info)
        self._versions[info.name] = (info.version, True)
