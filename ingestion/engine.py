"""Entry points: :func:`catch_up` (one-shot) and :func:`run` (the long-running loop)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg2

from ingestion.errors import CatchUpTimeoutError, IngestionError, TablesChangedError
from ingestion.failures import failed_side, is_transient, permanent, retry_reason
from ingestion.landing_indexes import IndexKeeper
from ingestion.lsn import lsn_to_str
from ingestion.progress import ProgressCallback
from ingestion.quiet_retypes import retypes_waiting
from ingestion.session import Session
from ingestion.session_config import SessionConfig
from ingestion.session_settings import pinned_dsn
from ingestion.target import CatchUpTarget
from ingestion.viewfailure import ViewBrokenError, break_failing_view

log = logging.getLogger("tidemark.ingestion")

CONNECTION_ERRORS = (psycopg.Error, psycopg2.Error, OSError)
# A session that applied a change or ran this long worked: its failure is retried from the
# shortest backoff. One that opens and fails before applying anything (landing out of disk
# space, a change landing refuses each time) backs off as a failed connection does.
_STEADY_S = 60.0


@dataclass
class CatchUpStats:
    """What :func:`catch_up` did.

    Attributes:
        source: source name.
        snapshot_rows: rows copied by the initial snapshot (0 when it was done before).
        changes: changes applied from the stream.
        transactions: source transactions applied.
        landing_commits: landing transactions committed.
        lsn: the checkpoint LSN reached (``X/Y``).
        target_lsn: the source WAL position caught up to (``X/Y``).
        seconds: wall time.
    """

    source: str
    snapshot_rows: int
    changes: int
    transactions: int
    landing_commits: int
    lsn: str
    target_lsn: str
    seconds: float


def catch_up(source_dsn: str, landing_dsn: str, source: str, *, contracts: object = None,
             publication_tables: list[str] | None = None, timeout_s: float = 300,
             setup_dsn: str | None = None, schemas: list[str] | None = None,
             on_progress: ProgressCallback | None = None) -> CatchUpStats:
    """Bring landing up to the source's WAL position when the call starts, then return.

    Takes the target first (:class:`ingestion.target.CatchUpTarget`), then creates the
    publication and slot if missing, takes the initial snapshot if landing has none (its
    consistent point is past the target: a first call returns when the snapshot commits), then
    streams and applies until everything committed on the source before this call is in
    landing, and acknowledges the slot. Last, builds the contracts' indexes that existing
    mirrors miss (:func:`ingestion.landing_indexes.ensure_declared_indexes`; an upgraded
    landing), so the dbt builds that follow a catch-up read them by index.

    Args:
        source_dsn: source URL (REPLICATION + SELECT; also manages the publication unless
            ``setup_dsn`` is given).
        landing_dsn: landing URL.
        source: source name (mirror schema, slot and publication names).
        contracts: a ``contracts.ContractSet`` to validate against, or None.
        publication_tables: tables to replicate (``schema.table``), instead of schemas.
        timeout_s: give up after this long (the snapshot's time included).
        setup_dsn: source URL allowed to create the publication and emit heartbeats.
        schemas: schemas to replicate (default ``public``).
        on_progress: called with the snapshot's progress.

    Returns:
        What was done.

    Raises:
        CatchUpTimeoutError: the target was not reached in time.
        PermanentSourceError: the source cannot be used as configured.
    """
    started = time.monotonic()
    try:
        target = CatchUpTarget.take(pinned_dsn(source_dsn),
                                    None if setup_dsn is None else pinned_dsn(setup_dsn))
    except CONNECTION_ERRORS as exc:
        if is_transient(exc):
            raise
        raise permanent(source, exc) from None
    while True:
        try:
            stats = _catch_up_once(started, timeout_s, target, SessionConfig(
                source_dsn, landing_dsn, source, setup_dsn, contracts, publication_tables,
                schemas=schemas, on_progress=on_progress))
            # an upgraded landing's mirrors get the contracts' indexes before the builds that
            # follow a catch-up read them (a stream builds them in the background)
            IndexKeeper.build(landing_dsn, source, contracts)
            return stats
        except TablesChangedError as exc:  # a resync ran meanwhile: again from the checkpoint
            log.info("source %s: %s", source, exc)
        except psycopg.Error as exc:  # a live view failed on a row: broken, again without it
            if break_failing_view(landing_dsn, source, exc) is None:
                raise
        except psycopg2.Error as exc:  # the stream: said as `run` says it, or retried by the caller
            if is_transient(exc):
                raise
            raise permanent(source, exc) from None


def _catch_up_once(started: float, timeout_s: float, target: CatchUpTarget,
                   cfg: SessionConfig) -> CatchUpStats:
    source = cfg.source
    session = Session(cfg)
    try:
        try:
            session.open()
        except CONNECTION_ERRORS as exc:
            if is_transient(exc):
                raise
            side = failed_side(exc, cfg.landing_dsn, session.landing)
            session.close()  # rolled back first: marking a view broken locks its tables
            view = break_failing_view(cfg.landing_dsn, source, exc)
            if view is not None:
                raise ViewBrokenError(f"live view {view} is broken; applying again") from None
            raise permanent(source, exc, side) from None
        reached = session.pump(lambda: target.reached(session.ckpt, session.cur.wal_end),
                               deadline=started + timeout_s,
                               idle=lambda: _request_reply(session, target))
        if not reached:
            raise CatchUpTimeoutError(
                f"catch_up of source {source!r} reached {lsn_to_str(session.ckpt)} but not "
                f"{lsn_to_str(target.lsn)} within {timeout_s:.0f}s; run it again (progress is "
                f"kept) or raise timeout_s.")
        if retypes_waiting(session):
            _follow_quiet_retypes(session, cfg, started + timeout_s)
        session.await_acknowledged()  # the promise: the slot is acknowledged on return
        st = session.stats
        return CatchUpStats(source, st.snapshot_rows, st.changes, st.transactions,
                            st.landing_commits, lsn_to_str(session.ckpt),
                            lsn_to_str(target.lsn), round(time.monotonic() - started, 3))
    finally:
        session.close()


def _follow_quiet_retypes(session: Session, cfg: SessionConfig, deadline: float) -> None:
    """A type change the session's first publication sync saw in the source catalog, which
    waits for the stream to pass the WAL position of that sync (a keyless table's widening:
    :mod:`ingestion.quiet_retypes`): stream to a target taken now, then sync again. Without
    this, every catch-up would see the change anew and leave it for good."""
    later = CatchUpTarget.take(pinned_dsn(cfg.source_dsn),
                               None if cfg.setup_dsn is None else pinned_dsn(cfg.setup_dsn))
    if session.pump(lambda: later.reached(session.ckpt, session.cur.wal_end),
                    deadline=deadline, idle=lambda: _request_reply(session, later)):
        session.refresh_publication()  # else the next catch-up's, or a stream's


def _request_reply(session: Session, target: CatchUpTarget) -> None:
    """Without heartbeat rights, ask the walsender for its decoded position (a keepalive) until
    the stream reports one past the target (:class:`ingestion.target.CatchUpTarget`)."""
    if target.heartbeat or session.pending or session.in_src_txn:
        return
    target.settle(session.source_conn)
    if time.monotonic() - session.last_message_at > 0.5:
        session.last_message_at = time.monotonic()
        session.cur.send_feedback(reply=True)


class _Housekeeping:
    """Work done between transactions of a running stream: contract reload, new tables, the
    contracts' indexes on existing mirrors (in a thread of their own)."""

    def __init__(self, contracts: Any, refresh_s: float) -> None:
        from contracts.watch import ContractWatcher

        root = getattr(contracts, "root", None)
        self.watcher = ContractWatcher(Path(root)) if root is not None else None
        self.refresh_s = refresh_s
        self.refreshed_at = time.monotonic()
        self.indexes = IndexKeeper()

    def __call__(self, session: Session) -> None:
        if self.watcher is not None:
            fresh = self.watcher.poll()
            if fresh is not None:
                session.set_contracts(fresh)
        self.indexes.poll(session.cfg.landing_dsn, session.cfg.source, session.cfg.contracts)
        if time.monotonic() - self.refreshed_at >= self.refresh_s:
            self.refreshed_at = time.monotonic()
            session.refresh_publication()


def run(source_dsn: str, landing_dsn: str, source: str, *, contracts: object = None,
        stop: threading.Event | None = None, setup_dsn: str | None = None,
        publication_tables: list[str] | None = None, heartbeat_s: float = 10.0,
        max_backoff_s: float = 30.0, schemas: list[str] | None = None,
        on_progress: ProgressCallback | None = None, refresh_s: float = 30.0) -> None:
    """Stream the source into landing until ``stop`` is set.

    Transient failures (a server unreachable or restarting, a dropped connection) are logged and
    retried with exponential backoff; every new session resumes from the landing checkpoint.
    Between transactions the contracts folder is watched (changed contracts apply from the next
    transaction) and every ``refresh_s`` the publication is synced, so tables created later in a
    selected schema are copied and then streamed. When ``stop`` is set, the source transaction
    in hand is finished, committed and acknowledged before returning.

    Args:
        source_dsn: source URL for streaming (REPLICATION + SELECT).
        landing_dsn: landing URL.
        source: source name.
        contracts: contract set (reloaded from its folder when the files change), or None.
        stop: set it to end the loop cleanly (SIGTERM handler, tests, Dagster).
        setup_dsn: source URL allowed to manage the publication and emit heartbeats.
        publication_tables: tables to replicate (``schema.table``), instead of schemas.
        heartbeat_s: emit a heartbeat after this many idle seconds.
        max_backoff_s: longest wait between reconnection attempts.
        schemas: schemas to replicate (default ``public``).
        on_progress: called with a snapshot's progress.
        refresh_s: how often the publication is synced with the selected schemas.

    Raises:
        PermanentSourceError: a failure retrying cannot fix (wrong password, database missing,
            wal_level, slot in another database, a missing right), reported once.
        IngestionError: another problem retrying cannot fix (slot lost, ...).
    """
    stop = stop or threading.Event()
    backoff = 0.5
    housekeeping = _Housekeeping(contracts, refresh_s)
    stale: int | None = None  # the walsender of a stream that went silent
    while not stop.is_set():
        session = Session(SessionConfig(source_dsn, landing_dsn, source, setup_dsn, contracts,
                                        publication_tables, schemas=schemas,
                                        on_progress=on_progress, stale_walsender=stale))
        opened: tuple[float, int] | None = None
        try:
            session.open()
            opened = (time.monotonic(), session.ckpt)
            last_beat = [time.monotonic()]

            def idle(s: Session = session, beat: list[float] = last_beat) -> None:
                now = time.monotonic()
                if now - max(beat[0], s.last_message_at) >= heartbeat_s:
                    beat[0] = now
                    s.emit_heartbeat()

            def done(s: Session = session) -> bool:
                if stop.is_set():
                    return True
                housekeeping(s)
                return False

            session.pump(done, idle=idle)
            log.info("source %s: stopped cleanly at %s", source, lsn_to_str(session.ckpt))
            return
        except TablesChangedError as exc:
            log.info("source %s: %s", source, exc)
            continue
        except IngestionError:
            raise
        except CONNECTION_ERRORS as exc:
            side = failed_side(exc, landing_dsn, session.landing)
            stale = getattr(exc, "walsender_pid", None)
            session.close()  # rolled back first: marking a view broken locks its tables
            if break_failing_view(landing_dsn, source, exc):
                continue  # the view is broken: apply again from the checkpoint, without it
            if not is_transient(exc):
                raise permanent(source, exc, side) from None
            if opened is not None and (session.ckpt != opened[1]
                                       or time.monotonic() - opened[0] >= _STEADY_S):
                backoff = 0.5  # the session worked: a new failure, retried soon
            log.warning("source %s: %s; reconnecting in %.1fs", source,
                        retry_reason(exc, side), backoff)
        finally:
            contracts = session.cfg.contracts
            session.close()
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff_s)
