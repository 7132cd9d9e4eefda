"""``dbt_project_parses``: a dbt project that does not parse is a FAILED check on every dbt asset.

While the project does not parse, the dbt assets are the last manifest that parsed
(:mod:`orchestration.defs.dbt.state`): their last materialisations and checks stay green. This
check makes the failure show where a data engineer looks — the asset catalog's health, each
asset's Checks tab:

* one check ``dbt_project_parses`` on every dbt model (on ``dbt/project`` when no manifest ever
  parsed), severity ERROR: it fails with the file, line and dbt's message while the project does
  not parse, and passes again once it does;
* ``dbt_project_sensor`` (running by default, every minute) evaluates it without a run: it parses
  the project when a file changed since the last parse (or failure), as a load would (in a
  background thread: a parse longer than :data:`PARSE_WAIT_S` is reported by the next tick), and
  reports the check's result on every dbt asset whenever it changes (runless
  ``AssetCheckEvaluation``). An edit that breaks a model thus turns the dbt assets red within a
  minute, before anyone reloads; a fix turns them green again;
* the check can also be executed from the UI (it reads the same state). The dbt jobs leave it
  out: a run of dbt fails on a parse error anyway.
"""

import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from orchestration.defs.dbt.state import DbtState

CHECK = "dbt_project_parses"
SENSOR = "dbt_project_sensor"
#: How long a sensor tick waits for a parse (dbt parse of the shipped project: 10-40 s on a busy
#: machine); under Dagster's 60 s limit on a sensor evaluation, else the tick errors.
PARSE_WAIT_S = 40.0
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbt-parse")
_pending: Future[DbtState] | None = None


def parse_evaluations(keys: Sequence[dg.AssetKey], state: DbtState,
                      loaded: DbtState | None = None) -> list[dg.AssetCheckEvaluation]:
    """The check's result on each of ``keys`` for the project's ``state``.

    Args:
        keys: the dbt assets the check is on.
        state: the project's state now (:func:`~orchestration.defs.dbt.state.load_dbt_state`).
        loaded: the state the definitions were loaded with; when it had a failure that is now
            fixed, the passing result says to reload the code location.
    """
    if state.failure is not None:
        failure = state.failure
        meta: dict[str, Any] = {
            "file": dg.MetadataValue.text(failure.file or "?"),
            "line": dg.MetadataValue.text(str(failure.line or "?")),  # text: no plot
            "dbt_message": dg.MetadataValue.md(f"```\n{failure.message}\n```"),
            "parsed_at": dg.MetadataValue.text(failure.at),
            "project_dir": dg.MetadataValue.path(failure.project_dir)}
        description = (f"dbt project does not parse: {failure.headline()}. The dbt assets are "
                       "the last manifest that parsed and their runs fail. Fix the file; this "
                       "check passes at the next parse (within a minute).")
        return [dg.AssetCheckEvaluation(asset_key=key, check_name=CHECK, passed=False,
                                        severity=dg.AssetCheckSeverity.ERROR, metadata=meta,
                                        description=description) for key in keys]
    when = (datetime.fromtimestamp(state.manifest.stat().st_mtime, UTC)
            .isoformat(timespec="seconds") if state.manifest and state.manifest.exists()
            else "?")
    description = f"dbt project parses (manifest of {when})."
    if loaded is not None and loaded.failure is not None:
        description += (" The definitions still show the last failure: reload the code "
                        "location (Deployment > Reload) to load the new manifest.")
    return [dg.AssetCheckEvaluation(asset_key=key, check_name=CHECK, passed=True,
                                    metadata={"manifest_at": dg.MetadataValue.text(when)},
                                    description=description) for key in keys]


def signature(state: DbtState) -> str:
    """What the sensor's cursor remembers of ``state``: a new report only when it changes."""
    if state.failure is None:
        return json.dumps({"parses": True})
    failure = state.failure
    return json.dumps({"parses": False, "where": failure.where(), "message": failure.message,
                       "at": failure.at}, sort_keys=True)


def _load_state() -> DbtState:
    from orchestration.defs.dbt.project import tidemark_dbt_project
    from orchestration.defs.dbt.state import load_dbt_state

    return load_dbt_state(tidemark_dbt_project())


def project_state(wait_s: float | None = None) -> DbtState | None:
    """The project's state now: parses it if a file changed since the last parse or failure.

    The parse runs in one background thread of this process (the code server's, for the
    sensor): a tick waits ``wait_s`` seconds at most (None: until it ends) and returns None
    while it is still under way; a later call picks up its result.
    """
    global _pending
    if _pending is None:
        _pending = _PARSER.submit(_load_state)
    future = _pending
    try:
        state = future.result(timeout=wait_s)
    except TimeoutError:
        return None
    except Exception:
        _pending = None
        raise
    _pending = None
    return state


def parse_check_defs(keys: Sequence[dg.AssetKey]
                     ) -> tuple[dg.AssetChecksDefinition, dg.SensorDefinition]:
    """The ``dbt_project_parses`` check on ``keys`` and the sensor that evaluates it."""
    keys = sorted(keys, key=lambda k: k.to_user_string())
    specs = [dg.AssetCheckSpec(CHECK, asset=key, description=(
        "The dbt project parses: fails with the file, line and dbt's message while it does "
        "not (these assets are then the last manifest that parsed).")) for key in keys]

    @dg.multi_asset_check(specs=specs, can_subset=True, name=CHECK)
    def dbt_project_parses(context: dg.AssetCheckExecutionContext):
        """Whether the dbt project parses now (parsing it if a file changed)."""
        from orchestration.defs.dbt.state import current_state

        selected = {k.asset_key for k in context.selected_asset_check_keys}
        state = project_state()
        assert state is not None  # waited for the parse
        for evaluation in parse_evaluations([k for k in keys if k in selected], state,
                                            current_state()):
            yield dg.AssetCheckResult(
                asset_key=evaluation.asset_key, check_name=CHECK, passed=evaluation.passed,
                severity=evaluation.severity, metadata=evaluation.metadata,
                description=evaluation.description)

    @dg.sensor(name=SENSOR, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Parses the dbt project when a file of it changed and reports "
                           f"`{CHECK}` on every dbt asset (failed: file, line, dbt's message) "
                           "whenever its result changes.")
    def dbt_project_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Report ``dbt_project_parses`` when the project's state changed since the last tick."""
        from orchestration.defs.dbt.state import current_state

        state = project_state(PARSE_WAIT_S)
        if state is None:  # the cursor stays: the tick after the parse reports
            return dg.SensorResult(skip_reason=f"dbt parse of the changed project still under "
                                               f"way after {PARSE_WAIT_S:.0f} s; the next tick "
                                               "reports its result.")
        now = signature(state)
        if context.cursor == now:
            return dg.SensorResult(skip_reason="The dbt project's state is unchanged.")
        verdict = ("FAILED: " + state.failure.headline() if state.failure is not None
                   else "passed")
        return dg.SensorResult(asset_events=parse_evaluations(keys, state, current_state()),
                               cursor=now, skip_reason=f"Reported {CHECK} on {len(keys)} "
                               f"dbt assets: {verdict}")

    return dbt_project_parses, dbt_project_sensor

