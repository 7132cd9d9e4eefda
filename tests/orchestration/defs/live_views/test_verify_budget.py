"""The periodic comparison of a live view with its query runs on a budget (round-24 scale
review: ``matches_query`` read the whole history every 15 minutes, 13.6 s for ``active_carts``
at 100 times the demo's week): it is due again once its last duration divided by
``TIDEMARK_VERIFY_SHARE`` has passed; the oracle is still the user's query."""

from __future__ import annotations

import time

import dagster as dg

from orchestration.defs.keys import view_key
from orchestration.defs.live_views.checks import EMBEDDED_CHECK, SECONDS
from orchestration.defs.live_views.schedules import due_checks, verify_live_views_schedule
from tests.orchestration.defs.conftest import check_results


def test_a_comparison_is_due_again_after_its_duration_over_the_share(built, monkeypatch
                                                                     ) -> None:
    key = dg.AssetCheckKey(view_key("daily_store_revenue"), EMBEDDED_CHECK)
    result = check_results(built.run_checks([key]))[("live/daily_store_revenue",
                                                     EMBEDDED_CHECK)]
    assert result.passed
    took = result.metadata[SECONDS].value
    assert 0 < took < 60 and f"({took:.1f} s)" in result.description  # the status shows it

    now = time.time()
    due, later = due_checks(built.instance, now, share=0.01)
    assert key not in due  # ran a moment ago: due in took / 0.01 seconds
    assert any(line.startswith("daily_store_revenue: last took") and "next at" in line
               for line in later), later
    never = dg.AssetCheckKey(view_key("active_carts"), EMBEDDED_CHECK)
    assert never in due  # never compared: due
    assert key in due_checks(built.instance, now + took / 0.01 + 1, share=0.01)[0]

    # the schedule asks for the due comparisons and every cheap check, not the others
    monkeypatch.setenv("TIDEMARK_VERIFY_SHARE", "0.01")
    request = verify_live_views_schedule(dg.build_schedule_context(instance=built.instance))
    asked = set(request.asset_check_keys)
    assert never in asked and key not in asked
    assert dg.AssetCheckKey(view_key("daily_store_revenue"), "freshness_slo") in asked
