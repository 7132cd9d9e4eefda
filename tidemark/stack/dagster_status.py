"""What the Dagster instance of ``tidemark up`` knows, for ``tidemark status``.

Reads ``$TIDEMARK_HOME/dagster`` (never starts anything): the latest run of each job, and the
latest evaluation of every asset check of the code location — whoever launched it: ``tidemark
up``, a schedule, a sensor, or a person in the UI. While ``tidemark up``'s Dagster UI answers,
the same is asked of it over GraphQL (:mod:`tidemark.stack.dagster_served`): importing Dagster,
opening the instance and loading the code location took 5–15 s of a 9–25 s status.
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


def run_row(status: str, run_id: str, tags: dict[str, str], start_time: float | None
            ) -> dict[str, Any]:
    """A job's latest run as ``status`` shows it (``tags``: the run's tags)."""
    days = [tags.get(RANGE[0]), tags.get(RANGE[1])]
    if tags.get("dagster/partition"):
        days = [tags["dagster/partition"]] * 2
    return {"status": status, "run_id": run_id, "partition_range": days,
            "started_at": _when(start_time),
            "trigger": tags.get("tidemark/trigger") or tags.get("dagster/schedule_name")
            or tags.get("dagster/sensor_name") or "manual"}


def check_row(asset: str, check: str, status: str = "never", run_id: str | None = None,
              timestamp: float | None = None, passed: bool | None = None,
              severity: str | None = None, description: str | None = None) -> dict[str, Any]:
    """A check's latest execution as ``status`` shows it (``never`` when none yet)."""
    return {"asset": asset, "check": check, "status": status, "passed": passed,
            "severity": severity,
            # whole: the end of a reason says what to do
            "description": description.splitlines()[0] if description else None,
            "evaluated_at": _when(timestamp), "run_id": run_id or None}


def latest_runs(instance: Any) -> dict[str, dict[str, Any]]:
    """The newest run of each job of :data:`JOBS` (``__ASSET_JOB``: materialisations launched
    from the UI or by ``tidemark up``)."""
    from dagster import RunsFilter

    out = {}
    for job in JOBS:
        records = instance.get_run_records(filters=RunsFilter(job_name=job), limit=1)
        if records:
            run = records[0].dagster_run
            out[job] = run_row(run.status.value, run.run_id, dict(run.tags),
                               records[0].start_time)
    return out


def _resolved(instance: Any, record: Any, runs: dict[str, Any]) -> str:
    """A check execution's status as the UI shows it: a ``planned`` one whose run has ended
    is ``execution_failed`` (the run failed, e.g. its code server did not start) or
    ``skipped`` (the run ended without evaluating it), never "running" forever."""
    status = record.status.value.lower()
    if status != "planned" or not record.run_id:
        return status
    if record.run_id not in runs:
        runs[record.run_id] = instance.get_run_by_id(record.run_id)
    run = runs[record.run_id]
    if run is None:
        return "skipped"
    if not run.is_finished:
        return status
    return "execution_failed" if run.status.value == "FAILURE" else "skipped"


def check_results(instance: Any, check_keys: list[Any]) -> list[dict[str, Any]]:
    """The latest execution of every check in ``check_keys`` (``never`` when none yet)."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    runs: dict[str, Any] = {}
    out = []
    for key in sorted(check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        record = latest.get(key)
        if record is None:
            out.append(check_row(key.asset_key.to_user_string(), key.name))
            continue
        event = getattr(record.event, "dagster_event", None) if record.event else None
        evaluation = getattr(event, "event_specific_data", None)
        if evaluation is None or not hasattr(evaluation, "passed"):
            evaluation = None
        out.append(check_row(
            key.asset_key.to_user_string(), key.name, _resolved(instance, record, runs),
            record.run_id, record.create_timestamp,
            evaluation.passed if evaluation else None,
            getattr(evaluation.severity, "value", None) if evaluation else None,
            evaluation.description if evaluation else None))
    return out


def code_location_checks(settings: Settings) -> list[Any]:
    """Every asset check key of ``orchestration.definitions``: asked of the running Dagster UI
    (:func:`served_checks`), else from the definitions loaded here."""
    from tidemark.stack.dagster_served import served_checks

    served = served_checks(settings)
    if served is not None:
        from dagster import AssetCheckKey, AssetKey

        return [AssetCheckKey(AssetKey(path), name) for path, name in served]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from orchestration.definitions import build_defs

        return list(build_defs().resolve_asset_graph().asset_check_keys)


def dagster_summary(settings: Settings) -> dict[str, Any]:
    """Latest runs and every check's latest result, or ``error`` when there is no instance."""
    home: Path = settings.dagster_home
    if not (home / "dagster.yaml").exists():
        return {"error": f"no Dagster instance at {home} (`tidemark up` creates it)"}
    from tidemark.stack.dagster_served import served_summary

    served = served_summary(settings)
    if served is not None:  # the running UI's answer: no Dagster import, no code location
        return {"home": str(home), **served}
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
