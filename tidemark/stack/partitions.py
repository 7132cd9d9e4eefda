"""Where the daily partitions start: the first day of data, recorded once per ``TIDEMARK_HOME``.

The Dagster definitions never connect to a database while they load, so ``tidemark up`` finds
the first day of data before it starts Dagster and writes it to
``$TIDEMARK_HOME/partitions_start`` (read by ``Settings.first_partition_day``).
The first day is the earliest UTC day of the ``event_time`` columns (from the contracts, as the
dbt sources carry them) of the source tables the daily marts (``tag:daily``) are built from —
not of every table: a customer who signed up two years ago does not make two years of daily
partitions. ``TIDEMARK_PARTITIONS_START`` overrides it.

A source with no data yet when ``tidemark up`` starts gets the 30-day fallback; while it runs,
:class:`FirstDayWatch` records the first day once data arrives and has the Dagster UI reload
its code location, which reads the start at each load (the daemon reloads by itself every
minute), so the partitions start right without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from tidemark.settings import PARTITIONS_START_FILE, Settings


def first_event_day(source_dsn: str, tables: list[tuple[str, str, str]]) -> date | None:
    """The earliest UTC day of ``(schema, table, event time column)`` over the given tables.

    Tables that do not exist yet are skipped; None when no table holds a row.
    """
    days = []
    with psycopg.connect(source_dsn, autocommit=True, connect_timeout=10) as conn:
        for schema, table, column in tables:
            exists = conn.execute("select to_regclass(%s) is not null", (
                sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
            if not exists:
                continue
            day = conn.execute(sql.SQL(
                "select (min({c}) at time zone 'UTC')::date from {t}").format(
                c=sql.Identifier(column), t=sql.Identifier(schema, table))).fetchone()[0]
            if day is not None:
                days.append(day)
    return min(days) if days else None


def daily_event_times(manifest_path: Path, daily_tag: str = "daily") -> list[tuple[str, str, str]]:
    """``(schema, table, event time column)`` in the source database of the dbt sources the
    daily models are built from (their ``meta.contract.event_time``; source tables live in
    schema ``public`` of the source database)."""
    from tidemark.reconciliation.finality import source_event_time, upstream_sources

    manifest = json.loads(manifest_path.read_text())
    nodes, sources = manifest.get("nodes", {}), manifest.get("sources", {})
    wanted: set[str] = set()
    for uid, node in nodes.items():
        if node.get("resource_type") == "model" and daily_tag in node.get("tags", []):
            wanted |= upstream_sources(manifest, uid)
    out = []
    for uid in sorted(wanted):
        column = source_event_time(sources[uid])
        if column:
            out.append(("public", sources[uid]["name"], column))
    return out


def record_partitions_start(settings: Settings, source_dsn: str, manifest_path: Path
                            ) -> date | None:
    """Write ``$TIDEMARK_HOME/partitions_start`` once, from the first day of data.

    Nothing is written when ``TIDEMARK_PARTITIONS_START`` is set, when the file exists, or when
    the source holds no data yet.

    Returns:
        The first partition day in effect (None: none known yet).
    """
    current = settings.first_partition_day()
    if current is not None:
        return current
    first = first_event_day(source_dsn, daily_event_times(manifest_path))
    if first is not None:
        settings.home.mkdir(parents=True, exist_ok=True)
        (settings.home / PARTITIONS_START_FILE).write_text(first.isoformat() + "\n")
    return first


class FirstDayWatch:
    """Records the first day of data once it arrives, for a ``tidemark up`` that started
    before any (see the module docstring).

    Args:
        settings: the stack settings.
        source_dsn: the source database (the demo's, as :func:`record_partitions_start`).
        on_recorded: called with the day once it is recorded (reload the code location, say
            so).
    """

    def __init__(self, settings: Settings, source_dsn: str,
                 on_recorded: Callable[[date], None]) -> None:
        self.settings, self.source_dsn, self.on_recorded = settings, source_dsn, on_recorded
        self.done = settings.first_partition_day() is not None

    def poll(self) -> date | None:
        """Look once (cheap once done); the day recorded by this call, else None. A source
        that does not answer is asked again at the next poll."""
        if self.done:
            return None
        manifest = self.settings.dbt_target_dir / "manifest.json"
        if not manifest.exists():
            return None
        try:
            first = record_partitions_start(self.settings, self.source_dsn, manifest)
        except (psycopg.Error, OSError, ValueError):  # a manifest being rewritten: next poll
            return None
        if first is None:
            return None
        self.done = True
        self.on_recorded(first)
        return first
