"""What a session is given (its connections and batching) and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.progress import ProgressCallback
from ingestion.publication import Selection
from ingestion.session_settings import pinned_dsn


@dataclass
class SessionStats:
    """What a session did.

    Attributes:
        snapshot_rows: rows read by the initial snapshot (0 if it was done before).
        changes: changes applied from the stream.
        transactions: source transactions applied.
        landing_commits: landing transactions committed.
        skipped: source transactions skipped because landing already had them.
        lsn: the checkpoint LSN at the end.
    """

    snapshot_rows: int = 0
    changes: int = 0
    transactions: int = 0
    landing_commits: int = 0
    skipped: int = 0
    lsn: int = 0


@dataclass
class SessionConfig:
    """How a session connects and batches.

    Attributes:
        source_dsn: source URL used for streaming and catalog reads (REPLICATION + SELECT).
        landing_dsn: landing URL (owner of the landing schemas).
        source: source name.
        setup_dsn: source URL allowed to create the publication (default ``source_dsn``).
        contracts: contract set, or None.
        publication_tables: tables to replicate (``schema.table``), instead of schemas.
        group_rows: close a landing transaction once it holds this many changes.
        group_seconds: ... or once it has been open this long (and whenever the stream has
            nothing more to read).
        schemas: schemas to replicate when no tables are named (default: the registered
            selection of the source, else ``public``).
        on_progress: called with the progress of a snapshot.
        registered: the source's registered selection (read from landing at open).
        stale_walsender: the server process of the previous session's stream, which went
            silent: ended if it still holds the slot (:mod:`ingestion.silence`).
    """

    source_dsn: str
    landing_dsn: str
    source: str
    setup_dsn: str | None = None
    contracts: object = None
    publication_tables: list[str] | None = None
    group_rows: int = 20_000
    group_seconds: float = 0.1
    schemas: list[str] | None = None
    on_progress: ProgressCallback | None = None

    registered: Selection | None = None
    stale_walsender: int | None = None

    def __post_init__(self) -> None:
        self.source_dsn = pinned_dsn(self.source_dsn)
        if self.setup_dsn is not None:
            self.setup_dsn = pinned_dsn(self.setup_dsn)

    @property
    def selection(self) -> Selection:
        """What the source replicates: as given, else as registered, else schema public."""
        if self.schemas is None and self.publication_tables is None and \
                self.registered is not None:
            return self.registered
        return Selection.of(self.schemas, self.publication_tables)
