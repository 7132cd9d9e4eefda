"""Before streaming from a checkpoint: is the slot's stream still the continuation of landing?

Operations break that silently: a landing database restored from an older backup (its
checkpoint is behind what the slot was already acknowledged for: those changes are gone from
the slot), a source restored from a base backup (its WAL is behind landing's checkpoint:
landing holds changes the source no longer has, and new ones may reuse their positions), a
source restored from a dump (no slot). Streaming on would leave a hole in landing for ever, so
:func:`check_continuity` refuses with what happened and the remedy, a full resync.

The slot's ``confirmed_flush_lsn`` alone cannot tell a restored landing: psycopg2 moves the
acknowledged position to the end of the WAL the server reports in its keepalives once every
message received is acknowledged (unpublished WAL, other databases, shutdown checkpoints), so
after an ordinary restart the slot is often past the checkpoint with nothing missing. What
tells is landing's identity: the OIDs of the landing database and of ``tidemark.checkpoints``
are recorded with the checkpoint; a restore (``pg_dump``/``pg_restore``, a copy) gives new
ones. A restored landing whose slot is past its checkpoint has lost changes.

A slot acknowledged behind the checkpoint is normal after a source crash (a slot's position is
saved at checkpoints) and replays transactions landing has: the replay must then hold landing's
last one, ending exactly at the checkpoint (:class:`ReplayCheck`). A source restored from a file
copy or disk snapshot, and used until its WAL passed the checkpoint, replays a different history
instead: its transactions below the checkpoint would be skipped, so ingestion refuses.

The source's identity is recorded too: its server's system identifier (``IDENTIFY_SYSTEM``) and
its database's OID. A slot of the source's name in a database with another OID was made after
that database was re-created or restored (``DROP DATABASE`` refuses while a slot is in it;
``pg_upgrade`` keeps database OIDs from 15, and carries slots only from 17), by hand or by
another landing: it holds none of the changes between, so ingestion refuses. A new system
identifier with the same database OID and a slot is ``pg_upgrade`` carrying it: streamed on.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ingestion.errors import (
    LandingRestoredError,
    SlotMissingError,
    SourceBehindError,
    SourceReplacedError,
)
from ingestion.lsn import lsn_to_str, str_to_lsn, wal_position

log = logging.getLogger("tidemark.ingestion")
_IDENTITY = ("select (select oid from pg_database where datname = current_database())::text"
             " || ':' || 'tidemark.checkpoints'::regclass::oid::text")


def _remedy(source: str) -> str:
    return (f"Run `tidemark ingest resync --all --source {source}` (Python: "
            f"`ingestion.resync(source_url, landing_url, {source!r})`) to take a fresh "
            f"snapshot of every table; the slot is re-created")


def source_identity(repl_cursor: Any, source_conn: psycopg.Connection) -> str:
    """The source's identity: ``<system identifier>:<database OID>``.

    Args:
        repl_cursor: a cursor of the source's replication connection (psycopg2).
        source_conn: a connection to the source database.
    """
    repl_cursor.execute("IDENTIFY_SYSTEM")
    system = repl_cursor.fetchone()[0]
    database = source_conn.execute("select oid from pg_database where datname ="
                                   " current_database()").fetchone()[0]
    return f"{system}:{database}"


def _changed(stored: str | None, identity: str) -> str:
    """What changed from the recorded source identity to ``identity`` ('' if nothing known)."""
    if not stored or stored == identity:
        return ""
    (old_system, old_db), (system, db) = stored.split(":"), identity.split(":")
    if old_db != db:
        server = "" if old_system == system else f" on another server ({old_system} -> {system})"
        return f"the source database was re-created (its OID {old_db} -> {db}){server}"
    return f"the source server's system identifier changed ({old_system} -> {system})"


def check_continuity(landing: psycopg.Connection, source_conn: psycopg.Connection,
                     source: str, slot: str, ckpt: int, identity: str = "") -> ReplayCheck:
    """Refuse to stream from ``ckpt`` when changes would be missing (see module docstring).

    Args:
        landing: landing connection (its transaction is committed: the identity is recorded).
        source_conn: autocommit source connection.
        source: source name.
        slot: the source's replication slot.
        ckpt: the landing checkpoint (the snapshot is done).
        identity: the source's :func:`source_identity` ('' : not checked).

    Returns:
        The check the stream's replay below the checkpoint must pass.

    Raises:
        SlotMissingError: the slot does not exist.
        SourceReplacedError: the slot was made in a re-created source database.
        SourceBehindError: the source's WAL is behind the checkpoint.
        LandingRestoredError: landing was restored and the slot is past its checkpoint.
    """
    row = source_conn.execute(sql.SQL(
        "select s.confirmed_flush_lsn::text, {}::text,"
        " pg_postmaster_start_time(), current_setting('wal_sender_timeout')"
        " from pg_replication_slots s where s.slot_name = %s").format(wal_position("insert")),
        (slot,)).fetchone()
    at = lsn_to_str(ckpt)
    ids = landing.execute("select landing_identity, source_identity from tidemark.checkpoints"
                          " where source = %s", (source,)).fetchone()
    changed = _changed(ids[1] if ids else None, identity) if identity else ""
    if row is None:
        if changed.startswith("the source server"):
            why = (f"{changed}: a new server, upgraded with pg_upgrade before PostgreSQL 17 "
                   f"(which does not carry logical slots) or restored from a dump")
        elif changed:
            why = f"{changed}: dropped and created again, or restored from a dump"
        else:
            why = ("dropped, the source database restored from a dump or re-created, its "
                   "server upgraded with pg_upgrade before PostgreSQL 17, or a different "
                   "source database")
        landing.rollback()
        raise SlotMissingError(
            f"Landing has a checkpoint for source {source!r} at {at}, but replication slot "
            f"{slot!r} does not exist on the source ({why}). Changes since then cannot be "
            f"streamed. {_remedy(source)}.")
    if changed.startswith("the source database was re-created"):
        landing.rollback()
        raise SourceReplacedError(
            f"Replication slot {slot!r} on source {source!r} is not the one landing streamed "
            f"from: {changed} since landing's checkpoint {at}, and the slot was made there "
            f"afterwards (by hand, or by another landing ingesting a source of this name). It "
            f"holds none of the changes made between, and landing may hold rows the source no "
            f"longer has; nothing was streamed. {_remedy(source)}, which makes landing equal "
            f"the source again.")
    if changed:
        log.warning("source %s: %s, with the same database OID and replication slot %s: "
                    "an upgrade with pg_upgrade (PostgreSQL 17 and later carry logical "
                    "slots); streaming on from landing's checkpoint %s", source, changed,
                    slot, at)
    confirmed = str_to_lsn(row[0]) if row[0] else 0
    position = str_to_lsn(row[1]) if row[1] else ckpt
    if position < ckpt:
        raise SourceBehindError(
            f"Source {source!r} is behind landing: its WAL ends at {lsn_to_str(position)}, but "
            f"landing already holds its changes up to {at}. The source was restored from a "
            f"backup (or its server from a base backup, or a standby promoted that had not "
            f"received them): landing holds changes the source no longer has, and new ones "
            f"would reuse their WAL positions and be skipped. Nothing was streamed. "
            f"{_remedy(source)}, which makes landing equal the source again.")
    if confirmed and confirmed < ckpt:
        _behind(landing, source, slot, lsn_to_str(confirmed), at, row[2], row[3])
    if ids is not None and ids[0] is not None and ids[0] != _identity(landing) \
            and confirmed > ckpt:
        landing.rollback()
        raise LandingRestoredError(
            f"Landing was restored from a backup (or copied): its checkpoint for source "
            f"{source!r} is at {at}, but replication slot {slot!r} was already acknowledged up "
            f"to {lsn_to_str(confirmed)} — by the landing database the backup was taken from. "
            f"The changes committed on the source between are gone from the slot and not in "
            f"landing; streaming on would leave them out for ever, so nothing was streamed. "
            f"{_remedy(source)}.")
    record_identity(landing, source, identity)
    return ReplayCheck(source, slot, confirmed, ckpt if confirmed and confirmed < ckpt else 0)


class ReplayCheck:
    """Whether a replay from a slot acknowledged behind the checkpoint is landing's history.

    Landing's checkpoint is the end of the last source transaction it applied (or of a logical
    message, or the consistent point of its snapshot, where the slot starts). Replayed from an
    earlier position, the same history delivers a transaction or message ending exactly there
    before anything past it; a different one (a restored source used since) does not.

    Attributes:
        source: source name.
        slot: the replication slot.
        start: the slot's acknowledged position the replay starts from.
        until: the checkpoint still to be met in the replay (0: nothing left to check).
    """

    def __init__(self, source: str, slot: str, start: int, until: int) -> None:
        self.source, self.slot, self.start, self.until = source, slot, start, until

    def begin(self, final_lsn: int) -> None:
        """A source transaction begins whose commit record starts at ``final_lsn``."""
        if self.until and final_lsn >= self.until:
            self._refuse(final_lsn)

    def end(self, end_lsn: int) -> None:
        """A transaction (or a message outside one) was read, ending at ``end_lsn``."""
        if not self.until:
            return
        if end_lsn == self.until:
            log.info("source %s: the replay from %s holds landing's last transaction at %s",
                     self.source, lsn_to_str(self.start), lsn_to_str(self.until))
            self.until = 0
        elif end_lsn > self.until:
            self._refuse(end_lsn)

    def _refuse(self, lsn: int) -> None:
        at = lsn_to_str(self.until)
        raise SourceBehindError(
            f"Source {self.source!r} has a different history than landing: replication slot "
            f"{self.slot!r} replays from {lsn_to_str(self.start)}, and the source's WAL reaches "
            f"{lsn_to_str(lsn)} without landing's last transaction, which ended at {at}. The "
            f"source server was restored from a copy taken earlier (a file copy, a disk "
            f"snapshot) and used since: landing holds changes the source no longer has, and "
            f"the source's transactions below {at} would be skipped. Nothing of them was "
            f"applied. {_remedy(self.source)}, which makes landing equal the source again.")


def _behind(landing: psycopg.Connection, source: str, slot: str, confirmed: str, at: str,
            started_at: datetime, sender_timeout: str) -> None:
    """Log a slot acknowledged behind landing's checkpoint, and why, judged by whether the
    source server started after landing's last commit (a crash, or a restore: a slot's position
    is saved at checkpoints) or ran all along (the stream ended before the acknowledgement
    reached it: nothing is wrong)."""
    applied = landing.execute("select last_applied_at from tidemark.checkpoints where"
                              " source = %s", (source,)).fetchone()
    if applied is None or applied[0] is None or started_at > applied[0]:
        log.warning(
            "source %s: replication slot %s was acknowledged up to %s only, behind landing's "
            "checkpoint %s: normal after the source server crashed (a slot's position is saved "
            "at checkpoints; the server started at %s) or ingestion was killed between a "
            "landing commit and its acknowledgement. Landing's last transaction must be in the "
            "replay; if the source was restored from a copy instead, ingestion stops there",
            source, slot, confirmed, at, started_at)
        return
    log.info(
        "source %s: replication slot %s was acknowledged up to %s only, behind landing's "
        "checkpoint %s: the stream ended before the acknowledgement of landing's last commit "
        "reached the source (a lost connection; a landing step longer than the source's "
        "wal_sender_timeout, %s; or ingestion stopped between a commit and its "
        "acknowledgement). The source server has run since %s, before that commit: no crash, "
        "nothing lost; streaming resumes after the checkpoint", source, slot, confirmed, at,
        sender_timeout, started_at)


def _identity(landing: psycopg.Connection) -> str:
    return landing.execute(_IDENTITY).fetchone()[0]


def record_identity(landing: psycopg.Connection, source: str, identity: str = "") -> None:
    """Record which landing database holds the checkpoint of ``source``, and the source's
    :func:`source_identity` when given (and commit)."""
    landing.execute("update tidemark.checkpoints set landing_identity = %s, source_identity ="
                    " coalesce(nullif(%s, ''), source_identity) where source = %s",
                    (_identity(landing), identity, source))
    landing.commit()
