"""One ingestion session: connections, setup, snapshot and the streaming loop.

psycopg2's ``LogicalReplicationConnection`` carries the replication stream only; everything else
(landing writes, source catalog, heartbeats) uses psycopg 3. A session is torn down on any
connection error; the next one resumes from the landing checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import select
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import psycopg
import psycopg2

from ingestion.applier import Applier
from ingestion.catalog import wait_slot_free
from ingestion.continuity import (
    ReplayCheck,
    check_continuity,
    record_identity,
    source_identity,
)
from ingestion.ddl_locks import kept_alive
from ingestion.decoder import (
    Begin,
    Commit,
    Message,
    Relation,
    Truncate,
    decode,
    pg_time,
    row_change,
)
from ingestion.errors import DecodeError, IngestionError
from ingestion.exclusive import hold_source_lock, named
from ingestion.failures import check_source, ended_stream
from ingestion.link_watch import LinkWatch
from ingestion.lsn import lsn_to_str
from ingestion.names import HEARTBEAT_PREFIX, publication_name, slot_name
from ingestion.progress import ensure_progress_table
from ingestion.publication import PublicationReport, log_report
from ingestion.publication_options import routed_change
from ingestion.relations import RelationTracker
from ingestion.session_config import SessionConfig, SessionStats
from ingestion.session_settings import (
    check_landing_pooling,
    check_landing_triggers,
    keepalive_options,
    pin_later_settings,
    replication_connection,
)
from ingestion.silence import SilenceWatch, end_stale_walsender, silence_limit
from ingestion.sources import registered_selection
from ingestion.standby import check_admin
from ingestion.state import ensure_state, load_checkpoint
from ingestion.stream_snapshots import initial_snapshot, load_floors, snapshot_new_tables
from ingestion.target import emit_heartbeat
from ingestion.versions import check_landing_version, source_capabilities

log = logging.getLogger("tidemark.ingestion")
_worker = threading.local()
_ROW_OPS = {73: "c", 85: "u", 68: "d"}
_U32 = struct.Struct(">I")
_KEEPALIVE_S = 0.5


class Session:
    """Connections and state of one streaming session (see module docstring)."""

    def __init__(self, cfg: SessionConfig) -> None:
        self.cfg = cfg
        self.slot = slot_name(cfg.source)
        self.publication = publication_name(cfg.source)
        self.stats = SessionStats()
        self.landing: psycopg.Connection | None = None
        self.source_conn: psycopg.Connection | None = None
        self.repl = None
        self.cur = None
        self.feedback_lock = threading.Lock()
        self.applier: Applier | None = None
        self.tracker: RelationTracker | None = None
        self.ckpt = 0
        self.skip = False
        self.in_src_txn = False
        self.pending = False
        self.pending_since = 0.0
        self.last_end = 0
        self.last_commit_at: datetime | None = None
        self.txn_lsn = 0
        self.last_message_at = time.monotonic()
        self.future: Future | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidemark-commit")
        self.floors: dict[str, int] = {}
        self.replay = ReplayCheck(cfg.source, self.slot, 0, 0)
        # (table, column, type OID, typmod) of a breaking type change seen in the source catalog
        # -> the source's WAL position then (ingestion.quiet_retypes)
        self.retypes_seen: dict[tuple[str, str, int, int], int] = {}
        self.widen_blocked: dict[tuple[str, str, int, int], str] = {}  # by objects on mirror
        self.last_report: tuple = ()
        self.streaming = False
        self.silence: SilenceWatch | None = None
        self.links: LinkWatch | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create publication/slot and take the snapshot if needed, start streaming."""
        cfg = self.cfg
        silence_s = silence_limit()
        self.links = LinkWatch(silence_s, cfg.source)
        self.landing = psycopg.connect(cfg.landing_dsn, **named(cfg.landing_dsn, cfg.source),
                                       **keepalive_options(cfg.landing_dsn))
        self.links.watch("landing", self.landing, cfg.landing_dsn)
        check_landing_version(self.landing)
        check_landing_triggers(self.landing)
        check_landing_pooling(self.landing, cfg.landing_dsn)
        hold_source_lock(self.landing, cfg.source)
        self.landing.execute("set synchronous_commit = on")
        ensure_state(self.landing, cfg.source)
        ensure_progress_table(self.landing)
        cfg.registered = registered_selection(self.landing, cfg.source)
        self.landing.commit()
        self.source_conn = pin_later_settings(psycopg.connect(
            cfg.source_dsn, autocommit=True, **keepalive_options(cfg.source_dsn)))
        self.links.watch("source", self.source_conn, cfg.source_dsn)
        check_source(self.source_conn, cfg.source, self.slot)
        check_admin(self.source_conn, cfg.source_dsn, cfg.setup_dsn, cfg.source)
        self.applier = Applier(self.landing, cfg.source, self.slot, self.publication,
                               cfg.contracts)
        self.applier.wait_hook = self.wait_worker
        self.applier.ddl_locks.keepalive = self.keep_alive
        self.tracker = RelationTracker(self.applier, self.source_conn, cfg.source)
        self.applier.begin()
        self.tracker.load()
        ckpt = load_checkpoint(self.landing, cfg.source)
        self.landing.rollback()
        self.applier.in_txn = False
        self.repl = replication_connection(cfg.source_dsn, **named(cfg.source_dsn, cfg.source),
                                           **keepalive_options(cfg.source_dsn))
        self.cur = self.repl.cursor()
        identity = source_identity(self.cur, self.source_conn)
        if ckpt is None or not ckpt.snapshot_done:
            initial_snapshot(self)
            record_identity(self.landing, cfg.source, identity)
        else:
            self.replay = check_continuity(self.landing, self.source_conn, cfg.source,
                                           self.slot, ckpt.lsn or 0, identity)
            self.ckpt = ckpt.lsn or 0
            self.floors = load_floors(self.landing, cfg.source, self.ckpt)
            self.refresh_publication()
        self.stats.lsn = self.ckpt
        end_stale_walsender(cfg.source_dsn, self.slot, cfg.stale_walsender)
        wait_slot_free(cfg.setup_dsn or cfg.source_dsn, self.slot)
        # From the slot's own position when it is behind the checkpoint: the transactions
        # between are read (and skipped) so that the replay proves it is landing's history.
        self.cur.start_replication(
            slot_name=self.slot, decode=False,
            start_lsn=lsn_to_str(self.replay.start if self.replay.until else self.ckpt),
            options=source_capabilities(self.source_conn).stream_options(self.publication))
        self.streaming = True
        self.silence = SilenceWatch(self.cur, self.repl.get_backend_pid(), silence_s)
        log.info("source %s: streaming from slot %s at %s", cfg.source, self.slot,
                 lsn_to_str(self.ckpt))

    def _log_report(self, report: PublicationReport) -> None:
        signature = (tuple(report.published), tuple(t.qualified for t in report.unpublishable),
                     tuple(report.missing), tuple(report.pending), report.managed)
        if (signature != self.last_report or report.added or report.removed or report.restored
                or report.narrowed):
            log_report(self.cfg.source, report)
        self.last_report = signature

    def refresh_publication(self) -> int:
        """Bring the publication up to date and snapshot tables that joined it (between
        transactions; :func:`ingestion.stream_snapshots.snapshot_new_tables`).

        Returns:
            Rows copied from new tables.
        """
        with kept_alive(self.keep_alive):
            return snapshot_new_tables(self)

    def set_contracts(self, contracts: object) -> None:
        """Validate with ``contracts`` from the next transaction on (call between transactions)."""
        self.cfg.contracts = contracts
        self.applier.contracts = contracts
        self.applier._contract_cache.clear()  # the applier caches contracts per table

    def close(self) -> None:
        """Close every connection (an open landing transaction is rolled back)."""
        if self.future is not None:
            with contextlib.suppress(Exception):
                self.future.result()
            self.future = None
        if self.links is not None:
            self.links.stop()
        self.executor.shutdown(wait=True)
        for conn in (self.repl, self.landing, self.source_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.repl = self.cur = self.landing = self.source_conn = None

    # -- heartbeat --------------------------------------------------------------------------

    def emit_heartbeat(self) -> int | None:
        """Emit a heartbeat on the source (:func:`ingestion.target.emit_heartbeat`); its LSN,
        None if refused."""
        return emit_heartbeat(self.cfg.setup_dsn or self.cfg.source_dsn)

    # -- streaming --------------------------------------------------------------------------

    def pump(self, done: Callable[[], bool], deadline: float | None = None,
             idle: Callable[[], None] | None = None) -> bool:
        """Read and apply the stream until ``done()`` holds between transactions.

        Args:
            done: checked when no source transaction is half-read; True ends the pump.
            deadline: ``time.monotonic()`` value after which the pump gives up.
            idle: called when the stream has nothing to read.

        Returns:
            True if ``done()`` became true, False at the deadline.
        """
        cur = self.cur
        while True:
            try:
                msg = cur.read_message()
            except psycopg2.DatabaseError as exc:  # the server ended the COPY: a lost connection
                ended = ended_stream(exc, self.source_conn)
                if ended is None:
                    raise
                raise ended from exc
            if msg is None:
                if self.future is not None and self.future.done():
                    self.wait_worker()
                if self.pending and not self.in_src_txn:
                    self.commit()
                elif self.future is None and self.applier.in_txn and not self.in_src_txn \
                        and self.ckpt:
                    self.applier.commit(self.ckpt, None)  # DDL of skipped transactions
                if self.future is not None and not self.in_src_txn:
                    # Nothing to read: see the commit through now, so that resyncs and done()
                    # can run even when the source never pauses for two reads in a row.
                    self.wait_worker()
                if self.tracker.resync_wanted and self.between_commits():
                    self.run_resyncs()
                    continue
                if not self.in_src_txn and self.future is None and done():
                    return True
                if deadline is not None and time.monotonic() > deadline:
                    return False
                if idle is not None:
                    idle()
                self.silence.check(self.last_message_at, self.ask_reply)
                select.select([self.repl], [], [], 0.2)
                continue
            payload = msg.payload
            kind = payload[0]
            if kind == 73 or kind == 85:  # 'I', 'U': the hot path
                self.handle_plain(payload, msg.data_start, kind == 85)
                continue
            if kind == 68:  # 'D': the warm path
                self.handle_row(payload, msg.data_start)
                continue
            self.last_message_at = time.monotonic()
            self.handle(decode(payload), msg.data_start)
            if self.future is not None and self.future.done():
                self.wait_worker()
            if self.pending and not self.in_src_txn and (
                    self.applier.rows_in_txn >= self.cfg.group_rows
                    or time.monotonic() - self.pending_since >= self.cfg.group_seconds):
                self.commit()
            if self.tracker.resync_wanted and self.between_commits():
                self.run_resyncs()
            if not self.in_src_txn and not self.pending and self.future is None and done():
                return True

    def handle_plain(self, payload: bytes, lsn: int, update: bool = False) -> None:
        """Apply one Insert (or, if ``update``, Update) message, straight to its line when it
        can (see :meth:`ingestion.changes.ChangeBuffer.add_plain`), else as :meth:`handle_row`
        does."""
        if self.skip:
            return
        try:
            info = self.tracker.by_oid[_U32.unpack_from(payload, 1)[0]]
        except (KeyError, struct.error):
            self.handle_row(payload, lsn)  # says what is wrong
            return
        if self.floors and self.txn_lsn < self.floors.get(info.name, 0):
            return  # in the table's latest snapshot already (added or resynced meanwhile)
        txn = self.applier.txn
        txn.seq += 2
        if self.applier.add_plain(info, payload, lsn, txn.seq, update):
            self.stats.changes += 1
            return
        txn.seq -= 2
        self.handle_row(payload, lsn)

    def handle_row(self, payload: bytes, lsn: int) -> None:
        """Apply one Insert, Update or Delete message, decoded without a message object."""
        if self.skip:
            return
        try:
            kind, relid, old_kind, old, new, unchanged = row_change(payload)
        except (struct.error, IndexError, ValueError, DecodeError):
            decode(payload)  # raises the DecodeError that says what is wrong
            raise
        info = self.tracker.by_oid.get(relid) or routed_change(self.tracker, relid)
        if info is None or self.floors and self.txn_lsn < self.floors.get(info.name, 0):
            return  # in the table's latest snapshot already (added or resynced meanwhile)
        txn = self.applier.txn
        txn.seq += 2
        self.applier.add(info, _ROW_OPS[kind], new, old, lsn, txn.seq, old_kind, unchanged)
        self.stats.changes += 1

    def handle(self, m: object, lsn: int) -> None:
        """Apply one decoded message other than a row change (see :meth:`handle_row`)."""
        if isinstance(m, Begin):
            self.in_src_txn = True
            self.replay.begin(m.final_lsn)
            self.skip = m.final_lsn < self.ckpt
            self.txn_lsn = m.final_lsn
            if not self.skip:
                if not self.pending:
                    self.pending_since = time.monotonic()
                self.applier.start_source_txn(m.final_lsn, pg_time(m.commit_time), m.xid)
                if not self.applier.in_txn and (self.future is None or self.future.done()):
                    # While a landing commit runs, the stream goes on decoding without waiting
                    # for it: the commit of these changes re-checks the table versions
                    # (TablesChangedError), and a flush that needs the connection waits then.
                    self.applier.begin()
                    self.tracker.refresh_if_changed()
        elif isinstance(m, Commit):
            self.in_src_txn = False
            self.replay.end(m.end_lsn)
            if self.skip:
                self.stats.skipped += 1
                self.skip = False
                return
            self.pending = True
            self.last_end = m.end_lsn
            self.last_commit_at = pg_time(m.commit_time)
            self.stats.transactions += 1
        elif isinstance(m, Relation):
            # pgoutput sends Relation messages without an LSN (0/0): the change they announce
            # takes effect in the transaction being read.
            with kept_alive(self.keep_alive):  # a schema change's backfill can take minutes
                self.tracker.on_relation(m, self.txn_lsn if self.in_src_txn else lsn or None)
        elif isinstance(m, Truncate):
            if self.skip:
                return
            infos = [i for r in m.relids
                     if (i := self.tracker.by_oid.get(r) or routed_change(self.tracker, r))]
            if self.floors:
                infos = [i for i in infos if self.txn_lsn >= self.floors.get(i.name, 0)]
            if infos:
                self.applier.truncate(infos, lsn)
        elif isinstance(m, Message):
            if not m.transactional:
                self.replay.end(m.lsn)
            if m.prefix == HEARTBEAT_PREFIX:
                log.debug("heartbeat at %s", lsn_to_str(m.lsn))

    def commit(self) -> None:
        """Hand the landing transaction to the background committer.

        The stream thread goes on decoding the next transactions while the landing applies and
        commits this batch; the slot is acknowledged once that commit has returned
        (:meth:`wait_worker`). At most one batch is in flight.
        """
        self.wait_worker()
        pending = self.applier.detach()
        versions = self.tracker.versions
        lsn, commit_at = self.last_end, self.last_commit_at
        self.pending = False
        self.future = self.executor.submit(self._commit_job, pending, lsn, commit_at, versions)

    def _commit_job(self, pending: tuple, lsn: int, commit_at: datetime | None,
                    versions: dict) -> int:
        _worker.active = True
        try:
            self.applier.commit_detached(pending, lsn, commit_at, versions)
            return lsn
        finally:
            _worker.active = False

    def wait_worker(self) -> None:
        """Wait for the background commit (if any), then acknowledge the slot up to it."""
        if getattr(_worker, "active", False) or self.future is None:
            return
        future, self.future = self.future, None
        while True:
            try:
                lsn = future.result(timeout=_KEEPALIVE_S)
                break
            except TimeoutError:
                # A slow landing commit: tell the walsender this end is alive, else a small
                # wal_sender_timeout (a DBA may set one second) ends the stream meanwhile.
                self.cur.send_feedback(force=True)
        self.ckpt = lsn
        self.stats.lsn = lsn
        self.stats.landing_commits += 1
        self.ack()

    def keep_alive(self) -> None:
        """Tell the walsender this end is alive while the stream thread waits (for a landing
        table's lock: :mod:`ingestion.ddl_locks`), else a small wal_sender_timeout ends the
        stream meanwhile."""
        with self.feedback_lock:  # also called from kept_alive's thread
            if self.streaming and self.cur is not None:
                self.cur.send_feedback(force=True)

    def ask_reply(self) -> None:
        """Ask the walsender to answer at once (:class:`ingestion.silence.SilenceWatch`)."""
        with self.feedback_lock:
            self.cur.send_feedback(reply=True, force=True)

    def between_commits(self) -> bool:
        """Whether nothing is half-read, buffered or being committed."""
        return (not self.in_src_txn and not self.pending and self.future is None
                and not self.applier.in_txn)

    def run_resyncs(self) -> None:
        """Resync the tables paused for it (a column added with a per-row default).

        Runs between landing transactions: the resync takes the source's landing lock on its
        own connection, snapshots the table at a new LSN, lands the kept changes, and the
        stream goes on (changes of the table committed before that LSN reach only its
        changelog).
        """
        from ingestion.resync import resync_table  # resync uses this module's engine

        cfg = self.cfg
        for name in sorted(self.tracker.resync_wanted):
            try:
                with kept_alive(self.keep_alive):  # a copy of 10 M rows: minutes
                    message = resync_table(cfg.source_dsn, cfg.landing_dsn, cfg.source, name,
                                           cfg.contracts, self.keep_alive, cfg.setup_dsn)
            except IngestionError as exc:
                # The table stays paused with the reason; the others keep flowing.
                self.tracker.resync_failed(name, str(exc))
                continue
            log.info("source %s: automatic resync: %s", cfg.source, message)
        self.tracker.resync_wanted.clear()

    def ack(self) -> None:
        """Tell the slot everything up to the checkpoint is durable in landing."""
        if self.ckpt:
            self.cur.send_feedback(write_lsn=self.ckpt, flush_lsn=self.ckpt, force=True)

    def await_acknowledged(self, timeout_s: float = 5.0) -> bool:
        """Wait until the slot's confirmed position covers the checkpoint.

        The walsender reads an acknowledgement asynchronously: right after :meth:`ack` the slot
        (and the WAL it retains) can still be behind, and a reader of ``pg_replication_slots``
        sees the old position. The acknowledgement is sent again every 50 ms meanwhile.

        Args:
            timeout_s: give up after this long (the next session acknowledges it anyway).

        Returns:
            Whether the slot covers the checkpoint.
        """
        if not self.ckpt:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.source_conn.execute(
                "select confirmed_flush_lsn >= %s::pg_lsn from pg_replication_slots"
                " where slot_name = %s", (lsn_to_str(self.ckpt), self.slot)).fetchone()
            if row is None or row[0]:
                return True
            if time.monotonic() >= deadline:
                log.debug("slot %s not yet confirmed at %s", self.slot, lsn_to_str(self.ckpt))
                return False
            self.ack()
            time.sleep(0.05)
