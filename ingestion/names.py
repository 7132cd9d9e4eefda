"""Names Tidemark derives from a source name: slot, publication, landing schemas and tables."""

from __future__ import annotations

import re

STATE_SCHEMA = "tidemark"
CHANGELOG_SCHEMA = "cdc"
HEARTBEAT_PREFIX = "tidemark_heartbeat"

_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def check_source_name(source: str) -> str:
    """Return ``source`` if it is a valid source name, else raise ``ValueError``.

    A source name becomes part of slot and publication names, which PostgreSQL restricts to
    lower-case letters, digits and underscores.
    """
    if not _SOURCE_RE.match(source):
        raise ValueError(f"source name {source!r} must be lower-case letters, digits and '_', "
                         f"start with a letter and have at most 40 characters (e.g. 'shop')")
    return source


def slot_name(source: str) -> str:
    """The logical replication slot of a source: ``tidemark_<source>``."""
    return f"tidemark_{check_source_name(source)}"


def publication_name(source: str) -> str:
    """The publication of a source: ``tidemark_<source>``."""
    return f"tidemark_{check_source_name(source)}"


def landing_table_name(namespace: str, table: str) -> str:
    """Name of a source table in landing: the table name, prefixed by its schema unless public."""
    return table if namespace == "public" else f"{namespace}__{table}"


def changelog_table_name(source: str, table: str) -> str:
    """Name of a table's changelog in schema ``cdc``: ``<source>__<table>``."""
    return f"{source}__{table}"
