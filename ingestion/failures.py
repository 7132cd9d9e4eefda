"""Telling failures retrying can fix from those it cannot, and saying what to do about the latter.

Transient: the server is unreachable, restarting, or dropped the connection; ingestion retries
with backoff. Permanent: the login is refused, the database or slot is elsewhere, ``wal_level``
is not ``logical``, a right is missing; ingestion reports it once and stops that source.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from ingestion.errors import LandingLocksError, PermanentSourceError, SourceStreamEndedError
from ingestion.versions import check_source_version

log = logging.getLogger("tidemark.ingestion")

# SQLSTATE classes worth retrying: connection exception, insufficient resources, operator
# intervention (shutdown, crash, "cannot connect now"), transaction rollback (serialization).
_TRANSIENT_CLASSES = ("08", "53", "57", "40")
_PERMANENT_STATES = {"57P04"}  # database dropped
_TRANSIENT_TEXT = (
    "connection refused", "server closed the connection", "could not receive data",
    "could not send data", "terminating connection", "is starting up", "is shutting down",
    "in recovery mode", "not yet accepting connections", "timeout expired", "timed out",
    "connection reset", "broken pipe", "eof detected", "ssl syscall", "consuming input failed",
    "lost synchronization", "no connection to the server", "connection is closed",
    "too many clients", "remaining connection slots", "no route to host",
    "network is unreachable", "the connection is lost", "closed unexpectedly",
    "connection has been lost", "connection was lost",
    # libpq returned an error without a message: the server ended the connection in the middle
    # of the replication stream (e.g. wal_sender_timeout passed while this process was paused)
    "no message from the libpq",
    # libpq refusing to read or send on a replication stream the server ended (its walsender
    # stops at a shutdown): the stream's read says so as SourceStreamEndedError
    # (:func:`ended_stream`), an acknowledgement sent right after it says this
    "no copy in progress",
    # the server is out of disk space as a session starts: it cannot write the relation cache's
    # init file (a FATAL without an SQLSTATE for the client; text not translated by the server)
    "could not write init file",
)
_DISK_FULL = "53100"
_LANDING_ADVICE = (
    "This is landing, not the source: check TIDEMARK_LANDING_URL (or, without it, the embedded "
    "server: `tidemark db status`), that its database and role exist and the role may log in, "
    "then start ingestion again.")
_LOST_SLOT = (
    "The source invalidated this source's replication slot (it held back more WAL than "
    "max_slot_wal_keep_size allows, while ingestion was stopped or behind): the changes since "
    "are gone from the source's WAL. Run `tidemark ingest resync --all --source <name_lower>` "
    "(a new slot and a new snapshot of every table), and raise max_slot_wal_keep_size if "
    "ingestion may stop for that long again.")
_STANDBY_SLOT = (
    "The source is a standby, and its primary removed catalog rows this slot still needed "
    "(the standby's hot_standby_feedback is off, or it was cut off from its primary; before "
    "PostgreSQL 17 this is also what a primary's wal_level lowered below logical does): the "
    "changes since are gone. Run `tidemark ingest resync --all --source <name_lower>` (a new "
    "slot and a new snapshot of every table). To keep it from happening again, set "
    "hot_standby_feedback = on on the standby and give it a physical replication slot on the "
    "primary (primary_slot_name), so the primary keeps those rows while the standby is away "
    "(README, \"A standby as the source\").")
_ADVICE = (
    ("conflicting with recovery", _STANDBY_SLOT),  # PostgreSQL 16 (the error's detail)
    ("rows_removed", _STANDBY_SLOT),               # 17+: 'invalidated due to "rows_removed"'
    ("wal_level_insufficient",
     "The source is a standby whose primary now runs with wal_level below logical, so the "
     "standby invalidated this source's slot. Set wal_level = logical on the primary "
     "(restart), then run `tidemark ingest resync --all --source <name_lower>`."),
    ("logical decoding cannot be used while in recovery",
     "The source URL names a standby: a standby streams logical changes from PostgreSQL 16 "
     "on, and this one is older. Point the source URL at the primary (`tidemark source remove "
     "<name_lower>`, then `tidemark source add` again), or upgrade the standby."),
    ("read-only transaction",
     "That server is read-only (a standby, or default_transaction_read_only): the "
     "publication and the heartbeats are written on the primary. Run `tidemark source add` "
     "again with --admin-url naming the primary; the source URL may stay on a standby "
     "(PostgreSQL 16+)."),
    ("can no longer get changes from replication slot", _LOST_SLOT),  # PostgreSQL 17
    ("can no longer access replication slot", _LOST_SLOT),             # 18+
    ("has been invalidated", _LOST_SLOT),          # 13 to 16 (the error's detail)
    ("invalid byte sequence for encoding",
     "A source row holds text that is not valid in the source database's encoding: a "
     "SQL_ASCII database stores bytes unchecked, and Tidemark reads every source as UTF-8 "
     "(PostgreSQL converts any declared encoding). Fix the rows on the source, or move the "
     "database to the encoding its text is really in (pg_dump, then restore into a database "
     "created with that ENCODING); a change already in the stream stays in the slot: drop the "
     "source (`tidemark source remove <name_lower>`) and add it again to start from a new "
     "snapshot."),
    # the slot holds a change it cannot decode: before PostgreSQL 18 a publication dropped
    # while changes were made is an error in the walsender for each of them, for good
    # (libpq's text: 'publication "x" does not exist\nCONTEXT:  slot "x", output plugin ...')
    ('does not exist\ncontext:  slot',
     "The source's replication slot holds changes it cannot decode (e.g. the publication "
     "was dropped while they were made: PostgreSQL before 18 cannot skip them). Run "
     "`tidemark ingest resync --all --source <name_lower>`: a new slot, and every table "
     "copied again."),
    ("unsupported startup parameter: replication",
     "The source URL goes through a connection pooler (pgbouncer before 1.23 passes no "
     "replication connection). Point the source URL at the PostgreSQL server itself, its own "
     "host and port (`tidemark source remove <name_lower>`, then `tidemark source add` again), "
     "or use pgbouncer 1.23+ (README, \"The network between Tidemark and its databases\")."),
    ("password authentication failed",
     "The source refused the login. Check the user in the registered URL and its password in "
     "TIDEMARK_SOURCE_<NAME>_PASSWORD (or ~/.pgpass / PGPASSWORD)."),
    ("no pg_hba.conf entry",
     "The source's pg_hba.conf does not let this user connect from this machine. Replication "
     "connections are matched by database name: add e.g. `host <db> <user> <net> scram-sha-256` "
     "and reload the server."),
    ("wal_level",
     "Set wal_level = logical in the source's postgresql.conf and restart the server "
     "(see the README, \"Your own database\")."),
    ("was not created in this database",
     "The replication slot of this source belongs to another database of the same server. "
     "Register each database under its own source name, or drop the stray slot there."),
    ("must be superuser or replication role",
     "The source role needs the REPLICATION attribute: alter role <user> replication;"),
    ("permission to use replication slots",
     "The source role needs the REPLICATION attribute: alter role <user> replication;"),
    ("row-level security policy",
     "A row-level security policy applies to the source role, so a copy would miss the rows "
     "it hides (the stream applies none): as a superuser on the source run "
     "`alter role <user> bypassrls;`, or leave the table out of the selection."),
    ("permission denied for database",
     "The source role may not connect to that database: as its owner run "
     "`grant connect on database <database> to <user>;` (README, \"Your own database\")."),
    ("permission denied for schema",
     "The source role may not use that schema: as its owner run "
     "`grant usage on schema <schema> to <user>;` (README, \"Your own database\")."),
    ("permission denied",
     "The source role lacks a right (SELECT on the replicated tables, CONNECT on the database, "
     "USAGE on their schemas); see the README, \"Your own database\", for the grants."),
    ("publication",
     "The source's publication is missing or unusable: run `tidemark source add` again with an "
     "admin URL (it creates the publication), or create it as the tables' owner."),
    ("does not exist",
     "Fix the registered URL (`tidemark source remove <name_lower>`, then `tidemark source add` "
     "again) "
     "or create what is missing on the source."),
    ("could not translate host name",
     "The host name in the registered URL does not resolve: fix the URL."),
    *((marker, "Fix the registered URL (`tidemark source remove <name_lower>`, then "
               "`tidemark source add` again).")
      for marker in ("invalid connection option", "for connection option", "invalid sslmode",
                     "invalid uri", "invalid percent-encoded", "missing \"=\" after")),
    ("max_wal_senders",
     "All WAL senders of the source server are in use: raise max_wal_senders in its "
     "postgresql.conf (restart), or stop a replication client it no longer needs "
     "(`select pid, usename, application_name from pg_stat_replication`). Each Tidemark source "
     "streams through one, and a second one for a moment while a table is added or resynced."),
    ("replication slots are in use",
     "All replication slots of the source are in use: raise max_replication_slots (restart) "
     "or drop unused slots."),
    ("max_replication_slots",
     "All replication slots of the source are in use: raise max_replication_slots (restart) "
     "or drop unused slots."),
)


def _state(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (or its class name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def quiet_pipeline(conn: psycopg.Connection) -> Iterator[psycopg.Pipeline]:
    """``conn.pipeline()``, without psycopg's warning when the connection is lost inside it.

    A pipeline left by an error syncs with the server on its way out; with the session gone
    (a restart, a crash recovery, ``pg_terminate_backend``) that fails too, and psycopg logs
    "error ignored terminating <psycopg.Pipeline [BAD]>: the connection is lost" on top of the
    error the caller already reports and retries. Here the error of the block is raised alone;
    an exit that fails while the connection still stands is logged, as psycopg would.

    Args:
        conn: the connection to switch into pipeline mode.

    Yields:
        The pipeline.
    """
    failed: psycopg.Error | None = None
    try:
        with conn.pipeline() as pipe:
            try:
                yield pipe
            except psycopg.Error as exc:
                # The error can come before libpq sees the socket closed (the server's FATAL
                # read first), so whether the connection is lost is known after the exit only.
                failed = exc
    except psycopg.Error as exit_error:
        if failed is None:
            raise
        if not conn.broken:
            log.warning("error ignored leaving a pipeline after %s: %s", first_line(failed),
                        first_line(exit_error))
    if failed is not None:
        raise failed


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed.

    An error raised while cleaning up after another one (psycopg's ``cannot exit pipeline mode
    while busy`` when the server died in the middle of a pipeline) is judged by the one that
    caused it: a connection lost is retried, whatever the clean-up then said.
    """
    if any(marker in str(exc).lower() for marker, _ in _ADVICE):
        return False  # a cause named with its fix is one, whatever came before
    if isinstance(exc, LandingLocksError):
        return False  # "out of shared memory" again at every retry, named with its setting
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if link is not exc and _is_transient_one(link):
            return True
        link = link.__cause__ or link.__context__
    return _is_transient_one(exc)


def _is_transient_one(exc: BaseException) -> bool:
    text = str(exc).lower()
    state = _state(exc)
    if any(marker in text for marker, _ in _ADVICE):
        return False
    if state is not None:
        if state in _PERMANENT_STATES:
            return False
        if state.startswith(_TRANSIENT_CLASSES):
            return True
    if isinstance(exc, OSError):
        return True
    return state is None and any(marker in text for marker in _TRANSIENT_TEXT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether the server failed for want of disk space (SQLSTATE 53100, or at connection)."""
    text = str(exc).lower()
    return _state(exc) == _DISK_FULL or "could not write init file" in text \
        or "no space left on device" in text


def failed_side(exc: BaseException, landing_dsn: str,
                landing: psycopg.Connection | None = None) -> str:
    """Which server a failure of ingestion came from: ``"landing"`` or ``"source"``.

    A failed connection attempt names its server and database (psycopg's ``pgconn``); a
    statement's error is landing's when landing's session is broken or its transaction failed,
    or when the server is out of disk space (ingestion writes nothing but heartbeats to a
    source). An error of the replication stream (psycopg2) is the source's, disk full too: a
    walsender that cannot spill a large transaction to disk says "No space left on device".

    Args:
        exc: the error.
        landing_dsn: landing's URL.
        landing: the session's landing connection, if it has one.
    """
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and getattr(pgconn, "db", None):
        return "landing" if _same_database(pgconn, landing_dsn) else "source"
    if landing is not None and isinstance(exc, psycopg.Error) and (
            landing.broken or landing.info.transaction_status == TransactionStatus.INERROR):
        return "landing"
    return "landing" if isinstance(exc, psycopg.Error) and is_disk_full(exc) else "source"


def _same_database(pgconn: object, dsn: str) -> bool:
    want = conninfo_to_dict(dsn)
    got = {"dbname": getattr(pgconn, "db", b""), "port": getattr(pgconn, "port", b""),
           "host": getattr(pgconn, "host", b"")}
    for key, value in got.items():
        named = want.get(key)
        if named is not None and str(named) != value.decode(errors="replace"):
            return False
    return True


def retry_reason(exc: BaseException, side: str) -> str:
    """What a retried failure is logged as: the server it came from, and what to do if full."""
    what = first_line(exc)
    if not is_disk_full(exc):
        return f"{'landing ' if side == 'landing' else ''}connection lost ({what})"
    if side == "landing":
        return (f"landing is out of disk space ({what}): free space on landing's server or "
                f"grow its volume. Nothing is lost meanwhile: the source keeps the changes in "
                f"the replication slot (its WAL grows until ingestion catches up)")
    return f"the source is out of disk space ({what}): free space on the source's server"


def ended_stream(exc: BaseException, source_conn: psycopg.Connection | None
                 ) -> SourceStreamEndedError | None:
    """Whether psycopg2's ``exc``, raised reading the replication stream, says the server ended
    the stream; if so, the lost connection to raise instead, with the cause if there is one.

    A walsender ends its COPY without an error when its server shuts down (``pg_ctl stop`` or
    ``restart``): psycopg2's read after that raises libpq's "no COPY in progress", which
    ingestion took for a permanent failure and stopped for good (round 37). The session's
    other connection to the source says why: a fast shutdown has terminated it
    (``terminating connection due to administrator command``).

    Args:
        exc: the error psycopg2's ``read_message`` raised.
        source_conn: the session's (psycopg 3) connection to the source, or None.

    Returns:
        The error to raise (from ``exc``), or None when ``exc`` is another error.
    """
    if "no copy in progress" not in str(exc).lower():
        return None
    said = "the source server ended the replication stream without an error"
    if source_conn is None:
        return SourceStreamEndedError(said)
    try:
        source_conn.execute("select 1")
    except psycopg.Error as probe:
        return SourceStreamEndedError(
            f"the source server ended the replication stream: it shut down or restarted (the "
            f"session's other connection to it says {first_line(probe)!r})")
    return SourceStreamEndedError(f"{said} (the server still answers)")


def permanent(source: str, exc: BaseException, where: str = "source") -> PermanentSourceError:
    """The error to report for a failure that will not go away by retrying."""
    text = str(exc).lower()
    advice = _LANDING_ADVICE if where == "landing" else next(
        (a for marker, a in _ADVICE if marker in text), None)
    if advice is None:
        advice = ("Retrying will not fix this; fix the cause, then start ingestion again "
                  "(`tidemark ingest status` shows where it stands).")
    advice = advice.replace("<NAME>", source.upper()).replace("<name_lower>", source)
    return PermanentSourceError(f"Source {source!r}: {where} error: {first_line(exc)}. {advice}")


def check_source(conn: psycopg.Connection, source: str, slot: str) -> None:
    """Refuse a source that cannot work, before anything is created on it.

    Args:
        conn: a connection to the source database.
        source: the source name.
        slot: the source's replication slot name.

    Raises:
        PermanentSourceError: the server is older than PostgreSQL 12, ``wal_level`` is not
            logical, or the slot of this source exists in another database of the server.
    """
    check_source_version(conn, source)
    level = conn.execute("show wal_level").fetchone()[0]
    if level != "logical":
        raise PermanentSourceError(
            f"Source {source!r}: wal_level is {level!r} on the source server; logical "
            f"replication needs 'logical'. Set wal_level = logical in postgresql.conf and "
            f"restart the server (README, \"Your own database\").")
    row = conn.execute("select database, current_database() from pg_replication_slots"
                       " where slot_name = %s", (slot,)).fetchone()
    if row is not None and row[0] != row[1]:
        raise PermanentSourceError(
            f"Source {source!r}: replication slot {slot!r} exists on this server but in "
            f"database {row[0]!r}, not in {row[1]!r} (the registered database). Another source "
            f"with the same name, or a stray slot? If it is unused, drop it: "
            f"select pg_drop_replication_slot('{slot}');  or register this database under "
            f"another source name.")


_CAPACITY = """
    select current_setting('max_replication_slots')::int, array(select slot_name::text from
        pg_replication_slots order by slot_name), current_setting('max_wal_senders')::int,
        (select count(*) from pg_stat_activity where backend_type = 'walsender')::int,
        exists (select 1 from pg_replication_slots where slot_name = %s)
"""


def check_capacity(conn: psycopg.Connection, source: str, slot: str, held_senders: int = 0
                   ) -> list[str]:
    """Refuse a source whose server has no replication slot or WAL sender left for it.

    A streaming source holds one slot and one WAL sender, and a second of each for a moment
    while a table is added or resynced.

    Args:
        conn: a connection to the source database.
        source: the source name.
        slot: the source's replication slot name.
        held_senders: WAL senders the caller holds already (its replication connection).

    Returns:
        Warnings (only one slot left: tables added later cannot be copied until one is free).

    Raises:
        PermanentSourceError: every slot or every WAL sender is in use.
    """
    max_slots, slots, max_senders, senders, have = conn.execute(_CAPACITY, (slot,)).fetchone()
    free = max_slots - len(slots) + (1 if have else 0)
    if free < 1:
        listed = ", ".join(slots[:10]) + (", ..." if len(slots) > 10 else "")
        raise PermanentSourceError(
            f"Source {source!r}: all {max_slots} replication slots of the source server are in "
            f"use ({listed}), and ingestion needs one. Drop one nobody uses (`select "
            f"pg_drop_replication_slot('<name>');`, as a superuser or its role), or raise "
            f"max_replication_slots in postgresql.conf and restart the server. Nothing was "
            f"created on the source.")
    if senders - held_senders >= max_senders:
        raise PermanentSourceError(
            f"Source {source!r}: all {max_senders} WAL senders of the source server are in use, "
            f"and ingestion streams through one. Raise max_wal_senders in postgresql.conf "
            f"(restart), or stop a replication client nobody needs (view pg_stat_replication "
            f"lists them). Nothing was created on the source.")
    if free < 2:
        return [f"only one replication slot of the source server is free (max_replication_slots"
                f" = {max_slots}): ingestion takes it, and a table created later or resynced "
                f"waits until a second one is free for a moment."]
    return []
