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
from streaming_views.holders import holders
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
            ``tidemark views deploy`` rebuilds it), or ``busy: <who holds it>`` (locked past
            the reader's lock wait: a redeploy's swap; its rows are not counted).
    """

    name: str
    target: str
    rows: int | None
    last_change_at: datetime | None
    definition_hash: str
    deployed_at: datetime
    status: str = "ok"


def list_views(dsn: str, lock_wait: str | None = None) -> list[ViewStatus]:
    """Return the status of every view deployed to the embedded engine at ``dsn``.

    Args:
        dsn: the landing database.
        lock_wait: how long to wait for a view's lock (a ``lock_timeout``, e.g. ``500ms``)
            before calling it ``busy`` instead of counting its rows; None: wait as long as
            it takes (a deploy's own count).
    """
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        note_changes(conn)  # changed_at is sampled (streaming_views.changes)
        if lock_wait is not None:
            conn.execute("select set_config('lock_timeout', %s, false)", (lock_wait,))
        for entry in read_catalog(conn):
            rows = last = None
            status = "ok"
            if entry.target == "embedded":
                try:
                    broken = problem(conn, entry.name)
                    if broken is not None:
                        status = f"broken: {broken}"
                    else:
                        rows = conn.execute(sql.SQL("select count(*) from {}").format(
                            sql.Identifier(LIVE_SCHEMA, entry.name))).fetchone()[0]
                except psycopg.errors.LockNotAvailable:
                    status = busy_text(conn, f"{LIVE_SCHEMA}.{entry.name}", "rows are not counted")
                row = conn.execute("select changed_at from tidemark.live_changes "
                                   "where name = %s", (entry.name,)).fetchone()
                last = row[0] if row else None
            out.append(ViewStatus(entry.name, entry.target, rows, last, entry.definition_hash,
                                  entry.deployed_at, status))
    return out


def busy_text(conn: psycopg.Connection, relation: str, not_read: str) -> str:
    """``busy: <relation> is locked by <sessions>; its <not_read>``: what a read of
    ``relation`` that met its ``lock_timeout`` says (the sessions as
    :meth:`~streaming_views.holders.Holder.session` names them)."""
    held = "; ".join(h.session() for h in holders(conn, [relation])) or "another session"
    return f"busy: {relation} is locked by {held}; its {not_read}"
