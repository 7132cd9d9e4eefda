"""Entry points: :func:`catch_up` (one-shot) and :func:`run` (the long-running loop)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
import psycopg2

from ingestion.errors import CatchUpTimeoutError, IngestionError, TablesChangedError
from ingestion.lsn import lsn_to_str
from ingestion.session import Session, SessionConfig

log = logging.getLogger("tidemark.ingestion")

CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError,
                     psycopg2.OperationalError, psycopg2.InterfaceError, OSError)


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


def catch_up(source_dsn: str, landing_dsn: str, source: str = "shop", *, contracts: object = None,
             publication_tables: list[str] | None = None, timeout_s: float = 300,
             setup_dsn: str | None = None) -> CatchUpStats:
    """Bring landing up to the source's current WAL position, then return.

    Creates the publication and slot if missing, takes the initial snapshot if landing has none,
    then streams and applies until everything committed on the source before this call is in
    landing, and acknowledges the slot.

    Args:
        source_dsn: source URL (REPLICATION + SELECT; also creates the publication unless
            ``setup_dsn`` is given).
        landing_dsn: landing URL.
        source: source name (mirror schema, slot and publication names).
        contracts: a ``contracts.ContractSet`` to validate against, or None.
        publication_tables: tables to publish; None for every table of schema public.
        timeout_s: give up after this long.
        setup_dsn: source URL allowed to create the publication and emit heartbeats.

    Returns:
        What was done.

    Raises:
        CatchUpTimeoutError: the target was not reached in time.
    """
    started = time.monotonic()
    session = Session(SessionConfig(source_dsn, landing_dsn, source, setup_dsn, contracts,
                                    publication_tables))
    try:
        session.open()
        target = session.emit_heartbeat()
        if target is None:
            target = session.current_wal_lsn()
        reached = session.pump(lambda: session.ckpt >= target,
                               deadline=started + timeout_s,
                               idle=lambda: _request_reply(session))
        if not reached:
            raise CatchUpTimeoutError(
                f"catch_up of source {source!r} reached {lsn_to_str(session.ckpt)} but not "
                f"{lsn_to_str(target)} within {timeout_s:.0f}s; run it again (progress is kept) "
                f"or raise timeout_s.")
        st = session.stats
        return CatchUpStats(source, st.snapshot_rows, st.changes, st.transactions,
                            st.landing_commits, lsn_to_str(session.ckpt), lsn_to_str(target),
                            round(time.monotonic() - started, 3))
    finally:
        session.close()


def _request_reply(session: Session) -> None:
    """Without heartbeat rights, follow the server's WAL end from keepalives."""
    wal_end = session.cur.wal_end
    if wal_end and not session.pending and not session.in_src_txn and wal_end > session.ckpt \
            and time.monotonic() - session.last_message_at > 1.0:
        session.last_message_at = time.monotonic()
        session.cur.send_feedback(reply=True)


def run(source_dsn: str, landing_dsn: str, source: str = "shop", *, contracts: object = None,
        stop: threading.Event | None = None, setup_dsn: str | None = None,
        publication_tables: list[str] | None = None, heartbeat_s: float = 10.0,
        max_backoff_s: float = 30.0) -> None:
    """Stream the source into landing until ``stop`` is set.

    Reconnects with exponential backoff when the source or landing goes away (a log line says
    what happened); every new session resumes from the landing checkpoint. When ``stop`` is set,
    the source transaction in hand is finished, committed and acknowledged before returning.

    Args:
        source_dsn: source URL for streaming (REPLICATION + SELECT).
        landing_dsn: landing URL.
        source: source name.
        contracts: contract set, or None.
        stop: set it to end the loop cleanly (SIGTERM handler, tests, Dagster).
        setup_dsn: source URL allowed to create the publication and emit heartbeats.
        publication_tables: tables to publish; None for all of schema public.
        heartbeat_s: emit a heartbeat after this many idle seconds.
        max_backoff_s: longest wait between reconnection attempts.

    Raises:
        IngestionError: a problem retrying cannot fix (slot missing, no rights).
    """
    stop = stop or threading.Event()
    backoff = 0.5
    while not stop.is_set():
        session = Session(SessionConfig(source_dsn, landing_dsn, source, setup_dsn, contracts,
                                        publication_tables))
        try:
            session.open()
            backoff = 0.5
            last_beat = [time.monotonic()]

            def idle(s: Session = session, beat: list[float] = last_beat) -> None:
                now = time.monotonic()
                if now - max(beat[0], s.last_message_at) >= heartbeat_s:
                    beat[0] = now
                    s.emit_heartbeat()

            session.pump(stop.is_set, idle=idle)
            log.info("source %s: stopped cleanly at %s", source, lsn_to_str(session.ckpt))
            return
        except TablesChangedError as exc:
            log.info("source %s: %s", source, exc)
            continue
        except IngestionError:
            raise
        except CONNECTION_ERRORS as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("source %s: connection lost (%s); reconnecting in %.1fs", source, reason,
                        backoff)
        finally:
            session.close()
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff_s)
