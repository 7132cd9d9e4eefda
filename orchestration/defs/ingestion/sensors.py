"""Ingestion sensors (running by default).

``ingestion_observer`` records an observation of a table when its applied LSN moved, at most
once per :data:`RECORD_EVERY_S` per table, and its ``ingestion_lag`` and ``watermark_delay``
evaluations when the outcome changed, so a quiet stack writes nothing to the event log and a
busy one a few events a minute; ``dead_letter_alert`` records the ``dead_letters`` evaluation
of a table when its dead letters changed — at once when its outcome changes (none ↔ some),
else at most once per :data:`RECORD_EVERY_S`. Before, a stack under load wrote an
observation of every table every 30 s and a dead-letter evaluation every minute (~0.2 MB/min
of Dagster's SQLite event log, ~290 MB/day).
"""

import json
import time
from typing import Any

import dagster as dg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.checks import (
    dead_letter_evaluation,
    lag_evaluation,
    watermark_evaluation,
)
from orchestration.defs.resources import TidemarkResource, observe

RECORD_EVERY_S = 300.0


def _due(recorded_at: float | None, now: float, every_s: float) -> bool:
    return recorded_at is None or now - recorded_at >= every_s


def observe_changes(tidemark: TidemarkResource, cursor: str | None, now: float | None = None,
                    every_s: float = RECORD_EVERY_S) -> tuple[list, str]:
    """What the observer sensor records: events for tables whose LSN moved (at most once per
    ``every_s``) or whose lag or watermark outcome changed.

    Args:
        tidemark: the resource.
        cursor: the previous cursor (JSON: table key -> [observed lsn, lag outcome,
            watermark outcome, observed at]).
        now: the time (epoch seconds; default: now).
        every_s: least seconds between two observations of one table.

    Returns:
        (asset events, new cursor).
    """
    now = time.time() if now is None else now
    before: dict[str, list] = json.loads(cursor) if cursor else {}
    warn_s, error_s = tidemark.lag_thresholds()
    events: list[Any] = []
    after: dict[str, list] = {}
    for key, state in states(tidemark).items():
        name = key.to_user_string()
        lsn = state.lsn or "none"
        evaluation = lag_evaluation(state, warn_s, error_s)
        outcome = "pass" if evaluation.passed else evaluation.severity.value
        old = (before.get(name) or []) + [None] * 4
        observed_lsn, observed_at = old[0], old[3]
        if lsn != observed_lsn and _due(observed_at, now, every_s):
            events.append(dg.AssetObservation(key, metadata=state.metadata()))
            observed_lsn, observed_at = lsn, now
        if outcome != old[1]:
            events.append(evaluation)
        mark_outcome = None
        if state.watermark is not None:
            marked = watermark_evaluation(state)
            mark_outcome = "pass" if marked.passed else marked.severity.value
            if mark_outcome != old[2]:
                events.append(marked)
        after[name] = [observed_lsn, outcome, mark_outcome, observed_at]
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="ingestion_observer", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records an observation of each replicated table when its applied LSN "
                       "moved, and the lag check's outcome when it changed.")
def ingestion_observer(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Observe ingestion without flooding the event log (only changes are recorded)."""
    return observe(context, lambda: observe_changes(tidemark, context.cursor),
                   "No table moved and no lag outcome changed.")


def dead_letter_growth(tidemark: TidemarkResource, cursor: str | None, now: float | None = None,
                       every_s: float = RECORD_EVERY_S) -> tuple[list, str]:
    """Check evaluations for tables whose dead-letter count changed since the last one
    recorded: at once when it went from none to some or back, else at most once per
    ``every_s`` (cursor: table key -> [recorded count, recorded at])."""
    now = time.time() if now is None else now
    before: dict[str, Any] = json.loads(cursor) if cursor else {}
    events = []
    after = {}
    for key, state in states(tidemark).items():
        name = key.to_user_string()
        old = before.get(name)
        count, at = (old, None) if isinstance(old, int) else (old or [None, None])
        changed = count is None or state.dead_letters != count
        flipped = count is None or (state.dead_letters == 0) != (count == 0)
        if changed and (flipped or _due(at, now, every_s)):
            events.append(dead_letter_evaluation(
                state, max(0, state.dead_letters - (count or 0))))
            count, at = state.dead_letters, now
        after[name] = [count, at]
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="dead_letter_alert", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records the dead_letters check of a table when its dead letters change "
                       "(a WARN while any wait for a replay).")
def dead_letter_alert(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Raise the ``dead_letters`` check of a table when its dead letters grow."""
    return observe(context, lambda: dead_letter_growth(tidemark, context.cursor),
                   "Dead letters unchanged.")
