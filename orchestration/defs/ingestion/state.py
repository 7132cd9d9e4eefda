"""Reading where ingestion of each replicated table stands (no Dagster here).

Per table: the last applied LSN (the newest ``_commit_lsn`` in its changelog, the asset's data
version), unreplayed dead letters, pause state, and the *pending* lag: how long the oldest source
change that landing does not have yet has been waiting (from the contract's ``loaded_at``
column, compared between source and the landing mirror). Source-wide figures (lag of the last
applied transaction, WAL bytes behind, rows/s) come from :func:`ingestion.status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class TableSpec:
    """A replicated table as its contract describes it.

    Attributes:
        name: table name (mirror ``<source>.<name>``, source ``public.<name>``).
        loaded_at: column whose newest value tells how fresh the table is, or None.
        warn_after_s: contract freshness: age that warns (seconds).
        error_after_s: contract freshness: age that fails (seconds).
        description: the contract's description.
    """

    name: str
    loaded_at: str | None
    warn_after_s: float
    error_after_s: float
    description: str = ""


@dataclass
class TableState:
    """Where ingestion of one table stands.

    Attributes:
        table: table name.
        lsn: newest applied commit LSN of the table (``X/Y``), or None before any change.
        dead_letters: dead letters of the table not yet replayed.
        paused_reason: why the table is paused, or None.
        pending_s: seconds the oldest not-yet-landed source change has waited (0: none).
        source: source-wide figures from ``ingestion.status`` (lag, bytes, rows/s).
    """

    table: str
    lsn: str | None
    dead_letters: int
    paused_reason: str | None
    pending_s: float | None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def lag_s(self) -> float:
        """The larger of the last transaction's lag and the pending lag."""
        return max(float(self.source.get("lag_seconds") or 0.0), float(self.pending_s or 0.0))

    def metadata(self) -> dict[str, Any]:
        """Observation metadata (JSON-able values only)."""
        return {
            "applied_lsn": self.lsn or "none",
            "lag_seconds": round(self.lag_s, 3),
            "pending_seconds": round(float(self.pending_s or 0.0), 3),
            "lag_bytes": int(self.source.get("lag_bytes") or 0),
            "rows_per_s": float(self.source.get("rows_per_s") or 0.0),
            "dead_letters": self.dead_letters,
            "paused": self.paused_reason is not None,
            **({"paused_reason": self.paused_reason} if self.paused_reason else {}),
        }


@lru_cache(maxsize=4)
def table_specs(source: str = "shop") -> tuple[TableSpec, ...]:
    """The replicated tables of ``source``, one per contract file (no database needed)."""
    from contracts import load_contracts

    return tuple(TableSpec(c.name, c.loaded_at, c.freshness.warn_after.total_seconds(),
                           c.freshness.error_after.total_seconds(), c.description or "")
                 for c in load_contracts().tables(source))


def read_states(source_dsn: str, landing_dsn: str, source: str,
                tables: list[TableSpec]) -> dict[str, TableState]:
    """Read the state of ``tables`` of ``source`` (two short connections, read only).

    Args:
        source_dsn: source URL (SELECT on its tables and ``pg_replication_slots``).
        landing_dsn: landing URL.
        source: source name.
        tables: the tables to read.

    Returns:
        Table name -> its state.
    """
    import ingestion

    overall = ingestion.status(source_dsn, landing_dsn, source)
    paused = {p["table"]: p["reason"] for p in overall.get("paused_tables", [])}
    out: dict[str, TableState] = {}
    newest: dict[str, Any] = {}
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        dead = dict(conn.execute(
            "select table_name, count(*) from tidemark.dead_letters where source = %s and "
            "replayed_at is null group by table_name", (source,)).fetchall())
        for spec in tables:
            lsn = None
            if _exists(conn, "cdc", f"{source}__{spec.name}"):
                lsn = conn.execute(sql.SQL("select max(_commit_lsn)::text from {}").format(
                    sql.Identifier("cdc", f"{source}__{spec.name}"))).fetchone()[0]
            if spec.loaded_at and _exists(conn, source, spec.name):
                newest[spec.name] = conn.execute(sql.SQL("select max({}) from {}").format(
                    sql.Identifier(spec.loaded_at), sql.Identifier(source, spec.name))
                ).fetchone()[0]
            out[spec.name] = TableState(spec.name, lsn, int(dead.get(spec.name, 0)),
                                        paused.get(spec.name), None, overall)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        for spec in tables:
            if not spec.loaded_at or not _exists(conn, "public", spec.name):
                continue
            column = sql.Identifier(spec.loaded_at)
            query = sql.SQL("select coalesce(extract(epoch from clock_timestamp() - min({c})), 0)"
                            " from {t} where {c} > %s or %s::timestamptz is null").format(
                c=column, t=sql.Identifier("public", spec.name))
            landed = newest.get(spec.name)
            out[spec.name].pending_s = max(0.0, float(conn.execute(
                query, (landed, landed)).fetchone()[0]))
    return out


def _exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null",
                        (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
