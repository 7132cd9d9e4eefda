"""``verify_live_views_schedule`` (running by default): the live view checks at
``TIDEMARK_CHECKS_CRON`` (default every 15 minutes, UTC), on a budget.

The embedded engine's ``matches_query`` compares a view with its own query, which reads the
view's whole history (13.6 s for ``active_carts`` at 100 times the demo's week, and growing
with it). The oracle stays the user's query; what is bounded is how often it runs: a view's
comparison is due again only once ``seconds / TIDEMARK_VERIFY_SHARE`` have passed since the
last one started (default share 0.01: a comparison of 13.6 s runs at most every 23 minutes, so
each view's periodic comparison takes at most 1 % of one core, whatever the history). The
other checks of the job (``freshness_slo``; Materialize's ``hydrated_and_current``) are cheap
and run at every tick. ``tidemark views verify`` and a materialisation of the view compare at
once, whatever the budget.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.assets import view_files
from orchestration.defs.live_views.checks import EMBEDDED_CHECK, SECONDS
from orchestration.defs.live_views.jobs import verify_live_views_job
from tidemark.settings import load_settings


def comparison_due(record: Any, now: float, share: float) -> tuple[bool, str]:
    """Whether a view's ``matches_query`` is due under the budget, and why (or when).

    Args:
        record: its latest execution record (None: never ran).
        now: the time (epoch seconds).
        share: the share of one core the periodic comparison may take.
    """
    if record is None:
        return True, "never compared"
    if record.status.value == "PLANNED":
        return False, "a comparison is in progress"
    event = getattr(record.event, "dagster_event", None) if record.event else None
    metadata = getattr(getattr(event, "event_specific_data", None), "metadata", None) or {}
    took = metadata.get(SECONDS)
    if took is None:
        return True, "no duration recorded"
    wait = float(took.value) / share
    if now - record.create_timestamp >= wait:
        return True, f"last took {float(took.value):.1f} s"
    due_at = datetime.fromtimestamp(record.create_timestamp + wait, UTC)
    return False, (f"last took {float(took.value):.1f} s; next at {due_at:%H:%M:%S} UTC "
                   f"(budget {share:.0%} of a core)")


def due_checks(instance: dg.DagsterInstance, now: float, share: float
               ) -> tuple[list[dg.AssetCheckKey], list[str]]:
    """The ``matches_query`` keys due now, and a line per view left for later."""
    keys = [dg.AssetCheckKey(view_key(v.name), EMBEDDED_CHECK) for v in view_files()]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    due, later = [], []
    for key in keys:
        ok, why = comparison_due(latest.get(key), now, share)
        (due.append(key) if ok else later.append(f"{key.asset_key.path[-1]}: {why}"))
    return due, later


@dg.schedule(name="verify_live_views_schedule", job=verify_live_views_job,
             cron_schedule=load_settings().checks_cron, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Checks every live view against its query (on a budget: see "
                         "TIDEMARK_VERIFY_SHARE) or Materialize's hydration and lag.")
def verify_live_views_schedule(context: dg.ScheduleEvaluationContext):
    """The job with every cheap check and the ``matches_query`` comparisons that are due."""
    settings = load_settings()
    if settings.live_target != "embedded":
        return dg.RunRequest()
    from orchestration.defs.live_views.checks import freshness_checks

    due, later = due_checks(context.instance, datetime.now(UTC).timestamp(),
                            settings.verify_share)
    for line in later:
        context.log.info(f"matches_query of {line}")
    return dg.RunRequest(asset_check_keys=[*due, *freshness_checks.check_keys])
