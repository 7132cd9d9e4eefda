"""``tidemark status``: one look at every layer — ingestion, live views, batch, checks, Dagster.

Starts nothing: it reads the databases where the settings say they are and, when ``tidemark up``
has run, the Dagster instance under ``$TIDEMARK_HOME/dagster``. A layer that cannot be read is
reported with the reason instead of failing the whole command.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.settings import load_settings
from tidemark.stack.databases import Databases, locate_databases

BATCH_JOBS = ("nightly_batch", "daily_marts", "reconciliation")


def _guard(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (psycopg.Error, OSError) as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return {"error": message}


def ingestion_layer(dbs: Databases, source: str = "shop") -> dict[str, Any]:
    """Lag, rate, dead letters and paused tables of the source (``ingestion.status``)."""
    import ingestion

    s = ingestion.status(dbs.source, dbs.landing, source)
    return {k: s.get(k) for k in ("source", "slot_active", "checkpoint_lsn", "lag_seconds",
                                  "lag_bytes", "seconds_since_last_apply", "rows_per_s",
                                  "dead_letters", "duplicate_events", "paused_tables")}


def views_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Deployed live views (``streaming_views.list_views``)."""
    from streaming_views.status import list_views

    return [{"name": v.name, "target": v.target, "rows": v.rows,
             "last_change_at": v.last_change_at, "deployed_at": v.deployed_at}
            for v in list_views(dbs.landing)]


def batch_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Per daily mart (``marts.fct_daily_*``): its day column, latest day and days built."""
    out = []
    with psycopg.connect(dbs.landing, autocommit=True) as conn:
        marts = conn.execute(
            "select c.relname, (select a.attname from pg_attribute a where a.attrelid = c.oid"
            " and a.atttypid = 'date'::regtype and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum limit 1) from pg_class c join pg_namespace n on"
            " n.oid = c.relnamespace where n.nspname = 'marts' and c.relkind = 'r'"
            " and c.relname like 'fct\\_daily\\_%' order by 1").fetchall()
        for name, day_column in marts:
            if day_column is None:
                continue
            latest, days = conn.execute(sql.SQL(
                "select max({d}), count(distinct {d}) from {t}").format(
                d=sql.Identifier(day_column), t=sql.Identifier("marts", name))).fetchone()
            out.append({"mart": name, "day_column": day_column, "latest_day": latest,
                        "days": days})
    return out


def checks_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Reconciliation per pair from ``tidemark.reconciled_days``."""
    with psycopg.connect(dbs.landing, autocommit=True) as conn:
        if conn.execute("select to_regclass('tidemark.reconciled_days')").fetchone()[0] is None:
            return []
        rows = conn.execute(
            "select pair, mart, count(*) filter (where status = 'reconciled'),"
            " coalesce(array_agg(day order by day) filter (where status = 'drift'), '{}'),"
            " max(checked_at), max(day) filter (where status = 'reconciled')"
            " from tidemark.reconciled_days group by pair, mart order by pair").fetchall()
    return [{"pair": r[0], "mart": r[1], "reconciled_days": r[2], "drifting_days": list(r[3]),
             "last_checked_at": r[4], "latest_reconciled_day": r[5]} for r in rows]


def dagster_layer(home: Path) -> dict[str, Any]:
    """Latest runs of the batch and reconciliation jobs in the Dagster instance at ``home``."""
    if not (home / "dagster.yaml").exists():
        return {"error": f"no Dagster instance at {home} (started by `tidemark up`)"}
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        jobs = {}
        for job in BATCH_JOBS:
            runs = instance.get_runs(filters=RunsFilter(job_name=job), limit=1)
            if runs:
                run = runs[0]
                record = instance.get_run_record_by_id(run.run_id)
                jobs[job] = {"status": run.status.value, "run_id": run.run_id,
                             "partition_range": [run.tags.get("dagster/asset_partition_range_"
                                                              "start"),
                                                 run.tags.get("dagster/asset_partition_range_"
                                                              "end")],
                             "started_at": datetime.fromtimestamp(record.start_time, UTC)
                             if record and record.start_time else None}
        return {"home": str(home), "latest_runs": jobs}


def collect(dbs: Databases, dagster_home: Path | None) -> dict[str, Any]:
    """Every layer's summary (a layer that cannot be read carries ``error``)."""
    return {
        "ingestion": _guard(ingestion_layer, dbs),
        "live_views": _guard(views_layer, dbs),
        "batch": _guard(batch_layer, dbs),
        "reconciliation": _guard(checks_layer, dbs),
        "dagster": dagster_layer(dagster_home) if dagster_home is not None else None,
    }


def _show(summary: dict[str, Any]) -> None:
    ing = summary["ingestion"]
    if "error" in ing:
        console.print(f"[red]ingestion:[/] {ing['error']}")
    else:
        emit_table("ingestion", ["source", "streaming", "lag s", "lag bytes", "rows/s",
                                 "dead letters", "paused"],
                   [(ing["source"], ing["slot_active"], ing["lag_seconds"], ing["lag_bytes"],
                     ing["rows_per_s"], ing["dead_letters"],
                     ", ".join(p["table"] for p in ing["paused_tables"]) or "-")])
    for key, title, columns in (
            ("live_views", "live views", ["name", "target", "rows", "last_change_at"]),
            ("batch", "daily marts", ["mart", "day_column", "latest_day", "days"]),
            ("reconciliation", "reconciliation", ["pair", "mart", "reconciled_days",
                                                  "drifting_days", "last_checked_at"])):
        layer = summary[key]
        if isinstance(layer, dict) and "error" in layer:
            console.print(f"[red]{title}:[/] {layer['error']}")
        else:
            emit_table(title, columns, [[row.get(c) for c in columns] for row in layer])
    dag = summary.get("dagster")
    if dag and "error" not in dag:
        emit_table("dagster", ["job", "status", "days", "started_at"],
                   [(j, r["status"], "..".join(d or "" for d in r["partition_range"]) or "-",
                     r["started_at"]) for j, r in dag["latest_runs"].items()])
    elif dag:
        console.print(f"dagster: {dag['error']}")


def status(json_out: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
           = False) -> None:
    """Summarise every layer: ingestion lag, live views, last batch, checks, Dagster runs."""
    settings = load_settings()
    summary = collect(locate_databases(settings), settings.home / "dagster")
    if json_out:
        emit_json(summary)
    else:
        _show(summary)
