"""Ingestion sensors (running by default).

``ingestion_observer`` records an observation of a table only when its applied LSN moved and
its ``ingestion_lag`` and ``watermark_delay`` evaluations only when the outcome changed, so a
quiet stack writes nothing to the event log; ``dead_letter_alert`` records the ``dead_letters``
evaluation of a table when its dead letters changed.
"""

import json
from typing import Any

import dagster as dg
import psycopg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.checks import (
    dead_letter_evaluation,
    lag_evaluation,
    watermark_evaluation,
)
from orchestration.defs.resources import TidemarkResource, unreachable


def observe_changes(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """What the observer sensor records: events for tables whose LSN or lag outcome changed.

    Args:
        tidemark: the resource.
        cursor: the previous cursor (JSON: table key -> [lsn, lag outcome]).

    Returns:
        (asset events, new cursor).
    """
    before: dict[str, list] = json.loads(cursor) if cursor else {}
    warn_s, error_s = tidemark.lag_thresholds()
    events: list[Any] = []
    after: dict[str, list] = {}
    for key, state in states(tidemark).items():
        name = key.to_user_string()
        lsn = state.lsn or "none"
        evaluation = lag_evaluation(state, warn_s, error_s)
        outcome = "pass" if evaluation.passed else evaluation.severity.value
        old = before.get(name, [None, None]) + [None]
        if lsn != old[0]:
            events.append(dg.AssetObservation(key, metadata=state.metadata()))
        if outcome != old[1]:
            events.append(evaluation)
        after[name] = [lsn, outcome]
        if state.watermark is not None:
            marked = watermark_evaluation(state)
            mark_outcome = "pass" if marked.passed else marked.severity.value
            if mark_outcome != old[2]:
                events.append(marked)
            after[name].append(mark_outcome)
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="ingestion_observer", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records an observation of each replicated table when its applied LSN "
                       "moved, and the lag check's outcome when it changed.")
def ingestion_observer(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Observe ingestion without flooding the event log (only changes are recorded)."""
    try:
        events, cursor = observe_changes(tidemark, context.cursor)
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    if not events:
        return dg.SkipReason("No table moved and no lag outcome changed.")
    return dg.SensorResult(asset_events=events, cursor=cursor)


def dead_letter_growth(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """Check evaluations for tables whose dead-letter count changed since ``cursor``."""
    before: dict[str, int] = json.loads(cursor) if cursor else {}
    events = []
    after = {}
    for key, state in states(tidemark).items():
        name = key.to_user_string()
        after[name] = state.dead_letters
        if name not in before or state.dead_letters != before[name]:
            events.append(dead_letter_evaluation(
                state, max(0, state.dead_letters - before.get(name, 0))))
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="dead_letter_alert", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records the dead_letters check of a table when its dead letters change "
                       "(a WARN while any wait for a replay).")
def dead_letter_alert(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Raise the ``dead_letters`` check of a table when its dead letters grow."""
    try:
        events, cursor = dead_letter_growth(tidemark, context.cursor)
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    for event in events:
        if not event.passed:
            context.log.warning(event.description)
    if not events:
        return dg.SkipReason("Dead letters unchanged.")
    return dg.SensorResult(asset_events=events, cursor=cursor)
