"""``freshness_observer`` (running by default): the live views' freshness, all the time.

Every 30 s it judges each view against its freshness objective (``tidemark.slo.freshness``)
and records the ``freshness_slo`` evaluation when its outcome or the outcome's cause changed (a
view missing its objective because nothing lands, then because landing is slow, says so), and
an observation of
the view with its p50/p95/p99 (5 min, 1 h) when the outcome changed or every
:data:`OBSERVE_EVERY_S` — the asset's metadata plots the view's p95 over time, and a quiet
stack writes little to the event log.
"""

import json
import time

import dagster as dg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.checks import (
    freshness_evaluation,
    freshness_metadata,
    freshness_states,
)
from orchestration.defs.resources import TidemarkResource, observe

OBSERVE_EVERY_S = 300


def observe_freshness(tidemark: TidemarkResource, cursor: str | None,
                      now: float | None = None) -> tuple[list, str]:
    """What the sensor records (see the module docstring).

    Args:
        tidemark: the resource.
        cursor: the previous cursor (JSON: view -> [outcome/cause, last observation time]).
        now: the time (``time.time()``), for tests.

    Returns:
        (asset events, new cursor).
    """
    now = time.time() if now is None else now
    before: dict[str, list] = json.loads(cursor) if cursor else {}
    events: list = []
    after: dict[str, list] = {}
    for f in freshness_states(tidemark):
        outcome, observed = before.get(f.view, [None, 0.0])
        now_outcome = f"{f.state}/{f.cause}"
        changed = now_outcome != outcome
        if changed:
            events.append(freshness_evaluation(f))
        if changed or now - observed >= OBSERVE_EVERY_S:
            events.append(dg.AssetObservation(view_key(f.view), metadata=freshness_metadata(f)))
            observed = now
        after[f.view] = [now_outcome, observed]
    return events, json.dumps(after, sort_keys=True)


@dg.sensor(name="freshness_observer", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Judges every live view's freshness objective (source commit → visible "
                       "in the view); records the freshness_slo check when its outcome changes "
                       "and the view's p50/p95/p99 every 5 minutes.")
def freshness_observer(context: dg.SensorEvaluationContext, tidemark: TidemarkResource):
    """Keep the ``freshness_slo`` checks and the views' latency metadata current."""
    return observe(context, lambda: observe_freshness(tidemark, context.cursor),
                   "No freshness outcome changed.")
