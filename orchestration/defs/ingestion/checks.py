"""Ingestion checks per table: ``ingestion_lag`` (paused, or lag over the thresholds),
``dead_letters`` (WARN while unreplayed dead letters exist) and, for tables with an event-time
column, ``watermark_delay`` (the watermark's delay over the contract's thresholds)."""

import dagster as dg

from orchestration.defs.ingestion.assets import states
from orchestration.defs.ingestion.state import TableState, table_specs
from orchestration.defs.keys import table_key
from orchestration.defs.resources import TidemarkResource

LAG_CHECK = "ingestion_lag"
DEAD_LETTER_CHECK = "dead_letters"
WATERMARK_CHECK = "watermark_delay"


def _check_specs() -> list[dg.AssetCheckSpec]:
    out = []
    for t in table_specs():
        key = table_key(t.source, t.name)
        out.append(dg.AssetCheckSpec(LAG_CHECK, asset=key, description=(
            "Fails when the table is paused or ingestion lags more than the error threshold "
            "(the last transaction's lag, or source changes waiting to land).")))
        out.append(dg.AssetCheckSpec(DEAD_LETTER_CHECK, asset=key, description=(
            "Warns while the table has dead letters (contract violations) not yet replayed.")))
        if t.event_time:
            out.append(dg.AssetCheckSpec(WATERMARK_CHECK, asset=key, description=(
                f"Watermark delay (now − (max {t.event_time} landed − allowed lateness)): warns "
                f"or fails when it exceeds the lateness by the contract's freshness "
                f"thresholds. Days close only when watermarks pass their end.")))
    return out


def watermark_evaluation(state: TableState) -> dg.AssetCheckEvaluation:
    """The ``watermark_delay`` outcome of one table (see ``ingestion.watermarks``)."""
    key = table_key(state.source, state.table)
    w = state.watermark or {}
    meta = {k: v for k, v in state.metadata().items() if k.startswith(("watermark", "late"))}
    outcome = w.get("state", "unknown")
    if outcome == "ok":
        return dg.AssetCheckEvaluation(
            key, WATERMARK_CHECK, passed=True, metadata=meta,
            description=f"{state.table}: watermark {w['watermark']:%Y-%m-%d %H:%M:%S} UTC, "
                        f"{w['delay_s']:.0f} s behind now.")
    if outcome == "unknown":
        return dg.AssetCheckEvaluation(
            key, WATERMARK_CHECK, passed=False, metadata=meta,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{state.table} has no watermark yet: no event landed since the "
                        f"snapshot and the source has not committed since. Is ingestion "
                        f"running?")
    severity = dg.AssetCheckSeverity.ERROR if outcome == "error" else \
        dg.AssetCheckSeverity.WARN
    return dg.AssetCheckEvaluation(
        key, WATERMARK_CHECK, passed=False, metadata=meta, severity=severity,
        description=f"{state.table}'s watermark is {w['delay_s']:.0f} s behind now (allowed "
                    f"lateness {w['allowed_lateness_s']:.0f} s): days stay open. Is ingestion "
                    f"running, does the source still produce {w['event_column']}?")


def lag_evaluation(state: TableState, warn_s: float, error_s: float) -> dg.AssetCheckEvaluation:
    """The ``ingestion_lag`` outcome of one table, with the reason in the description."""
    meta = {**state.metadata(), "warn_after_s": warn_s, "error_after_s": error_s}
    key = table_key(state.source, state.table)
    if state.paused_reason and state.resyncing:  # nobody needs to act: a warning
        return dg.AssetCheckEvaluation(
            key, LAG_CHECK, passed=False, metadata=meta, severity=dg.AssetCheckSeverity.WARN,
            description=f"{state.table} is being copied again by Tidemark itself, nothing to "
                        f"do: {state.paused_reason}")
    if state.paused_reason:
        return dg.AssetCheckEvaluation(
            key, LAG_CHECK, passed=False, metadata=meta, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{state.table} is paused: {state.paused_reason} Fix the cause, then "
                        f"run the ingestion_resync job (or `tidemark ingest resync "
                        f"{state.table}`).")
    lag = state.lag_s
    if lag > warn_s:
        severity = dg.AssetCheckSeverity.ERROR if lag > error_s else dg.AssetCheckSeverity.WARN
        limit = error_s if lag > error_s else warn_s
        return dg.AssetCheckEvaluation(
            key, LAG_CHECK, passed=False, metadata=meta, severity=severity,
            description=f"{state.table} lags {lag:.1f} s (over {limit:g} s): source changes "
                        f"have waited {float(state.pending_s or 0):.1f} s to land. Is "
                        f"`tidemark ingest run` (or the ingestion_catch_up job) running?")
    busy = f"; {state.busy}" if state.busy else ""  # what was not read, and why
    return dg.AssetCheckEvaluation(key, LAG_CHECK, passed=True, metadata=meta,
                                   description=f"{state.table} lags {lag:.1f} s{busy}.")


def dead_letter_evaluation(state: TableState, grew_by: int = 0) -> dg.AssetCheckEvaluation:
    """The ``dead_letters`` outcome of one table (WARN while unreplayed letters exist)."""
    meta = {"dead_letters": state.dead_letters, "new_since_last_check": grew_by}
    key = table_key(state.source, state.table)
    if state.dead_letters == 0:
        return dg.AssetCheckEvaluation(key, DEAD_LETTER_CHECK, passed=True, metadata=meta,
                                       description="No dead letters.")
    return dg.AssetCheckEvaluation(
        key, DEAD_LETTER_CHECK, passed=False, metadata=meta,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{state.dead_letters} dead letters in {state.table}"
                    + (f" ({grew_by} new)" if grew_by else "")
                    + "; inspect with `tidemark dlq list`, fix the contract or the source, then "
                      "run the dead_letter_replay job.")


def _as_result(evaluation: dg.AssetCheckEvaluation) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=evaluation.asset_key,
                               check_name=evaluation.check_name, passed=evaluation.passed,
                               severity=evaluation.severity, description=evaluation.description,
                               metadata=evaluation.metadata)


@dg.multi_asset_check(specs=_check_specs(), can_subset=True, name="ingestion_checks")
def ingestion_checks(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """Lag and dead-letter checks of the selected replicated tables."""
    warn_s, error_s = tidemark.lag_thresholds()
    selected = context.selected_asset_check_keys
    read = states(tidemark, {k.asset_key for k in selected})
    for key, state in read.items():
        if dg.AssetCheckKey(key, LAG_CHECK) in selected:
            yield _as_result(lag_evaluation(state, warn_s, error_s))
        if dg.AssetCheckKey(key, DEAD_LETTER_CHECK) in selected:
            yield _as_result(dead_letter_evaluation(state))
        if dg.AssetCheckKey(key, WATERMARK_CHECK) in selected:
            yield _as_result(watermark_evaluation(state))
    for check in sorted(selected, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        if check.asset_key not in read:  # contracts of a source that is not registered
            yield dg.AssetCheckResult(
                asset_key=check.asset_key, check_name=check.name, passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"Source {check.asset_key.path[0]!r} is not registered: its "
                            f"contracts are not ingested. Register it (tidemark source add) "
                            f"or remove its contracts directory.")
