"""When a mart's day is final: closed when the watermarks of every table the mart reads passed
the day's end (UTC).

Which tables a mart reads comes from dbt's manifest (the mart's lineage down to its sources; the
sources carry their contract's ``event_time`` in ``meta.contract``); the watermarks come from
landing (:mod:`ingestion.watermarks`). A day D is closed when ``D + 1 00:00 UTC <= watermark``
for every such table, so the last closed day is ``min(watermark::date) − 1``. A mart that reads
no event-time table closes its day at midnight UTC (nothing in it may arrive late).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

MartTables = dict[str, list[tuple[str, str]]]
"""Mart name -> the ``(source, table)`` pairs with an event-time column it reads."""


def upstream_sources(manifest: dict[str, Any], uid: str) -> set[str]:
    """The unique ids of the dbt sources node ``uid`` is built from (its whole lineage)."""
    nodes, sources = manifest.get("nodes", {}), manifest.get("sources", {})
    found: set[str] = set()
    stack, seen = [uid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in sources:
            found.add(current)
        else:
            stack.extend(nodes.get(current, {}).get("depends_on", {}).get("nodes", []))
    return found


def source_event_time(source: dict[str, Any]) -> str | None:
    """The contract's ``event_time`` column a dbt source carries in ``meta.contract``."""
    meta = source.get("meta") or source.get("config", {}).get("meta") or {}
    return (meta.get("contract") or {}).get("event_time")


def mart_event_tables(manifest_path: Path, daily_tag: str = "daily") -> MartTables:
    """The event-time source tables each daily mart (``tag:daily``) is built from.

    Args:
        manifest_path: dbt's ``manifest.json``.
        daily_tag: the tag of the daily marts.
    """
    manifest = json.loads(manifest_path.read_text())
    sources = manifest.get("sources", {})
    out: MartTables = {}
    for uid, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model" or daily_tag not in node.get("tags", []):
            continue
        out[node["name"]] = sorted(
            (sources[s]["source_name"], sources[s]["name"])
            for s in upstream_sources(manifest, uid) if source_event_time(sources[s]))
    return out


@dataclass(frozen=True)
class Finality:
    """Where a mart's days stand.

    Attributes:
        mart: the mart.
        closed_through: the last closed day (None: no day closed yet).
        blocking: the table whose watermark is lowest (what holds the next day open), or None.
        watermark: that table's watermark.
    """

    mart: str
    closed_through: date | None
    blocking: str | None
    watermark: datetime | None

    def is_closed(self, day: date) -> bool:
        """Whether ``day`` is closed."""
        return self.closed_through is not None and day <= self.closed_through


def finality(marts: MartTables, watermarks: dict[tuple[str, str], datetime | None],
             now: datetime | None = None) -> dict[str, Finality]:
    """The last closed day of every mart from the watermarks of the tables it reads.

    Args:
        marts: :func:`mart_event_tables`.
        watermarks: ``(source, table)`` -> watermark (None or missing: no watermark yet).
        now: the current time (a mart without event-time tables closes at midnight UTC).
    """
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    out = {}
    for mart, tables in marts.items():
        if not tables:
            out[mart] = Finality(mart, today - timedelta(days=1), None, None)
            continue
        marks = [(watermarks.get(t), f"{t[0]}.{t[1]}") for t in tables]
        if any(w is None for w, _ in marks):
            missing = next(name for w, name in marks if w is None)
            out[mart] = Finality(mart, None, missing, None)
            continue
        low, name = min(marks)
        out[mart] = Finality(mart, low.astimezone(UTC).date() - timedelta(days=1), name, low)
    return out


def read_finality(landing_dsn: str, manifest_path: Path, contracts: Any = None
                  ) -> dict[str, Finality]:
    """:func:`finality` of every daily mart, from the manifest and landing's watermarks."""
    from ingestion.watermarks import watermark_status

    marts = mart_event_tables(manifest_path)
    marks: dict[tuple[str, str], datetime | None] = {}
    for source in sorted({s for tables in marts.values() for s, _ in tables}):
        for row in watermark_status(landing_dsn, source, contracts):
            marks[(source, row["table"])] = row["watermark"]
    return finality(marts, marks)
