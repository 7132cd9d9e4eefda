"""dbt tests tagged ``full_history``: run once a day, not in every build.

A key unique over all history (``unique_int_app_events_deduplicated_event_id``) or a relationship
over all rows reads every day ever landed, in every nightly batch, ``tidemark up`` build and
backfill, and grows with history (bench/full_history_tests.py). Tagged ``full_history`` in the
dbt project's YAML, they are:

* left out of the builds of the dbt assets (``--exclude tag:full_history``) unless the run selects
  one of their checks itself, and out of the ``nightly_batch`` and ``daily_marts`` jobs;
* run by the ``full_history_tests`` job (their checks only: ``dbt build --select`` of the tests)
  on ``full_history_tests_schedule``, daily at ``TIDEMARK_FULL_HISTORY_CRON`` (UTC, default
  ``30 4 * * *``, after the nightly batch);
* still run by ``dbt build`` (CI, by hand) like every other test.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import dagster as dg

TAG = "full_history"


def tagged_tests(manifest: Path, tag: str = TAG) -> frozenset[str]:
    """Names of the dbt tests of ``manifest`` tagged ``tag`` (a check's name is its test's)."""
    nodes = json.loads(Path(manifest).read_text()).get("nodes", {})
    return frozenset(node["name"] for node in nodes.values()
                     if node.get("resource_type") == "test" and tag in node.get("tags", []))


def tagged_check_keys(assets: Sequence[dg.AssetsDefinition], names: Iterable[str]
                      ) -> frozenset[dg.AssetCheckKey]:
    """The check keys of ``assets`` whose check is one of the tests ``names``."""
    wanted = set(names)
    return frozenset(spec.key for asset in assets for spec in asset.check_specs
                     if spec.name in wanted)


def full_history_excludes(selected: Iterable[dg.AssetCheckKey],
                          full_history: frozenset[dg.AssetCheckKey]) -> list[str]:
    """dbt ``--exclude`` values for a build: ``tag:full_history`` unless the run selected one
    of those tests' checks (the ``full_history_tests`` job, a check run from the UI)."""
    return [] if full_history & set(selected) else [f"tag:{TAG}"]


def full_history_defs(keys: frozenset[dg.AssetCheckKey], cron: str
                      ) -> tuple[list[dg.JobDefinition], list[dg.ScheduleDefinition]]:
    """The ``full_history_tests`` job over the checks ``keys`` and its daily schedule (none when
    no test is tagged)."""
    if not keys:
        return [], []
    job = dg.define_asset_job(
        "full_history_tests", selection=dg.AssetSelection.checks(*sorted(
            keys, key=lambda k: (k.asset_key.to_user_string(), k.name))),
        description="dbt tests tagged full_history (whole-history keys and relationships): "
                    "left out of the builds, run once a day.")
    schedule = dg.ScheduleDefinition(
        name="full_history_tests_schedule", job=job, cron_schedule=cron,
        execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The dbt tests tagged full_history, daily (TIDEMARK_FULL_HISTORY_CRON).")
    return [job], [schedule]
