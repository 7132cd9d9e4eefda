"""Asset keys shared by the systems' definitions (one place, no cross-system imports)."""

from __future__ import annotations

import dagster as dg

from tidemark.reconciliation.tags import CORRECTION_TAG as _CORRECTION_TAG

# The tag of every correction run (its value: the mart), set by the reconciliation_corrections
# sensor. The run queue lets runs with this tag take at most one of its slots
# (tag_concurrency_limits in the dagster.yaml `tidemark up` writes, README "Daily truth").
# Defined once, in tidemark.reconciliation.tags.
CORRECTION_TAG = _CORRECTION_TAG


def table_key(source: str, table: str) -> dg.AssetKey:
    """Asset key of a replicated table: ``<source>/<table>``."""
    return dg.AssetKey([source, table])


def view_key(name: str) -> dg.AssetKey:
    """Asset key of a live view: ``live/<name>``."""
    return dg.AssetKey(["live", name])


def mart_key(mart: str) -> dg.AssetKey:
    """Asset key of a dbt mart: ``marts/<mart>``."""
    return dg.AssetKey(["marts", mart])


def check_name(pair_name: str) -> str:
    """Name of a pair's check: ``reconcile_<pair>``."""
    return f"reconcile_{pair_name}"


def serving_key(pair_name: str) -> dg.AssetKey:
    """Asset key of a serving view: ``serving/<pair>``."""
    return dg.AssetKey(["serving", pair_name])


CHECK_RUN_TAGS = {"dagster/priority": "10"}
"""Tags of the jobs that only evaluate checks (live views, dbt source freshness,
reconciliation): the run queue (2 runs at a time) starts them before queued mart runs, so a
check is not held back for minutes behind the demo's corrections (queued runs of priority 0)."""
