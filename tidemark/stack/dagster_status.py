"""What the Dagster instance of ``tidemark up`` knows, for ``tidemark status``.

Reads ``$TIDEMARK_HOME/dagster`` (never starts anything): the latest run of each job, and the
latest evaluation of every asset check of the code location — whoever launched it: ``tidemark
up``, a schedule, a sensor, or a person in the UI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tidemark.settings import Settings

JOBS = ("ingestion_catch_up", "nightly_batch", "daily_marts", "reconciliation",
        "verify_live_views", "source_freshness", "__ASSET_JOB")
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _when(timestamp: float | None) -> str | None:
    return None if not timestamp else datetime.fromtimestamp(timestamp, UTC).isoformat()


def latest_runs(instance: Any) -> dict[str, dict[str, Any]]:
    """The newest run of each job of :data:`JOBS` (``__ASSET_JOB``: materialisations launched
    from the UI or by ``tidemark up``)."""
    from dagster import RunsFilter

    out = {}
    for job in JOBS:
        records = instance.get_run_records(filters=RunsFilter(job_name=job), limit=1)
        if not records:
            continue
        record = records[0]
        run = record.dagster_run
        days = [run.tags.get(RANGE[0]), run.tags.get(RANGE[1])]
        if run.tags.get("dagster/partition"):
            days = [run.tags["dagster/partition"]] * 2
        out[job] = {"status": run.status.value, "run_id": run.run_id,
                    "partition_range": days, "started_at": _when(record.start_time),
                    "trigger": run.tags.get("tidemark/trigger")
                    or run.tags.get("dagster/schedule_name")
                    or run.tags.get("dagster/sensor_name") or "manual"}
    return out


def check_results(instance: Any, check_keys: list[Any]) -> list[dict[str, Any]]:
    """The latest execution of every check in ``check_keys`` (``never`` when none yet)."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    out = []
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        record = latest.get(key)
        row: dict[str, Any] = {"asset": key.asset_key.to_user_string(), "check": key.name,
                               "status": "never", "passed": None, "severity": None,
                               "description": None, "evaluated_at": None, "run_id": None}
        if record is not None:
            row.update(status=record.status.value.lower(), run_id=record.run_id or None,
                       evaluated_at=_when(record.create_timestamp))
            event = getattr(record.event, "dagster_event", None) if record.event else None
            evaluation = getattr(event, "event_specific_data", None)
            if evaluation is not None and hasattr(evaluation, "passed"):
                row.update(passed=evaluation.passed,
                           severity=getattr(evaluation.severity, "value", None),
                           # whole: the end of a reason says what to do
                           description=(evaluation.description or "").splitlines()[0]
                           if evaluation.description else None)
        out.append(row)
    return out


def code_location_checks(settings: Settings) -> list[Any]:
    """Every asset check key of ``orchestration.definitions`` (loads the definitions)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from orchestration.definitions import defs

        return list(defs.resolve_asset_graph().asset_check_keys)


def dagster_summary(settings: Settings) -> dict[str, Any]:
    """Latest runs and every check's latest result, or ``error`` when there is no instance."""
    home: Path = settings.dagster_home
    if not (home / "dagster.yaml").exists():
        return {"error": f"no Dagster instance at {home} (`tidemark up` creates it)"}
    from dagster import DagsterInstance

    try:
        instance = DagsterInstance.from_config(str(home))
        runs = latest_runs(instance)
    except Exception as exc:  # the SQLite storage under home cannot be read
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"error": f"Dagster's storage in {home} cannot be read ({reason}); it is SQLite "
                         f"under that directory, created and migrated by `tidemark up`."}
    with instance:
        summary: dict[str, Any] = {"home": str(home), "latest_runs": runs}
        try:
            keys = code_location_checks(settings)
        except Exception as exc:  # the code location cannot load: say why, keep the runs
            summary["checks_error"] = f"{type(exc).__name__}: {exc}"
            return summary
        summary["checks"] = check_results(instance, keys)
    return summary
