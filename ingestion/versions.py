"""What each PostgreSQL major version offers ingestion: one place for every version check.

Sources run PostgreSQL 12 to 18; landing runs 15 to 18. Code that depends on a version asks
:func:`source_capabilities` (or :func:`landing_capabilities`) rather than comparing version
numbers itself, so the rules below are the only ones:

==========================================  =====  =====================================
feature                                     from   used by Tidemark
==========================================  =====  =====================================
pgoutput ``proto_version`` 1                10     always (the decoder reads version 1)
pgoutput ``proto_version`` 2, ``streaming`` 14     no (large transactions arrive whole)
pgoutput ``messages`` (logical messages)    14     heartbeats through the slot when present
pgoutput ``binary``                         14     not yet (text values); asked for via here
pgoutput ``proto_version`` 3, ``two_phase`` 15     no (prepared transactions at COMMIT
                                                   PREPARED, like any commit)
pgoutput ``proto_version`` 4 (parallel)     16     no
pgoutput ``origin``                         16     no (every origin is replicated)
``CREATE_REPLICATION_SLOT ... (SNAPSHOT)``  15     ``EXPORT_SNAPSHOT`` before 15
``FOR TABLES IN SCHEMA`` publications       15     read (an existing one is respected)
row filters, column lists in publications   15     no (whole rows of listed tables)
``pg_logical_emit_message``                 9.6    heartbeats (on 12/13 the heartbeat's
                                                   empty transaction still moves the slot)
``MERGE`` on landing                        15     landing needs 15
``publish_generated_columns = stored``      18     yes: stored generated columns land;
                                                   before 18 they are not replicated
``publish_via_partition_root``              13     yes: a partitioned table lands as one
                                                   table (its root); on 12 as its partitions
==========================================  =====  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ingestion.errors import PermanentSourceError

MIN_SOURCE = 120000  # oldest source server_version_num supported
MIN_LANDING = 150000  # oldest landing server_version_num supported (MERGE)
TESTED_SOURCES = (12, 13, 14, 15, 16, 17, 18)  # majors tested as sources (README matrix)


@dataclass(frozen=True)
class SourceCapabilities:
    """The logical replication features of one source server.

    Attributes:
        version_num: ``server_version_num`` (e.g. 150018).
        version: ``server_version`` as the server shows it (e.g. "15.18").
    """

    version_num: int
    version: str = ""

    @property
    def major(self) -> int:
        """The major version (12 ... 18)."""
        return self.version_num // 10000

    @property
    def max_proto_version(self) -> int:
        """Highest pgoutput ``proto_version`` the server accepts (1 on 12/13, 4 on 16+)."""
        return {12: 1, 13: 1, 14: 2, 15: 3}.get(self.major, 4 if self.major >= 16 else 1)

    @property
    def messages(self) -> bool:
        """pgoutput forwards logical decoding messages (option ``messages``, 14+)."""
        return self.major >= 14

    @property
    def binary(self) -> bool:
        """pgoutput can send values in binary (option ``binary``, 14+)."""
        return self.major >= 14

    @property
    def streaming(self) -> bool:
        """pgoutput can stream in-progress transactions (option ``streaming``, 14+)."""
        return self.major >= 14

    @property
    def two_phase(self) -> bool:
        """pgoutput can decode prepared transactions at PREPARE (option ``two_phase``, 15+)."""
        return self.major >= 15

    @property
    def origin(self) -> bool:
        """pgoutput can filter by replication origin (option ``origin``, 16+)."""
        return self.major >= 16

    @property
    def schema_publications(self) -> bool:
        """Publications ``FOR TABLES IN SCHEMA`` (catalog ``pg_publication_namespace``, 15+)."""
        return self.major >= 15

    @property
    def row_filters(self) -> bool:
        """Publication row filters and column lists (15+)."""
        return self.major >= 15

    @property
    def partition_root(self) -> bool:
        """Publications can list a partitioned table and send its partitions' changes as the
        root's (``publish_via_partition_root``, 13+); on 12 only the partitions are published."""
        return self.major >= 13

    @property
    def generated_columns(self) -> bool:
        """Publications can send stored generated columns (``publish_generated_columns``, 18+);
        before, pgoutput never sends them, so Tidemark does not replicate them."""
        return self.major >= 18

    @property
    def export_snapshot(self) -> str:
        """The ``CREATE_REPLICATION_SLOT`` option exporting the snapshot (15+: option list)."""
        return "(SNAPSHOT 'export')" if self.major >= 15 else "EXPORT_SNAPSHOT"

    def stream_options(self, publication: str, *, binary: bool = False) -> dict[str, str]:
        """The options of ``START_REPLICATION`` for pgoutput on this server.

        Args:
            publication: the publication name.
            binary: ask for binary values (only where :attr:`binary` holds).

        Raises:
            PermanentSourceError: ``binary`` was asked for on a server older than 14.
        """
        options = {"proto_version": "1", "publication_names": publication}
        if self.messages:
            options["messages"] = "true"
        if binary:
            if not self.binary:
                raise PermanentSourceError(
                    f"pgoutput binary mode needs PostgreSQL 14 or later; the source runs "
                    f"{self.version or self.major}. Use text mode on this source.")
            options["binary"] = "true"
        return options


def source_capabilities(conn: psycopg.Connection) -> SourceCapabilities:
    """The capabilities of the server ``conn`` is connected to (no query is sent)."""
    version_num = conn.info.server_version
    return SourceCapabilities(version_num, _version_text(version_num))


def check_source_version(conn: psycopg.Connection, source: str) -> SourceCapabilities:
    """Refuse a source server older than PostgreSQL 12; return its capabilities.

    Raises:
        PermanentSourceError: the server is older than :data:`MIN_SOURCE`.
    """
    caps = source_capabilities(conn)
    if caps.version_num < MIN_SOURCE:
        raise PermanentSourceError(
            f"Source {source!r} runs PostgreSQL {caps.version}; Tidemark reads sources from "
            f"PostgreSQL 12 to 18 (README, \"Supported PostgreSQL versions\"). Upgrade the "
            f"source server.")
    return caps


def check_landing_version(conn: psycopg.Connection) -> int:
    """Refuse a landing server older than PostgreSQL 15; return its ``server_version_num``.

    Raises:
        PermanentSourceError: the landing server is older than :data:`MIN_LANDING`.
    """
    version_num = conn.info.server_version
    if version_num < MIN_LANDING:
        raise PermanentSourceError(
            f"The landing database runs PostgreSQL {_version_text(version_num)}; Tidemark "
            f"lands data on PostgreSQL 15 to 18 (it applies changes with MERGE). Point "
            f"TIDEMARK_LANDING_URL at a newer server (README, \"Supported PostgreSQL versions\").")
    return version_num


def _version_text(version_num: int) -> str:
    """``150018`` -> ``"15.18"``."""
    return f"{version_num // 10000}.{version_num % 10000}"
