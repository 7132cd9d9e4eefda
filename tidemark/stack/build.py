"""What ``tidemark up`` builds, built as Dagster runs of the code location's own assets.

:class:`DagsterBuild` loads ``orchestration.definitions`` in this process and executes runs
against the Dagster instance of ``$TIDEMARK_HOME/dagster`` — the instance the webserver and
the daemon of ``tidemark up`` use — so the UI shows every run, materialisation and check
evaluation, as ``dagster asset materialize`` would record them:

1. ``ingestion_catch_up`` (:func:`catch_up`): the initial snapshot (first start) and the stream
   up to the source's current position; observations of every replicated table.
2. one run of the assets and their checks: the live views that are new or changed (all on a
   first start), the unpartitioned dbt models with the dbt tests (source tests included), the
   daily marts for the closed days never built plus the correction window (one dbt invocation
   over the range), the serving views, and every check: ``matches_query``, reconciliation,
   mart and source freshness, ingestion lag and dead letters.

Progress goes to :func:`tidemark.progress.report` (phases ``landing`` and ``build``).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tidemark import progress
from tidemark.errors import TidemarkError
from tidemark.settings import Settings
from tidemark.stack.sqlite_engines import shared_engines

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send this process's stdout, stderr and Python warnings to ``log`` for the block."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, redirect_stdout(out), redirect_stderr(out), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class BuildError(TidemarkError):
    """A Dagster run of ``tidemark up`` failed (the failing step and its message are named)."""


@dataclass
class BuildPlan:
    """The run of assets and checks ``tidemark up`` launches after the catch-up.

    Attributes:
        views: live views to (re)deploy.
        first_day: first daily partition of the run (None: no closed day to build).
        last_day: last daily partition of the run (yesterday).
        asset_keys: every asset of the run.
        check_keys: every check of the run.
        expected_events: materialisations and check evaluations the run should record.
        unchanged_views: live views already deployed from their current file (left alone).
    """

    views: list[str]
    first_day: date | None
    last_day: date | None
    asset_keys: set = field(default_factory=set)
    check_keys: set = field(default_factory=set)
    expected_events: int = 0
    unchanged_views: int = 0


class DagsterBuild:
    """Runs of the code location in this process, recorded in ``$TIDEMARK_HOME/dagster``.

    Args:
        settings: the stack settings (Dagster home, partitions start).
    """

    def __init__(self, settings: Settings) -> None:
        with quiet(settings.log_dir / "dagster-runs.log"):
            import dagster as dg

            from orchestration.definitions import build_defs

            self.defs = defs = build_defs()
            self.graph = defs.resolve_asset_graph()
            self.job = defs.get_implicit_global_asset_job_def()
        self.settings = settings
        self.instance = dg.DagsterInstance.from_config(str(settings.dagster_home))

    def close(self) -> None:
        """Release the instance."""
        self.instance.dispose()

    # -- runs ---------------------------------------------------------------------------------

    def plan(self, today: date | None = None, later: frozenset[str] = frozenset(),
             without_dbt: bool = False) -> BuildPlan:
        """What the build run covers (see the module docstring).

        Args:
            today: the current UTC day (default: now).
            later: names of checks left out of the run (launched on their own afterwards).
            without_dbt: leave out what runs dbt and what reads its models (the dbt project
                does not parse: the dbt assets are the last manifest that parsed).
        """
        from orchestration.defs.live_views.assets import view_files

        today = today or datetime.now(UTC).date()
        names = [v.name for v in view_files()]
        views = self._views_to_deploy(names)
        daily = [k for k in self.graph.get_all_asset_keys()
                 if self.graph.get(k).partitions_def is not None]
        first_partition = self.settings.first_partition_day() or today
        last = today - timedelta(days=1)
        first: date | None = None
        if last >= first_partition:
            window = last - timedelta(days=self.settings.correction_days)
            missing = self._unbuilt_days(daily, first_partition, last)
            first = max(first_partition, min([window, *missing]))
        skipped, skipped_checks = self.dbt_dependent() if without_dbt else (set(), set())
        keys = set()
        for key in self.graph.get_all_asset_keys():
            node = self.graph.get(key)
            if not node.is_executable or node.is_observable or key in skipped:
                continue
            if key.path[0] == "live" and key.path[-1] not in views:
                continue
            if node.partitions_def is not None and first is None:
                continue
            keys.add(key)
        checks = {c for c in self.graph.asset_check_keys if c.name not in later
                  and c not in skipped_checks and c.asset_key not in skipped and (
            c.asset_key in keys or self.graph.get(c.asset_key).is_observable
            or c.asset_key.path[0] == "live")}
        days = 0 if first is None else (last - first).days + 1
        expected = sum(days if self.graph.get(k).partitions_def is not None else 1 for k in keys)
        return BuildPlan(sorted(views), first, last if first else None, keys, checks,
                         expected + len(checks), len(set(names) - views))

    def build(self, plan: BuildPlan) -> str:
        """Run the planned assets and checks (one run); return the run id.

        Raises:
            BuildError: the run failed.
        """
        from orchestration.defs.dbt.partitions import range_tags

        tags = {"tidemark/trigger": "tidemark up"}
        if plan.first_day is not None and plan.last_day is not None:
            tags.update(range_tags(plan.first_day.isoformat(), plan.last_day.isoformat()))
        return execute(self.job, self.instance, self.settings, tags, plan.expected_events,
                       "build", selection=(plan.asset_keys, plan.check_keys))

    # -- helpers ------------------------------------------------------------------------------

    def dbt_dependent(self) -> tuple[set, set]:
        """(asset keys, check keys) that run dbt, or read what dbt builds (serving views,
        reconciliation): left out of a build while the dbt project does not parse."""
        import dagster as dg

        from orchestration.defs.dbt.state import current_state

        if current_state().manifest is None:  # no dbt asset was loaded
            return set(), set()
        from orchestration.defs.dbt.assets import dbt_daily_marts, dbt_unpartitioned
        from orchestration.defs.dbt.checks import dbt_source_freshness

        ops = {d.node_def.name for d in (dbt_unpartitioned, dbt_daily_marts,
                                         dbt_source_freshness)}
        models = {k for k in self.graph.get_all_asset_keys()
                  if self.graph.get(k).is_executable
                  and self.graph.assets_def_for_key(k).node_def.name in ops}
        keys = dg.AssetSelection.assets(*models).downstream().resolve(self.graph)
        checks = {c for c in self.graph.asset_check_keys
                  if self.graph.assets_def_for_key(c).node_def.name in ops}
        return set(keys), checks

    def _views_to_deploy(self, names: list[str]) -> set[str]:
        """Views never materialised in Dagster, not deployed, or deployed from another file."""
        import dagster as dg

        from orchestration.defs.live_views.assets import view_files
        from orchestration.defs.resources import TidemarkResource

        deployed: dict[str, str] = {}
        try:
            from streaming_views.status import list_views

            dsn = TidemarkResource().urls().landing_app
            deployed = {v.name: v.definition_hash for v in list_views(dsn)}
        except Exception:  # no catalog yet: every view is new
            deployed = {}
        hashes = {v.name: v.definition_hash for v in view_files()}
        out = set()
        for name in names:
            materialized = self.instance.get_latest_materialization_event(
                dg.AssetKey(["live", name])) is not None
            if not materialized or deployed.get(name) != hashes[name]:
                out.add(name)
        return out

    def _unbuilt_days(self, keys: list, first: date, last: date) -> list[date]:
        """Days first..last some daily mart has no Dagster materialisation for."""
        built: set[str] | None = None
        for key in keys:
            parts = set(self.instance.get_materialized_partitions(key))
            built = parts if built is None else built & parts
        built = built or set()
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        return [d for d in days if d.isoformat() not in built]


def execute(job: Any, instance: Any, settings: Settings, tags: dict[str, str],
            expected: int | None, phase: str, resources: dict[str, Any] | None = None,
            selection: tuple[set, set] | None = None) -> str:
    """Execute ``job`` in this process, recorded in ``instance`` as a run of the code location
    the webserver loads; return the run id.

    The run's log lines and dbt's output go to the run's record (the UI) and to
    ``logs/dagster-runs.log``, not to the terminal, where the progress bars are. The run's
    events are stored through one SQLite engine per file (:func:`shared_engines`).

    Args:
        job: the job (for an asset run, the code location's whole implicit asset job).
        instance: the Dagster instance of ``tidemark up``.
        settings: the stack settings.
        tags: the run's tags.
        expected: materialisations and check evaluations expected (progress), or None.
        phase: the progress phase.
        resources: resources to bind (a job loaded without the full definitions).
        selection: (asset keys, check keys) the run executes, or None for the whole job.

    Raises:
        BuildError: the run failed (the failing steps and their messages are named).
    """
    run_id = str(uuid.uuid4())
    instance.add_event_listener(run_id, _EventCounter(phase, expected))
    with quiet(settings.log_dir / "dagster-runs.log"), shared_engines():
        result = run_in_process(job, instance, run_id, tags, resources, selection)
    if not result.success:
        raise BuildError(failure_message(result, job.name, run_id, settings.dagster_home))
    return run_id


def job_origin(job_name: str) -> Any:
    """Where the webserver and the daemon of ``tidemark up`` find ``job_name``: the code
    location ``orchestration.definitions`` (``-m``), its one repository."""
    import sys

    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from tidemark.stack.dagster_proc import CODE_LOCATION

    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=CODE_LOCATION),
        CODE_LOCATION)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)


def run_in_process(job: Any, instance: Any, run_id: str, tags: dict[str, str],
                   resources: dict[str, Any] | None, selection: tuple[set, set] | None) -> Any:
    """``job.execute_in_process``, but the run it records names its code location and, for an
    asset run, the assets and checks it executes.

    ``execute_in_process`` records neither: the Runs page then shows no target for the run and
    the Overview timeline (which groups runs by code location) leaves it out. Here the run is
    created with both, as a launch from the UI would, and executed in this process with the
    in-process executor (events reach this process's listeners: the progress bars).
    """
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.execution.execute_in_process import type_check_and_normalize_args
    from dagster._core.snap import snapshot_from_execution_plan

    resource_defs = type_check_and_normalize_args(run_config=QUIET_LOGS, resources=resources)[3]
    ephemeral = job.as_ephemeral_job(resource_defs=resource_defs, input_values={})
    assets, checks = (None, None) if selection is None else map(frozenset, selection)
    chosen = ephemeral if selection is None else ephemeral.get_subset(
        asset_selection=assets, asset_check_selection=checks)
    plan = create_execution_plan(InMemoryJob(chosen), run_config=QUIET_LOGS,
                                 instance_ref=instance.get_ref() if instance.is_persistent
                                 else None, tags=tags)
    run = instance.create_run(
        job_name=chosen.name, run_id=run_id, run_config=QUIET_LOGS, status=None,
        tags={**chosen.run_tags, **tags}, root_run_id=None, parent_run_id=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan,
                                                             chosen.get_job_snapshot_id()),
        job_snapshot=chosen.get_job_snapshot(),
        parent_job_snapshot=chosen.get_parent_job_snapshot(), asset_selection=assets,
        asset_check_selection=checks, resolved_op_selection=None, op_selection=None,
        remote_job_origin=job_origin(job.name), job_code_origin=None,
        asset_graph=chosen.asset_layer.asset_graph)
    return execute_run(InMemoryJob(ephemeral), run, instance)


def catch_up(settings: Settings) -> str:
    """Run the ``ingestion_catch_up`` job; return the run id.

    Only the ingestion system's definitions are loaded (no dbt manifest needed), so the catch-up
    runs while ``dbt parse`` prepares the manifest the other definitions need.

    Raises:
        BuildError: the run failed.
    """
    with quiet(settings.log_dir / "dagster-runs.log"):
        import dagster as dg

        from orchestration.defs.ingestion.jobs import catch_up_job
        from orchestration.defs.resources import TidemarkResource
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    try:
        return execute(catch_up_job, instance, settings, {"tidemark/trigger": "tidemark up"},
                       None, "landing", resources={"tidemark": TidemarkResource()})
    finally:
        instance.dispose()


class _EventCounter:
    """Turns a run's events into progress reports: materialisations and check evaluations
    recorded out of those expected, and the step running now."""

    def __init__(self, phase: str, expected: int | None) -> None:
        self.phase, self.expected, self.done = phase, expected, 0

    def __call__(self, entry: Any) -> None:
        event = getattr(entry, "dagster_event", None)
        if event is None or self.expected is None:
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            detail = event.step_key or ""
        elif kind in ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"):
            self.done += 1
            detail = event.asset_key.to_user_string() if event.asset_key else ""
        else:
            return
        progress.report(self.phase, min(self.done, self.expected), self.expected,
                        "assets+checks", detail)


def failure_message(result: Any, job: str, run_id: str, dagster_home: Path) -> str:
    """What failed in a run, for a person: the step, the error's first lines, where to look."""
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    lines = []
    for event in failures[:3]:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and getattr(error, "cause", None) is not None:
            error = error.cause  # Dagster wraps the op's own exception: show that one
        message = (error.message if error is not None else "failed").strip()
        first = "\n".join(message.splitlines()[:6])
        lines.append(f"  step {event.step_key}: {first}")
    detail = "\n".join(lines) or "  (no step failed; the run did not start)"
    return (f"The Dagster run {run_id[:8]} of {job} failed:\n{detail}\n"
            f"The run and its logs are in the Dagster instance {dagster_home} (open the UI with "
            f"`DAGSTER_HOME={dagster_home} dagster dev -m orchestration.definitions`). Fix the "
            f"cause and run `tidemark up` again; what was built is kept.")
