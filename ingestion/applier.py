"""The applier: writes decoded changes into landing, set-based, one landing transaction at a time.

Changes are buffered per table as COPY text lines (:mod:`ingestion.batch`). A *flush* COPYs a
table's batch into a session-local staging table and lands it with a few set-based statements
(:mod:`ingestion.merge`): changelog rows, then the mirror's net change. :meth:`Applier.commit`
flushes everything, writes the checkpoint and commits, so changes and checkpoint are durable
together or not at all.

Rows are identified by the table's key. An update that changes the key writes a ``b`` line for
the old key (the row leaves it) before the new image; an unchanged TOAST value in such an update
belongs to the row under the old key. A keyless table (``REPLICA IDENTITY FULL``) is a bag: every
update is a ``b`` line with the whole old row and a ``u`` line with the new one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.batch import Batch, Image, TxnContext, encode_line, head
from ingestion.decoder import UNCHANGED, Value
from ingestion.errors import TablesChangedError
from ingestion.lsn import lsn_to_str
from ingestion.merge import (
    create_staging,
    drop_duplicate_events,
    fill_unchanged,
    insert_changelog,
    merge_bag,
    merge_keyed,
)
from ingestion.state import add_duplicates, record_schema_change, save_checkpoint
from ingestion.tables import TableInfo, save_table, table_versions

log = logging.getLogger("tidemark.ingestion")

COPY_CHUNK = 1 << 20

Pending = tuple[dict[tuple[str, bool], Batch], list[tuple], list[tuple], int]
"""What :meth:`Applier.detach` hands to a background commit: batches, dead letters, kept changes
of paused tables, number of changes."""


def _text(v: Value) -> str | None:
    if v is None or v is UNCHANGED:
        return None
    return v.decode("utf-8", "replace")


def row_json(info: TableInfo, values: list[Value] | None) -> dict[str, Any] | None:
    """A row as ``{column: text or null}`` (unchanged TOAST values are left out)."""
    if values is None:
        return None
    return {c: _text(v) for c, v in zip(info.column_names, values, strict=False)
            if v is not UNCHANGED}


def key_row(info: TableInfo, key: tuple) -> list[Value]:
    """A row with only the key columns set (the old key of a key-changing update)."""
    row: list[Value] = [None] * len(info.columns)
    for i, v in zip(info.key_idx, key, strict=True):
        row[i] = v
    return row


class Applier:
    """Buffers changes and applies them to landing in set-based statements.

    Args:
        conn: a landing connection (not autocommit) used only by this applier.
        source: the source name.
        slot: replication slot name (recorded in the checkpoint).
        publication: publication name (recorded in the checkpoint).
        contracts: the contract set, or None to apply without validation.
        flush_rows: buffered lines of one table that trigger a flush inside the transaction.
    """

    def __init__(self, conn: psycopg.Connection, source: str, slot: str, publication: str,
                 contracts: Any = None, flush_rows: int = 50_000) -> None:
        self.conn = conn
        self.source = source
        self.slot = slot
        self.publication = publication
        self.contracts = contracts
        self.flush_rows = flush_rows
        self.batches: dict[tuple[str, bool], Batch] = {}
        self.tables: dict[str, TableInfo] = {}
        self.txn: TxnContext | None = None
        self.in_txn = False
        self.rows_in_txn = 0
        self._ord = 0
        self._dead: list[tuple] = []
        self._paused: list[tuple] = []
        self._staging: dict[tuple[str, int], sql.Identifier] = {}
        self._staging_dirty: set[tuple[str, int]] = set()
        self._contract_cache: dict[str, Any] = {}
        self.wait_hook: Callable[[], None] = lambda: None
        self.pause_hook: Callable[[TableInfo, str, int], None] = self._save_pause

    # -- transaction ------------------------------------------------------------------------

    def _lock(self) -> None:
        self.conn.execute("select pg_advisory_xact_lock(hashtext(%s))",
                          (f"tidemark:ingest:{self.source}",))
        self.in_txn = True

    def begin(self) -> None:
        """Open the landing transaction if none is open (takes the source's advisory lock).

        Waits first for a landing commit still running in the background (see
        :meth:`detach`): the connection has one user at a time. Changes buffered meanwhile stay
        buffered and counted.
        """
        self.wait_hook()
        if not self.in_txn:
            self._lock()

    def start_source_txn(self, commit_lsn: int, commit_at: datetime | None, xid: int | None
                         ) -> TxnContext:
        """Set the source transaction of the following changes."""
        self.txn = TxnContext(commit_lsn, commit_at, xid)
        return self.txn

    def commit(self, lsn: int, commit_at: datetime | None, snapshot_lsn: int | None = None
               ) -> int:
        """Flush everything, write the checkpoint and commit the landing transaction.

        Args:
            lsn: end LSN of the last source transaction included.
            commit_at: its source commit time.
            snapshot_lsn: set when this transaction completes the initial snapshot.

        Returns:
            The number of changes applied by this landing transaction.
        """
        self.begin()
        self.flush_all()
        rows = self.rows_in_txn
        save_checkpoint(self.conn, self.source, self.slot, self.publication, lsn_to_str(lsn),
                        commit_at, rows,
                        lsn_to_str(snapshot_lsn) if snapshot_lsn is not None else None)
        self.conn.commit()
        self.in_txn = False
        self._staging_dirty.clear()
        self.rows_in_txn = 0
        return rows

    def detach(self) -> Pending:
        """Hand over everything buffered since the last commit (for a background commit)."""
        pending = (self.batches, self._dead, self._paused, self.rows_in_txn)
        self.batches, self._dead, self._paused, self.rows_in_txn = {}, [], [], 0
        return pending

    def commit_detached(self, pending: Pending, lsn: int, commit_at: datetime | None,
                        versions: dict[str, tuple[int, bool]] | None = None) -> int:
        """Apply what :meth:`detach` returned, write the checkpoint and commit.

        Runs on the background thread while the stream thread keeps decoding; the stream thread
        touches the connection again only after this returned (``wait_hook``).
        """
        batches, dead, paused, rows = pending
        if not self.in_txn:
            self._lock()
        if versions is not None and table_versions(self.conn, self.source) != versions:
            self.conn.rollback()
            self.in_txn = False
            raise TablesChangedError(f"tables of source {self.source!r} changed in landing (a "
                                     f"resync) while changes were in flight; restarting the "
                                     f"session from the checkpoint")
        for batch in batches.values():
            self._flush_batch(batch)
        self._write_side_tables(dead, paused)
        save_checkpoint(self.conn, self.source, self.slot, self.publication, lsn_to_str(lsn),
                        commit_at, rows)
        self.conn.commit()
        self.in_txn = False
        self._staging_dirty.clear()
        return rows

    def rollback(self) -> None:
        """Abandon the landing transaction and every buffered change."""
        self.batches.clear()
        self._dead.clear()
        self._paused.clear()
        self._staging_dirty.clear()
        self.rows_in_txn = 0
        self.in_txn = False
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()

    # -- changes ----------------------------------------------------------------------------

    def contract_for(self, info: TableInfo) -> Any:
        """The table's contract, or None."""
        if self.contracts is None:
            return None
        if info.name not in self._contract_cache:
            try:
                self._contract_cache[info.name] = self.contracts.table(self.source, info.name)
            except Exception:
                self._contract_cache[info.name] = None
        return self._contract_cache[info.name]

    def _batch(self, info: TableInfo) -> Batch:
        changelog_only = self.txn.commit_lsn < info.snapshot_lsn
        batch = self.batches.get((info.name, changelog_only))
        if batch is None:
            batch = self.batches[(info.name, changelog_only)] = Batch(info, changelog_only)
        return batch

    def add(self, info: TableInfo, op: str, new: list[Value] | None, old: list[Value] | None,
            lsn: int, seq: int, old_kind: str | None = None) -> None:
        """Buffer one change (``op`` r, c, u or d) of the current source transaction.

        Args:
            info: the table.
            op: the change kind.
            new: the new row (r, c, u).
            old: the old key ('K') or whole old row ('O'), if sent.
            lsn: the change's LSN.
            seq: its ``_seq`` (even in the stream; ``seq - 1`` is free for a ``b`` line).
            old_kind: 'K', 'O' or None.
        """
        assert self.txn is not None, "start_source_txn first"
        if info.stream_positions is not None:
            new, old = info.project(new), info.project(old)
        if info.paused_reason is None and not info.key and op in ("u", "d") and old_kind != "O":
            self._pause(info, f"Table {info.qualified} has no key and its {op!r} change came "
                              f"without the old row: set REPLICA IDENTITY FULL on the source "
                              f"table (or add a primary key), then run "
                              f"`tidemark ingest resync {info.name}`.")
        if info.paused_reason is not None:
            self._keep(info, op, new, old, lsn, seq)
            self.rows_in_txn += 1
            return
        batch = self._batch(info)
        if info.key:
            accepted = self._add_keyed(info, batch, op, new, old, lsn, seq, old_kind)
        else:
            accepted = self._add_keyless(info, batch, op, new, old, lsn, seq)
        if accepted:
            self.rows_in_txn += 1
        if len(batch.lines) >= self.flush_rows:
            self.flush(info)

    def _add_keyed(self, info: TableInfo, batch: Batch, op: str, new: list[Value] | None,
                   old: list[Value] | None, lsn: int, seq: int, old_kind: str | None) -> bool:
        idx = info.key_idx
        if op == "d":
            values = old if old is not None else [None] * len(info.columns)
            self._emit(batch, values, b"d", lsn, seq, tuple([values[i] for i in idx]), None)
            batch.removes = True
            return True
        values = new
        key = tuple([values[i] for i in idx])
        okey = key
        if old is not None:
            okey = tuple([old[i] for i in idx])
            if UNCHANGED in okey:
                okey = key
        unchanged = origin = None
        if op == "u" and UNCHANGED in values:
            unchanged, origin = self._resolve(batch, info, okey, values, old, old_kind)
        if self._rejected(info, op, values, unchanged, lsn, seq):
            return False
        if okey != key:
            gone = old if old_kind == "O" else key_row(info, okey)
            self._emit(batch, gone, b"b", lsn, seq - 1, okey, None)
            batch.removes = True
        self._emit(batch, values, op.encode(), lsn, seq, key, values, unchanged, origin)
        return True

    def _add_keyless(self, info: TableInfo, batch: Batch, op: str, new: list[Value] | None,
                     old: list[Value] | None, lsn: int, seq: int) -> bool:
        if op == "d":
            self._emit(batch, old, b"d", lsn, seq, None, None)
            batch.removes = True
            return True
        if op == "u":
            for i, v in enumerate(new):
                if v is UNCHANGED:
                    new[i] = old[i]
        if self._rejected(info, op, new, None, lsn, seq):
            return False
        if op == "u":
            self._emit(batch, old, b"b", lsn, seq - 1, None, None)
            batch.removes = True
        self._emit(batch, new, op.encode(), lsn, seq, None, new)
        return True

    def _emit(self, batch: Batch, values: list[Value], op: bytes, lsn: int, seq: int,
              key: tuple | None, image: list[Value] | None, unchanged: list[str] | None = None,
              origin: tuple | None = None) -> None:
        self._ord += 1
        if key is not None:
            batch.supersede(batch.images.get(key))
            batch.images[key] = Image(image, origin, len(batch.lines))
        batch.lines.append(encode_line(values, head(self._ord, op, lsn, seq), unchanged, origin,
                                       self.txn))

    @staticmethod
    def _resolve(batch: Batch, info: TableInfo, okey: tuple, values: list[Value],
                 old: list[Value] | None, old_kind: str | None
                 ) -> tuple[list[str] | None, tuple | None]:
        """Carry unchanged TOAST values forward from the row's previous image in the batch (under
        its old key), else from the old row; return the columns left for the mirror and the
        mirror key they come from."""
        prev = batch.images.get(okey)
        pv = prev.values if prev is not None else None
        left = []
        for i, v in enumerate(values):
            if v is not UNCHANGED:
                continue
            if pv is not None and pv[i] is not UNCHANGED:
                values[i] = pv[i]
            elif old is not None and old_kind == "O" and old[i] is not UNCHANGED:
                values[i] = old[i]
            else:
                left.append(info.columns[i].name)
        if not left:
            return None, None
        batch.unresolved.update(left)
        origin = prev.origin if pv is not None and prev.origin is not None else okey
        return left, origin

    def _rejected(self, info: TableInfo, op: str, values: list[Value],
                  unchanged: list[str] | None, lsn: int, seq: int) -> bool:
        contract = self.contract_for(info)
        if contract is None:
            return False
        from contracts import validate_row

        row = {c: _text(v) for c, v in zip(info.column_names, values, strict=False)
               if v is not UNCHANGED}
        violations = [v for v in validate_row(contract, row, self.contracts)
                      if not unchanged or v.column not in unchanged]
        if not violations:
            return False
        txn = self.txn
        reason = "; ".join(v.message for v in violations)
        detail = [{"column": v.column, "rule": v.rule, "message": v.message,
                   "value": None if v.value is None else str(v.value)} for v in violations]
        self._dead.append((self.source, info.name, lsn_to_str(lsn), lsn_to_str(txn.commit_lsn),
                           seq, op, reason, Jsonb(detail), str(contract.version),
                           Jsonb(row_json(info, values)), txn.commit_at, txn.xid))
        return True

    def _keep(self, info: TableInfo, op: str, new: list[Value] | None, old: list[Value] | None,
              lsn: int, seq: int) -> None:
        txn = self.txn
        new_row, old_row = row_json(info, new), row_json(info, old)
        self._paused.append((self.source, info.name, lsn_to_str(txn.commit_lsn), seq,
                             lsn_to_str(lsn), op, txn.commit_at, txn.xid,
                             None if new_row is None else Jsonb(new_row),
                             None if old_row is None else Jsonb(old_row)))

    def _pause(self, info: TableInfo, reason: str) -> None:
        self.begin()
        self.flush(info)
        self.pause_hook(info, reason, self.txn.commit_lsn)

    def _save_pause(self, info: TableInfo, reason: str, lsn: int) -> None:
        """Pause a table and record why (the relation tracker replaces this to track it)."""
        info.pause(reason, lsn)
        info.version += 1
        save_table(self.conn, info)
        record_schema_change(self.conn, self.source, info.name, lsn_to_str(lsn), "missing_old_row",
                             None, reason, "paused")
        log.error(reason)

    def truncate(self, infos: list[TableInfo], lsn: int, seq: int | None = None) -> None:
        """Apply a TRUNCATE: empty the mirrors and write a ``t`` changelog row per table.

        Args:
            infos: the tables.
            lsn: the change's LSN.
            seq: the first table's ``_seq`` (the next ones follow in steps of two); default
                taken from the source transaction.
        """
        self.begin()
        self.flush_all()
        txn = self.txn
        for n, info in enumerate(infos):
            this = txn.next_seq() if seq is None else seq + 2 * n
            if info.paused_reason is not None:
                self._keep(info, "t", None, None, lsn, this)
            else:
                self.conn.execute(sql.SQL("truncate {}").format(info.mirror))
                self.conn.execute(
                    sql.SQL("insert into {} (_op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
                            " values ('t', %s, %s, %s, %s, %s) on conflict do nothing"
                            ).format(info.changelog),
                    (lsn_to_str(lsn), lsn_to_str(txn.commit_lsn), this, txn.commit_at,
                     txn.xid))
            self.rows_in_txn += 1

    # -- flushing ---------------------------------------------------------------------------

    def flush_all(self) -> None:
        """Apply every buffered change (inside the open landing transaction)."""
        for key in list(self.batches):
            self._flush_batch(self.batches.pop(key))
        self._write_side_tables(self._dead, self._paused)
        self._dead, self._paused = [], []

    def flush(self, info: TableInfo) -> None:
        """COPY one table's batches into staging and apply them."""
        for changelog_only in (True, False):
            batch = self.batches.pop((info.name, changelog_only), None)
            if batch is not None and batch.lines:
                self.begin()
                self._flush_batch(batch)

    def _write_side_tables(self, dead: list[tuple], paused: list[tuple]) -> None:
        if dead:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq,"
                    " op, reason, violations, contract_version, raw_row, commit_at, txid) values"
                    " (%s, %s, %s::pg_lsn, %s::pg_lsn, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " on conflict (source, table_name, commit_lsn, seq) do nothing", dead)
        if paused:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "insert into tidemark.paused_changes (source, table_name, commit_lsn, seq,"
                    " lsn, op, commit_at, txid, row_data, old_data) values (%s, %s, %s::pg_lsn,"
                    " %s, %s::pg_lsn, %s, %s, %s, %s, %s) on conflict do nothing", paused)

    def staging(self, info: TableInfo) -> sql.Identifier:
        """The session's staging table for ``info``'s current version (created on first use)."""
        key = (info.name, info.version)
        ident = self._staging.get(key)
        if ident is None:
            ident = sql.Identifier(f"_tidemark_stg_{len(self._staging)}")
            create_staging(self.conn, info, ident)
            self._staging[key] = ident
        return ident

    def _flush_batch(self, batch: Batch) -> None:
        if not batch.lines:
            return
        info = batch.info
        stg = self.staging(info)
        if (info.name, info.version) in self._staging_dirty:
            self.conn.execute(sql.SQL("truncate {}").format(stg))
        self._staging_dirty.add((info.name, info.version))
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("copy {} from stdin").format(stg)) as copy:
                chunk: list[bytes] = []
                size = 0
                for line in batch.lines:
                    chunk.append(line)
                    size += len(line)
                    if size >= COPY_CHUNK:
                        copy.write(b"".join(chunk))
                        chunk, size = [], 0
                if chunk:
                    copy.write(b"".join(chunk))
            if batch.unresolved:
                fill_unchanged(cur, info, stg, batch.unresolved)
            contract = self.contract_for(info)
            idem = getattr(contract, "idempotency_key", None) if contract is not None else None
            if idem and idem in info.column_names:
                dropped = drop_duplicate_events(cur, info, stg, idem)
                if dropped:
                    add_duplicates(self.conn, self.source, info.name, dropped)
                    log.info("%s: dropped %d duplicate event(s) by %s", info.qualified, dropped,
                             idem)
            insert_changelog(cur, info, stg)
            if batch.changelog_only:
                return
            if info.key:
                merge_keyed(cur, info, stg, batch.removes)
            else:
                merge_bag(cur, info, stg, batch.removes)
