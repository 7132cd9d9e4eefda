"""The sources' layers of ``tidemark status``: ingestion of the demo's source (when it is there)
and of each registered source, the WAL their slots retain, the watermarks of their tables.

A user with only their own database (README, "Your own database") never registered the demo's
source ``shop``: it is shown only when registered, or when landing holds a checkpoint or its
server a slot of it (:func:`demo_layer`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tidemark.settings import Settings
from tidemark.stack.databases import Databases, ensure_databases, locate_databases

SOURCE = "shop"


def reader_databases(settings: Settings) -> Databases:
    """The stack's databases for a command that only reads (``ingest status``, ``dlq list``).

    :func:`tidemark.stack.databases.ensure_databases` also re-runs the embedded server's
    bootstrap: its ``GRANT ... on all tables in schema cdc`` rewrites the catalog row of every
    changelog, so it waits for any landing transaction that altered one — a schema change
    ingestion follows holds its transaction for its whole backfill (82 s at 10 M rows), and the
    GRANT then fails with "tuple concurrently updated". A reader needs none of it once the
    embedded server runs: only a server not running yet (or not bootstrapped, or not the
    embedded one) goes through ``ensure_databases``.

    Args:
        settings: the stack's settings.
    """
    dbs = locate_databases(settings)
    if dbs.server is None or not dbs.server.is_running():
        return ensure_databases(settings)
    try:
        with psycopg.connect(dbs.landing_app, connect_timeout=5):
            return dbs
    except psycopg.OperationalError:  # no landing database or role yet: bootstrap it
        return ensure_databases(settings)


def ingestion_layer(dbs: Databases, source: str = SOURCE,
                    source_dsn: str | None = None) -> dict[str, Any]:
    """Lag, rate, dead letters, paused tables, snapshot progress and the lock the stream waits
    for (``ingestion.status``) of ``source`` (the demo's by default), read through
    ``source_dsn`` (default the demo's)."""
    import ingestion

    s = ingestion.status(source_dsn or dbs.source, dbs.landing, source)
    keep = ("source", "slot_exists", "slot_active", "checkpoint_lsn", "lag_seconds", "lag_bytes",
            "seconds_since_last_apply", "rows_per_s", "dead_letters", "duplicate_events",
            "paused_tables", "lock_wait", "busy")
    return {k: v for k, v in s.items() if k in keep or k.startswith("snapshot")}


def demo_layer(dbs: Databases) -> dict[str, Any] | None:
    """:func:`ingestion_layer` of the demo's source, or None when the demo is not there: not
    registered (``tidemark up`` and ``tidemark demo`` register it), and neither a checkpoint
    nor a replication slot of it — a user with only their own database never ran it."""
    from ingestion.sources import list_sources

    if SOURCE in {spec.name for spec in list_sources(dbs.landing)}:
        return ingestion_layer(dbs)
    try:
        layer = ingestion_layer(dbs)
    except (psycopg.Error, OSError):
        return None  # no demo database either
    if layer.get("checkpoint_lsn") is None and not layer.get("slot_exists"):
        return None
    return layer


def wal_layer(dbs: Databases, min_bytes: int, with_demo: bool = True) -> list[dict[str, Any]]:
    """Replication slots retaining at least ``min_bytes`` of WAL, on the server of each source
    (the demo's if ``with_demo``, and the registered ones; a server shared by several is read
    once)."""
    from psycopg.conninfo import conninfo_to_dict

    from ingestion.session_settings import pinned_dsn
    from ingestion.sources import list_sources
    from ingestion.status import slots_retaining

    servers = {SOURCE: dbs.source} if with_demo else {}
    for spec in list_sources(dbs.landing):
        servers.setdefault(spec.name, pinned_dsn(spec.dsn()))
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for name, dsn in servers.items():
        info = conninfo_to_dict(dsn)
        server = (info.get("host"), info.get("port"))
        if server in seen:
            continue
        seen.add(server)
        out.extend({"source": name, **row} for row in slots_retaining(dsn, min_bytes))
    return out


def wal_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """What to tell a person about each slot of :func:`wal_layer` (name, size, the fix)."""
    out = []
    for row in rows:
        size = row["retained_wal_bytes"] / 1024**3
        state = "active" if row["active"] else "inactive: nobody reads it"
        out.append(
            f"replication slot {row['slot']} (database {row['database']}, on the server of "
            f"source {row['source']}) retains {size:.1f} GB of WAL ({state}). If it is "
            f"Tidemark's (tidemark_<source>), start ingestion (`tidemark ingest run`) or remove "
            f"a source you no longer use (`tidemark source remove NAME`); a slot nobody uses: "
            f"select pg_drop_replication_slot('{row['slot']}'); cap the worst case with "
            f"max_slot_wal_keep_size (README, \"What grows with history\").")
    return out


def sources_layer(dbs: Databases) -> list[dict[str, Any]]:
    """The registered sources other than the demo's, each as :func:`ingestion_layer` reads it
    (with ``problem``: the last error of a source whose stream is not running), or with
    ``error`` when it cannot be read."""
    from ingestion.errors import IngestionError
    from ingestion.failures import first_line
    from ingestion.session_settings import pinned_dsn
    from ingestion.sources import list_sources

    out: list[dict[str, Any]] = []
    for spec in list_sources(dbs.landing):
        if spec.name == SOURCE:
            continue
        try:
            item = ingestion_layer(dbs, spec.name, pinned_dsn(spec.dsn()))
        except (psycopg.Error, OSError, IngestionError) as exc:
            item = {"source": spec.name, "error": spec.last_error or first_line(exc)}
        if spec.last_error and "error" not in item and not item["slot_active"]:
            item["problem"] = spec.last_error
        out.append(item)
    return out


def watermarks_layer(dbs: Databases, source: str | None = None, with_demo: bool = True
                     ) -> list[dict[str, Any]]:
    """Per event-time table: watermark, delay and its state, late rows
    (``ingestion.watermarks``), of ``source``, else of each source (the demo's if ``with_demo``,
    and the registered ones; a table of a source other than the demo's is then named
    ``<source>.<table>``)."""
    from contracts import load_contracts
    from ingestion.sources import list_sources
    from ingestion.watermarks import watermark_status

    contracts = load_contracts()
    if source is not None:
        sources = [source]
    else:
        sources = [SOURCE] if with_demo else []
        sources += [spec.name for spec in list_sources(dbs.landing) if spec.name != SOURCE]
    out = []
    for source in sources:
        rows = watermark_status(dbs.landing, source, contracts)
        for row in rows:
            for key in ("watermark", "max_event_at"):
                if row[key] is not None:
                    row[key] = utc_text(row[key], "%Y-%m-%d %H:%M:%S")
            if len(sources) > 1 and source != SOURCE:
                row["table"] = f"{source}.{row['table']}"
        out.extend(rows)
    return out


def utc_text(moment: Any, fmt: str) -> str:
    """A ``timestamptz`` value as UTC text (the tables that show it say "UTC" in their title):
    the platform's days are UTC days, whatever the reader's time zone."""
    from datetime import UTC

    return (moment.astimezone(UTC) if moment.tzinfo is not None else moment).strftime(fmt)
