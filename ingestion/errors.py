"""Errors of the ingestion part.

Every error names what went wrong, where (source, table, LSN) and what to do about it; the CLI
prints the message without a traceback.
"""

from __future__ import annotations


class IngestionError(Exception):
    """Base class of the errors the ingestion part reports to a person."""


class DecodeError(IngestionError):
    """A pgoutput message could not be decoded (unknown kind, truncated data)."""


class SetupError(IngestionError):
    """The publication or replication slot cannot be created or used."""


class SlotMissingError(SetupError):
    """Landing has a checkpoint for a source whose replication slot no longer exists."""


class SourceReplacedError(SetupError):
    """The source database was replaced (re-created, restored into a new server) and a slot of
    the source's name made there since: it holds none of the changes in between."""


class LandingRestoredError(SetupError):
    """Landing was restored from an older backup: the slot is past its checkpoint, changes are
    missing."""


class SourceBehindError(SetupError):
    """The source's WAL is behind the landing checkpoint: restored from a backup."""


class IngestionRunningError(SetupError):
    """Another process is ingesting the same source into the same landing database."""


class TableNotFoundError(IngestionError):
    """A table named on the command line is not replicated for this source."""


class DeadLetterNotFoundError(IngestionError):
    """A dead letter id does not exist."""


class CatchUpTimeoutError(IngestionError):
    """``catch_up`` did not reach the source's WAL position in time."""


class TablesChangedError(IngestionError):
    """A resync changed the landing tables while a batch was in flight: restart the session."""


class ResyncBlockedError(IngestionError):
    """A resync cannot reshape a mirror table because other objects depend on its columns."""


class SourceError(IngestionError):
    """A source registration is unusable (unknown name, a URL with a password, bad selection)."""


class UnknownSourceError(SourceError):
    """A source name is not registered; the message lists the registered ones."""


class PermanentSourceError(IngestionError):
    """A failure retrying cannot fix: wrong password, database or slot elsewhere, wal_level.

    Ingestion reports it once, with what to do, and stops that source (exit code non-zero).
    """


class SourceStreamEndedError(ConnectionError):
    """The source server ended the replication stream without an error (the walsender ends its
    COPY when the server shuts down: a restart for maintenance). A lost connection, not a
    person's problem: ``run`` logs it and reconnects (a ``ConnectionError``, so
    :func:`ingestion.failures.is_transient` holds)."""


class AdminUnreachableError(ConnectionError):
    """The admin URL's server cannot be reached while the stream's server is a primary: after a
    failover that promoted a standby source, the message says how to register it again. Retried
    (a ``ConnectionError``): the admin server may only be restarting."""


class SourceBusyError(SourceError):
    """A source cannot be removed while ingestion streams from its slot."""


class StateUpgradeError(IngestionError):
    """The landing's state (schema ``tidemark``) is older than this Tidemark, or missing, and
    the role connected may not upgrade or create it."""


class ReservedColumnError(IngestionError):
    """Landing cannot hold a source table's columns: one has the name of a column landing adds
    (``_op``, ``_lsn``, ...), or there are more than landing's tables can take with its own."""


class SnapshotRewrittenError(TablesChangedError):
    """A source table was rewritten (``ALTER TABLE`` that rewrites, ``TRUNCATE``, ``VACUUM
    FULL``) after a snapshot was exported: to that snapshot it looks empty, so it cannot be
    copied from it. A new snapshot is taken (a streaming session starts again from its
    checkpoint, as after a resync; a resync takes a new one itself)."""


class LandingLocksError(SetupError):
    """Landing's lock table cannot hold a snapshot's landing transaction (``out of shared
    memory``): the message names the ``max_locks_per_transaction`` to set. Not retried."""


class StreamSilentError(ConnectionError):
    """The replication stream's connection went silent without closing (a NAT or firewall
    idle timeout, a cable pulled: no FIN or RST): nothing came back from the source within
    ``TIDEMARK_STREAM_SILENCE_S``, not even the answer to a keepalive asking for one. A lost
    connection (a ``ConnectionError``): ``run`` logs it and reconnects, and the next session
    ends the stale walsender that still holds the slot (:mod:`ingestion.silence`).

    Attributes:
        walsender_pid: the source server process of the silent stream.
    """

    def __init__(self, message: str, walsender_pid: int | None) -> None:
        super().__init__(message)
        self.walsender_pid = walsender_pid
