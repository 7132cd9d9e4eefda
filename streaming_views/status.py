"""What is deployed: name, target, status, rows, last change applied, hash
(``tidemark views list``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from streaming_views.catalog import read_catalog
from streaming_views.changes import note_changes
from streaming_views.compiler import LIVE_SCHEMA
from streaming_views.runtime import problem


@dataclass(frozen=True)
class ViewStatus:
    """One deployed view.

    Attributes:
        name: the view (``live.<name>``).
        target: ``embedded`` or ``materialize``.
        rows: rows in the view now (None when it cannot be read).
        last_change_at: when a write last changed the view (embedded engine: sampled from
            the state's statistics, seconds late, :mod:`streaming_views.changes`), else None.
        definition_hash: hash of the deployed file.
        deployed_at: when it was deployed.
        status: ``ok``, or ``broken: <why>`` (the view no longer follows its base tables;
            ``tidemark views deploy`` rebuilds it).
    """

    name: str
    target: str
    rows: int | None
    last_change_at: datetime | None
    definition_hash: str
    deployed_at: datetime
    status: str = "ok"


def list_views(dsn: str) -> list[ViewStatus]:
    """Return the status of every view deployed to the embedded engine at ``dsn``."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        note_changes(conn)  # changed_at is sampled (streaming_views.changes)
        for entry in read_catalog(conn):
            rows = last = None
            status = "ok"
            if entry.target == "embedded":
                broken = problem(conn, entry.name)
                if broken is not None:
                    status = f"broken: {broken}"
                else:
                    rows = conn.execute(sql.SQL("select count(*) from {}").format(
                        sql.Identifier(LIVE_SCHEMA, entry.name))).fetchone()[0]
                row = conn.execute("select changed_at from tidemark.live_changes "
                                   "where name = %s", (entry.name,)).fetchone()
                last = row[0] if row else None
            out.append(ViewStatus(entry.name, entry.target, rows, last, entry.definition_hash,
                                  entry.deployed_at, status))
    return out
