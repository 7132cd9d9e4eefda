"""Names Tidemark derives from a source name: slot, publication, landing schemas and tables."""

from __future__ import annotations

import hashlib
import re

STATE_SCHEMA = "tidemark"
CHANGELOG_SCHEMA = "cdc"
HEARTBEAT_PREFIX = "tidemark_heartbeat"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are cut silently

_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def check_source_name(source: str) -> str:
    """Return ``source`` if it is a valid source name, else raise ``ValueError``.

    A source name becomes part of slot and publication names, which PostgreSQL restricts to
    lower-case letters, digits and underscores.
    """
    if not _SOURCE_RE.fullmatch(source):  # `$` alone lets "shop\n" through
        raise ValueError(f"source name {source!r} must be lower-case letters, digits and '_', "
                         f"start with a letter and have at most 40 characters (e.g. 'shop')")
    return source


def slot_name(source: str) -> str:
    """The logical replication slot of a source: ``tidemark_<source>``."""
    return f"tidemark_{check_source_name(source)}"


def publication_name(source: str) -> str:
    """The publication of a source: ``tidemark_<source>``."""
    return f"tidemark_{check_source_name(source)}"


def fit_identifier(name: str) -> str:
    """``name`` if PostgreSQL keeps it whole (63 bytes), else its first bytes and a hash of the
    whole name: two long names that share their first 63 bytes stay two tables.

    PostgreSQL cuts a longer identifier to 63 bytes without an error, so e.g. the changelogs of
    two 63-character tables of one source would silently be one table.
    """
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:10]
    head = raw[:MAX_IDENTIFIER_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def landing_table_name(namespace: str, table: str) -> str:
    """Name of a source table in landing: the table name, prefixed by its schema unless public
    (:func:`fit_identifier` when that is longer than PostgreSQL keeps)."""
    return table if namespace == "public" else fit_identifier(f"{namespace}__{table}")


def changelog_table_name(source: str, table: str) -> str:
    """Name of a table's changelog in schema ``cdc``: ``<source>__<table>``
    (:func:`fit_identifier` when that is longer than PostgreSQL keeps)."""
    return fit_identifier(f"{source}__{table}")
