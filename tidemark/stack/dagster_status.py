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
        row: dict[str, Any] = {"asset": key.asset_key.to_user_string(), "check": key.name,
                               "status": "never", "passed": None, "severity": None,
                               "description": None, "evaluated_at": None, "run_id": None}
        if record is not None:
            row.update(status=_resolved(instance, record, runs), run_id=record.run_id or None,
                       evaluated_at=_when(record.create_timestamp))
            event = getattr(record.event, "dagster_event", None) if record.event else None
            evaluation = getattr(event, "event_specific_data", None)
            if evaluation is not None and hasattr(evaluation, "passed"):
                row.update(passed=evaluation.passed,
                           severity=getattr(evaluation.severity, "value", None),
                           description=(evaluation.description or "").splitlines()[0][:200]
                           if evaluation.description else None)
        out.append(row)
    return out


SERVED_CHECKS = """
{ assetNodes { assetKey { path }
  assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }
"""


def served_checks(settings: Settings) -> list[Any] | None:
    """Every asset check key of the code location the running Dagster UI serves (GraphQL), or
    None when no UI answers at ``TIDEMARK_DAGSTER_PORT`` or its location is not loaded.

    The UI has the definitions loaded already; asking it takes a fraction of a second where
    loading them here (dbt's and dagster-dbt's modules, the manifest) takes 3–12 s.
    """
    import urllib.error

    from tidemark.stack.dagster_proc import _graphql, ui_url

    try:
        nodes = _graphql(ui_url(settings), SERVED_CHECKS).get("assetNodes") or []
        answers = [n["assetChecksOrError"] for n in nodes]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None
    if not nodes or any(a.get("__typename") != "AssetChecks" for a in answers):
        return None
    from dagster import AssetCheckKey, AssetKey

    return [AssetCheckKey(AssetKey(n["assetKey"]["path"]), c["name"])
            for n, a in zip(nodes, answers, strict=True) for c in a["checks"]]


def code_location_checks(settings: Settings) -> list[Any]:
    """Every asset check key of ``orchestration.definitions``: asked of the running Dagster UI
    (:func:`served_checks`), else from the definitions loaded here."""
    served = served_checks(settings)
    if served is not None:
        return served
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
