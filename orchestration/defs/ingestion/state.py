"""Where ingestion of each replicated table stands, as the ingestion assets and checks show it.

The figures come from the ingestion part (``ingestion.status.status`` for the source,
``ingestion.status.table_status`` per table: applied LSN, dead letters, pause, pending lag);
this module only reads the contracts (which tables, their ``loaded_at``) and shapes the figures
into Dagster metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class TableSpec:
    """A replicated table as its contract describes it.

    Attributes:
        source: the source's name (mirror schema, asset key prefix).
        name: table name (mirror ``<source>.<name>``, source ``public.<name>``).
        loaded_at: column whose newest value tells how fresh the table is, or None.
        warn_after_s: contract freshness: age that warns (seconds).
        error_after_s: contract freshness: age that fails (seconds).
        description: the contract's description.
        event_time: the contract's event-time column (the table has a watermark), or None.
    """

    source: str
    name: str
    loaded_at: str | None
    warn_after_s: float
    error_after_s: float
    description: str = ""
    event_time: str | None = None


@dataclass
class TableState:
    """Where ingestion of one table stands.

    Attributes:
        source: the source's name.
        table: table name.
        lsn: newest applied commit LSN of the table (``X/Y``), or None before any change.
        dead_letters: dead letters of the table not yet replayed.
        paused_reason: why the table is paused, or None.
        pending_s: seconds the oldest not-yet-landed source change has waited (0: none).
        overall: source-wide figures from ``ingestion.status`` (lag, bytes, rows/s).
        watermark: the table's watermark row (``ingestion.watermarks.read_watermarks``), or
            None for a table without an event-time column.
        resyncing: the pause is an automatic resync (Tidemark copies the table again by
            itself; nobody needs to act).
        busy: why the table's figures were not read (``busy: ...``: a landing transaction or
            a source session held it past ``ingestion.status.READ_LOCK_WAIT``), or None.
    """

    source: str
    table: str
    lsn: str | None
    dead_letters: int
    paused_reason: str | None
    pending_s: float | None
    overall: dict[str, Any] = field(default_factory=dict)
    watermark: dict[str, Any] | None = None
    resyncing: bool = False
    busy: str | None = None

    @property
    def lag_s(self) -> float:
        """The larger of the last transaction's lag and the pending lag."""
        return max(float(self.overall.get("lag_seconds") or 0.0), float(self.pending_s or 0.0))

    def metadata(self) -> dict[str, Any]:
        """Observation metadata (JSON-able values only)."""
        return {
            "applied_lsn": self.lsn or "none",
            "lag_seconds": round(self.lag_s, 3),
            "pending_seconds": round(float(self.pending_s or 0.0), 3),
            "lag_bytes": int(self.overall.get("lag_bytes") or 0),
            "rows_per_s": float(self.overall.get("rows_per_s") or 0.0),
            "dead_letters": self.dead_letters,
            "paused": self.paused_reason is not None,
            **({"paused_reason": self.paused_reason} if self.paused_reason else {}),
            **({"busy": self.busy} if self.busy else {}),
            **self._watermark_metadata(),
        }

    def _watermark_metadata(self) -> dict[str, Any]:
        """Watermark (epoch seconds: a number, so the UI plots it), its delay, late rows."""
        w = self.watermark
        if not w or w.get("watermark") is None:
            return {}
        return {"watermark": w["watermark"].isoformat(),
                "watermark_epoch_s": round(w["watermark"].timestamp(), 1),
                "watermark_delay_s": float(w["delay_s"]),
                "watermark_state": w["state"],
                "late_rows": int(w["late_rows"])}


@lru_cache(maxsize=1)
def table_specs() -> tuple[TableSpec, ...]:
    """Every replicated table of every source, one per contract file (no database needed).

    A contract file that does not load (a user editing it) still gives its table, with the
    error as its description and no freshness: the definitions load, so the UI, the daemon's
    sensors and the runs in flight go on, as ingestion does with its previous contracts.
    """
    from contracts import load_table_contracts

    loaded, broken = load_table_contracts()
    specs = [TableSpec(c.source, c.name, c.loaded_at, c.freshness.warn_after.total_seconds(),
                       c.freshness.error_after.total_seconds(), c.description or "",
                       c.event_time) for c in loaded]
    specs += [TableSpec(source, name, None, 3600.0, 86400.0,
                        f"Its contract does not load, fix it: {error}.", None)
              for (source, name), error in broken.items()]
    return tuple(sorted(specs, key=lambda t: (t.source, t.name)))


def source_urls(tidemark: Any, source: str) -> tuple[str, str, list[str] | None]:
    """(replication URL, setup URL, schemas) of a source: its registration (``tidemark source
    add``); for the demo source "shop" not registered (a stack that did not register it), the
    stack's own source database.

    Raises:
        UnknownSourceError: ``source`` is neither registered nor the demo source. Never the
            demo database under another name: that would create a slot there nobody reads
            (contracts left behind by ``tidemark source remove``).
    """
    from ingestion.errors import UnknownSourceError
    from ingestion.sources import get_source
    from tidemark.demo.source import DEMO_SOURCE

    urls = tidemark.urls()
    try:
        spec = get_source(urls.landing_app, source)
    except UnknownSourceError:
        if source != DEMO_SOURCE:
            raise
        return urls.source_ingest, urls.source, None
    return spec.dsn(), spec.admin_dsn(), list(spec.schemas or []) or None


def ingestible_sources(tidemark: Any, with_contracts: list[str]) -> tuple[list[str], list[str]]:
    """Split the sources that have contracts into (registered or the demo source, the others).

    Args:
        tidemark: the resource (its landing URL holds the registrations).
        with_contracts: the sources that have contracts.

    Returns:
        (the sources ingestion may catch up, those whose contracts have no registration).
    """
    from ingestion.sources import list_sources
    from tidemark.demo.source import DEMO_SOURCE

    known = {s.name for s in list_sources(tidemark.urls().landing_app)} | {DEMO_SOURCE}
    return ([s for s in with_contracts if s in known],
            [s for s in with_contracts if s not in known])


def read_states(source_dsn: str, landing_dsn: str, source: str,
                tables: list[TableSpec], measure_after_s: float | None = None
                ) -> dict[str, TableState]:
    """Read the state of ``tables`` of ``source`` (``ingestion.status``, read only).

    Args:
        source_dsn: source URL (SELECT on its tables and ``pg_replication_slots``).
        landing_dsn: landing URL.
        source: source name.
        tables: the tables to read.
        measure_after_s: measure how long source changes have waited only when the last
            landed source commit is at least this old (``ingestion.status.table_status``).

    Returns:
        Table name -> its state.
    """
    from ingestion.status import status, table_status
    from ingestion.watermarks import watermark_status

    overall = status(source_dsn, landing_dsn, source)
    per_table = table_status(source_dsn, landing_dsn, source,
                             [(t.name, t.loaded_at) for t in tables], measure_after_s)
    marks = {w["table"]: w for w in watermark_status(landing_dsn, source)}
    return {name: TableState(source, name, t["lsn"], t["dead_letters"], t["paused_reason"],
                             t["pending_s"], overall, marks.get(name),
                             resyncing=bool(t["resyncing"]), busy=t["busy"])
            for name, t in per_table.items()}
