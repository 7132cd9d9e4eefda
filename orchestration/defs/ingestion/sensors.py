"""Ingestion sensors: ``ingestion_observer`` records an observation only when a table's LSN
changed and a check evaluation only when its outcome changed, so a quiet stack writes nothing to
the event log; ``dead_letter_alert`` raises the ``dead_letters`` check when dead letters grow."""


import json
from typing import Any

import dagster as dg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.checks import dead_letter_evaluation, lag_evaluation
from orchestration.defs.keys import table_key
from orchestration.defs.resources import TidemarkResource


def observe_changes(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """What the observer sensor records: events for tables whose LSN or lag outcome changed.

    Args:
        tidemark: the resource.
        cursor: the previous cursor (JSON: table -> [lsn, lag outcome]).

    Returns:
        (asset events, new cursor).
    """
    before: dict[str, list] = json.loads(cursor) if cursor else {}
    warn_s, error_s = tidemark.lag_thresholds()
    events: list[Any] = []
    after: dict[str, list] = {}
    for name, state in states(tidemark).items():
        lsn = state.lsn or "none"
        evaluation = lag_evaluation(state, warn_s, error_s)
        outcome = "pass" if evaluation.passed else evaluation.severity.value
        old = before.get(name, [None, None])
        if lsn != old[0]:
            events.append(dg.AssetObservation(table_key(name), metadata=state.metadata(),
                                              tags={"dagster/data_version": lsn}))
        if outcome != old[1]:
            events.append(evaluation)
        after[name] = [lsn, outcome]
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="ingestion_observer", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records an observation of each replicated table when its applied LSN "
                       "moved, and the lag check's outcome when it changed.")
def ingestion_observer(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Observe ingestion without flooding the event log (only changes are recorded)."""
    events, cursor = observe_changes(tidemark, context.cursor)
    if not events:
        return dg.SkipReason("No table moved and no lag outcome changed.")
    return dg.SensorResult(asset_events=events, cursor=cursor)


def dead_letter_growth(tidemark: TidemarkResource, cursor: str | None) -> tuple[list, str]:
    """Check evaluations for tables whose dead-letter count changed since ``cursor``."""
    before: dict[str, int] = json.loads(cursor) if cursor else {}
    events = []
    after = {}
    for name, state in states(tidemark).items():
        after[name] = state.dead_letters
        if state.dead_letters != before.get(name, 0):
            events.append(dead_letter_evaluation(
                state, max(0, state.dead_letters - before.get(name, 0))))
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="dead_letter_alert", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Alerts (a WARN check on the table) when dead letters grow.")
def dead_letter_alert(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Raise the ``dead_letters`` check of a table when its dead letters grow."""
    events, cursor = dead_letter_growth(tidemark, context.cursor)
    for event in events:
        if not event.passed:
            context.log.warning(event.description)
    if not events:
        return dg.SkipReason("Dead letters unchanged.")
    return dg.SensorResult(asset_events=events, cursor=cursor)
