"""The applier: writes decoded changes into landing, set-based, one landing transaction at a time.

Changes are buffered per table as COPY text lines (:mod:`ingestion.changes`,
:mod:`ingestion.batch`). A *flush* COPYs a table's batch into a session-local staging table and
lands it with a few set-based statements (:mod:`ingestion.merge`): changelog rows, then the
mirror's net change. :meth:`Applier.commit` flushes everything, writes the checkpoint and
commits, so changes and checkpoint are durable together or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ingestion.batch import Batch, TxnContext
from ingestion.changes import ChangeBuffer
from ingestion.ddl_locks import DdlLocks
from ingestion.errors import TablesChangedError
from ingestion.failures import quiet_pipeline
from ingestion.letter_removals import (
    any_held,
    letter_keys,
    lettered_removals,
    plain_keys,
    take_keyed_letters,
    take_letters,
)
from ingestion.lsn import lsn_to_str
from ingestion.merge import (
    BIG_BATCH,
    EMPTIED_AT_COMMIT,
    create_staging,
    drop_duplicate_events,
    fill_unchanged,
    land_appends,
    land_batch,
)
from ingestion.side_tables import (
    DEAD_LETTER_COLUMNS,
    PAUSED_COLUMNS,
    complete_letters,
    fill_from_letters,
    insert_rows,
)
from ingestion.state import add_duplicates, record_schema_change, save_checkpoint
from ingestion.tables import TableInfo, save_table, table_versions
from ingestion.watermarks import advance as advance_watermark

log = logging.getLogger("tidemark.ingestion")

_LETTER_CONFLICT = sql.SQL("on conflict (source, table_name, commit_lsn, seq) do nothing")
_PAUSED_CONFLICT = sql.SQL("on conflict do nothing")

Pending = tuple[dict[tuple[str, bool], Batch], list[list], list[tuple], int]
"""What :meth:`Applier.detach` hands to a background commit: batches, dead letters, kept changes
of paused tables, number of changes."""


class Applier(ChangeBuffer):
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
        self._dead: list[list] = []
        self._bag_letters: dict[tuple[str, bytes], list[list]] = {}
        self._lettered: dict[str, bool] = {}
        self._made_keys: dict[str, set[Any]] = {}
        self._paused: list[tuple] = []
        self._staging: dict[tuple[str, int], sql.Identifier] = {}
        self._staging_dirty: set[tuple[str, int]] = set()  # written in this transaction
        # staging tables that keep their rows after a commit (merge.create_staging) and were
        # written since they were created: truncated before their next use
        self._staging_kept: set[tuple[str, int]] = set()
        self._staging_plain: set[tuple[str, int]] = set()  # not emptied at commit
        self._contract_cache: dict[str, Any] = {}
        self._cached: tuple | None = None
        self.wait_hook: Callable[[], None] = lambda: None
        self.pause_hook: Callable[[TableInfo, str, int], None] = self._save_pause
        self.ddl_locks = DdlLocks(source)

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
        self._bag_letters = {}
        self._cached = None
        return pending

    def buffered(self) -> bool:
        """Whether changes of the open landing transaction wait in memory (not yet written)."""
        return bool(self.batches or self._dead or self._paused or self.rows_in_txn)

    def commit_detached(self, pending: Pending, lsn: int, commit_at: datetime | None,
                        versions: dict[str, tuple[int, bool]] | None = None) -> int:
        """Apply what :meth:`detach` returned, write the checkpoint and commit.

        Runs on the background thread while the stream thread keeps decoding; the stream thread
        touches the connection again only after this returned (``wait_hook``).
        """
        batches, dead, paused, rows = pending
        conn = self.conn
        # Round trips, not rows, are most of a small commit's time: the lock and the version
        # check go in one pipeline, and the last batch's statements, the checkpoint and the
        # commit in another (COPY cannot be pipelined).
        with quiet_pipeline(conn):
            if not self.in_txn:
                self._lock()
            current = table_versions(conn, self.source) if versions is not None else None
        if versions is not None and current != versions:
            conn.rollback()
            self.in_txn = False
            raise TablesChangedError(f"tables of source {self.source!r} changed in landing (a "
                                     f"resync) while changes were in flight; restarting the "
                                     f"session from the checkpoint")
        todo = [batch for batch in batches.values() if batch.lines]
        last = todo.pop() if todo and len(todo[-1].lines) < BIG_BATCH else None
        for batch in todo:
            self._flush_batch(batch)
        with conn.cursor() as cur:
            later: list[Callable[[], None]] = []
            if last is not None:
                stg = self._stage_batch(cur, last, later)
            with quiet_pipeline(conn):
                for step in later:  # the letter removals, when nothing waits for their rows
                    step()
                if last is not None:
                    self._land(cur, last, stg, pipelined=True)
                self._write_side_tables(dead, paused)
                save_checkpoint(conn, self.source, self.slot, self.publication,
                                lsn_to_str(lsn), commit_at, rows)
                conn.commit()
        self.in_txn = False
        self._staging_dirty.clear()
        return rows

    def rollback(self) -> None:
        """Abandon the landing transaction and every buffered change."""
        self.batches.clear()
        self._cached = None
        self._dead.clear()
        self._bag_letters.clear()
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
        seqs = [txn.next_seq() if seq is None else seq + 2 * n for n in range(len(infos))]
        emptied = [info for info in infos if info.paused_reason is None]

        def empty() -> None:
            for info, this in zip(infos, seqs, strict=True):
                if info.paused_reason is not None:
                    continue
                self.conn.execute(sql.SQL("truncate {}").format(info.mirror))
                self.conn.execute(
                    sql.SQL("insert into {} (_op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
                            " values ('t', %s, %s, %s, %s, %s) on conflict do nothing"
                            ).format(info.changelog),
                    (lsn_to_str(lsn), lsn_to_str(txn.commit_lsn), this, txn.commit_at,
                     txn.xid))

        if emptied:  # TRUNCATE takes ACCESS EXCLUSIVE: waited for without queueing readers
            self.ddl_locks.run(self.conn, ", ".join(i.qualified for i in emptied),
                               [i.mirror for i in emptied], "apply a TRUNCATE from the source",
                               empty)
        for info, this in zip(infos, seqs, strict=True):
            if info.paused_reason is not None:
                self._keep(info, "t", None, None, lsn, this)
            self.rows_in_txn += 1

    # -- flushing ---------------------------------------------------------------------------

    def flush_all(self) -> None:
        """Apply every buffered change (inside the open landing transaction)."""
        self._cached = None
        for key in list(self.batches):
            self._flush_batch(self.batches.pop(key))
        self._write_side_tables(self._dead, self._paused)
        self._dead, self._paused, self._bag_letters = [], [], {}

    def flush(self, info: TableInfo) -> None:
        """COPY one table's batches into staging and apply them."""
        self._cached = None
        for changelog_only in (True, False):
            batch = self.batches.pop((info.name, changelog_only), None)
            if batch is not None and batch.lines:
                self.begin()
                self._flush_batch(batch)

    def _write_side_tables(self, dead: list[list], paused: list[tuple]) -> None:
        """Dead letters and kept changes of paused tables, one statement each
        (:mod:`ingestion.side_tables`)."""
        with self.conn.cursor() as cur:
            insert_rows(cur, "dead_letters", DEAD_LETTER_COLUMNS, dead, _LETTER_CONFLICT)
            insert_rows(cur, "paused_changes", PAUSED_COLUMNS, paused, _PAUSED_CONFLICT)

    def staging(self, info: TableInfo) -> sql.Identifier:
        """The session's staging table for ``info``'s current version (created on first use)."""
        key = (info.name, info.version)
        ident = self._staging.get(key)
        if ident is None:
            ident = sql.Identifier(f"_tidemark_stg_{len(self._staging)}")
            emptied = len(self._staging) < EMPTIED_AT_COMMIT
            create_staging(self.conn, info, ident, emptied)
            if not emptied:
                self._staging_plain.add(key)
            self._staging[key] = ident
        return ident

    def _flush_batch(self, batch: Batch) -> None:
        if not batch.lines:
            return
        with self.conn.cursor() as cur:
            if _unstaged(batch) and land_appends(cur, batch.info, batch):
                return
            stg = self._stage_batch(cur, batch)
            self._land(cur, batch, stg)

    def _land(self, cur: psycopg.Cursor, batch: Batch, stg: sql.Identifier,
              pipelined: bool = False) -> None:
        """Land a staged batch, then advance its table's watermark (when its contract has an
        event-time column: :mod:`ingestion.watermarks`)."""
        land_batch(cur, batch.info, stg, batch, pipelined=pipelined)
        contract = batch.contract
        event_time = getattr(contract, "event_time", None) if contract is not None else None
        if event_time and event_time in batch.info.column_names:
            advance_watermark(cur, self.source, batch.info.name, stg, event_time,
                              contract.allowed_lateness)

    def _write_letters_of(self, cur: psycopg.Cursor, batch: Batch) -> None:
        """Write the table's dead letters not written yet, before its batch's removals are
        matched to letters (:mod:`ingestion.letter_removals`): a letter of an earlier batch of
        the landing transaction (flushed before, e.g. at a schema change) is in no batch's
        bookkeeping any more, so only the table can show it."""
        self._write_letters(cur, batch.info.name, batch.dead)

    def write_letters(self, name: str) -> None:
        """Write the table ``name``'s dead letters of the open landing transaction not written
        yet (before a schema change reads the table's letters: :mod:`ingestion.letter_columns`)."""
        with self.conn.cursor() as cur:
            self._write_letters(cur, name, self._dead)

    def _write_letters(self, cur: psycopg.Cursor, name: str, dead: list[list]) -> None:
        if not dead or not any(letter[1] == name for letter in dead):
            return
        insert_rows(cur, "dead_letters", DEAD_LETTER_COLUMNS,
                    [letter for letter in dead if letter[1] == name], _LETTER_CONFLICT)
        dead[:] = [letter for letter in dead if letter[1] != name]
        if dead is self._dead and self._bag_letters:  # written: no removal takes them in Python
            self._bag_letters = {k: v for k, v in self._bag_letters.items() if k[0] != name}

    def _has_letters(self, info: TableInfo) -> bool:
        """Whether the table has waiting dead letters (asked once per applier, then kept; a
        letter this applier writes sets it): a removal can only take a letter's row if it
        has some (:mod:`ingestion.letter_removals`)."""
        known = self._lettered.get(info.name)
        if known is None:
            known = self._lettered[info.name] = self.conn.execute(
                "select exists (select 1 from tidemark.dead_letters where source = %s and"
                " table_name = %s and replayed_at is null)", (self.source, info.name)
            ).fetchone()[0]
        return known

    def _lettered_removals(self, cur: psycopg.Cursor, batch: Batch) -> set[Any] | None:
        """The keyed batch's removed keys a waiting letter may hold (None: a keyless table, or
        a key not compared by its text; :func:`ingestion.letter_removals.lettered_removals`):
        the keys of the letters this applier made (written or not, in any landing transaction:
        a background commit runs this while the stream thread makes more), and of the others
        those the table's letters hold (one probe of its letter index)."""
        info = batch.info
        if not info.key or not plain_keys(info):
            return None
        return lettered_removals(batch.removed, self._made_keys.get(info.name),
                                 functools.partial(letter_keys, cur, info))

    def _stage_batch(self, cur: psycopg.Cursor, batch: Batch,
                     later: list[Callable[[], None]] | None = None) -> sql.Identifier:
        """COPY a batch into its staging table, fill unchanged TOAST values, take the letters
        its removals meet and drop duplicate events; return the staging table.

        With ``later``, the letter removals go there instead when no letter of the batch waits
        for their result and no duplicate drop follows them (the commit's pipeline runs them:
        one round trip fewer)."""
        info = batch.info
        stg = self.staging(info)
        key = (info.name, info.version)
        if key in self._staging_dirty or key in self._staging_kept:
            cur.execute(sql.SQL("truncate {}").format(stg))
        self._staging_dirty.add(key)
        if key in self._staging_plain:
            self._staging_kept.add(key)
        with cur.copy(sql.SQL("copy {} from stdin").format(stg)) as copy:
            # One join and one write: at most flush_rows lines, a few megabytes.
            copy.write(b"".join(batch.lines))
        if batch.unresolved:
            fill_unchanged(cur, info, stg, batch.unresolved)
            if batch.contract is not None:  # a row that broke it may be a letter only
                fill_from_letters(cur, info, stg, batch.unresolved)
        if batch.completions:
            complete_letters(cur, info, batch.completions)
        contract = batch.contract
        idem = getattr(contract, "idempotency_key", None) if contract is not None else None
        idem = idem if idem and idem in info.column_names else None
        if batch.removes and batch.contract is not None and not batch.changelog_only \
                and (batch.takes or self._has_letters(info)):
            among = self._lettered_removals(cur, batch)
            if among is None or among:
                take = functools.partial(self._take_letters, cur, batch, stg, among)
                if later is not None and not batch.takes and not idem:
                    later.append(take)
                else:
                    take()
        if idem:
            dropped = drop_duplicate_events(cur, info, stg, idem)
            if dropped:
                add_duplicates(self.conn, self.source, info.name, dropped)
                log.info("%s: dropped %d duplicate event(s) by %s", info.qualified, dropped,
                         idem)
        return stg


    def _take_letters(self, cur: psycopg.Cursor, batch: Batch, stg: sql.Identifier,
                      among: set[Any] | None) -> None:
        """Take the letters the staged batch's removals meet (:mod:`ingestion.letter_removals`;
        ``among``: :meth:`_lettered_removals`), after writing the table's letters not written
        yet if one may be among them."""
        info = batch.info
        if among is None or any_held(batch.dead, info, among):
            self._write_letters_of(cur, batch)
        if info.key:
            take_keyed_letters(cur, info, stg, batch.takes, among)
        else:
            take_letters(cur, info, stg)


def _unstaged(batch: Batch) -> bool:
    """Whether a batch can land without a staging table (:func:`ingestion.merge.land_appends`):
    a large batch of new rows only, whose contract (if any) neither drops duplicate events nor
    advances a watermark (both read the staging table)."""
    if len(batch.lines) < BIG_BATCH or not batch.appends_only():
        return False
    contract = batch.contract
    return contract is None or not (getattr(contract, "idempotency_key", None)
                                    or getattr(contract, "event_time", None))
