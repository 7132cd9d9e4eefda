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
"""

from __future__ import annotations

import logging
from datetime import datetime

import psycopg
from psycopg import sql

from ingestion.errors import LandingRestoredError, SlotMissingError, SourceBehindError
from ingestion.lsn import lsn_to_str, str_to_lsn, wal_position

log = logging.getLogger("tidemark.ingestion")
_IDENTITY = ("select (select oid from pg_database where datname = current_database())::text"
             " || ':' || 'tidemark.checkpoints'::regclass::oid::text")


def _remedy(source: str) -> str:
    return (f"Run `tidemark ingest resync --all --source {source}` (Python: "
            f"`ingestion.resync(source_url, landing_url, {source!r})`) to take a fresh "
            f"snapshot of every table; the slot is re-created")


def check_continuity(landing: psycopg.Connection, source_conn: psycopg.Connection,
                     source: str, slot: str, ckpt: int) -> ReplayCheck:
    """Refuse to stream from ``ckpt`` when changes would be missing (see module docstring).

    Args:
        landing: landing connection (its transaction is committed: the identity is recorded).
        source_conn: autocommit source connection.
        source: source name.
        slot: the source's replication slot.
        ckpt: the landing checkpoint (the snapshot is done).

    Returns:
        The check the stream's replay below the checkpoint must pass.

    Raises:
        SlotMissingError: the slot does not exist.
        SourceBehindError: the source's WAL is behind the checkpoint.
        LandingRestoredError: landing was restored and the slot is past its checkpoint.
    """
    row = source_conn.execute(sql.SQL(
        "select s.confirmed_flush_lsn::text, {}::text,"
        " pg_postmaster_start_time(), current_setting('wal_sender_timeout')"
        " from pg_replication_slots s where s.slot_name = %s").format(wal_position("insert")),
        (slot,)).fetchone()
    at = lsn_to_str(ckpt)
    if row is None:
        raise SlotMissingError(
            f"Landing has a checkpoint for source {source!r} at {at}, but replication slot "
            f"{slot!r} does not exist on the source (dropped, the source database restored "
            f"from a dump or re-created, or a different source database). Changes since then "
            f"cannot be streamed. {_remedy(source)}.")
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
    stored = landing.execute("select landing_identity from tidemark.checkpoints where"
                             " source = %s", (source,)).fetchone()
    identity = _identity(landing)
    if stored is not None and stored[0] is not None and stored[0] != identity \
            and confirmed > ckpt:
        landing.rollback()
        raise LandingRestoredError(
            f"Landing was restored from a backup (or copied): its checkpoint for source "
            f"{source!r} is at {at}, but replication slot {slot!r} was already acknowledged up "
            f"to {lsn_to_str(confirmed)} — by the landing database the backup was taken from. "
            f"The changes committed on the source between are gone from the slot and not in "
            f"landing; streaming on would leave them out for ever, so nothing was streamed. "
            f"{_remedy(source)}.")
    record_identity(landing, source)
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


def record_identity(landing: psycopg.Connection, source: str) -> None:
    """Record which landing database holds the checkpoint of ``source`` (and commit)."""
    landing.execute("update tidemark.checkpoints set landing_identity = %s where source = %s",
                    (_identity(landing), source))
    landing.commit()
