"""dbt checks beside dagster-dbt's own (dbt tests, source tests included, are checks already).

* ``dbt_source_freshness`` (dagster-dbt has none): one check per replicated table whose contract
  names a ``loaded_at`` column; ``dbt source freshness`` runs once for the selected tables and
  each table reports its status (pass / warn / error), newest loaded row and age against the
  contract's ``warn_after`` / ``error_after``.
* ``freshness_check`` per daily mart: the partition due by ``TIDEMARK_MART_DEADLINE_CRON`` is
  materialised (see :mod:`orchestration.defs.dbt.freshness`).
"""

from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource

from orchestration.defs.dbt.assets import STATE, dbt_daily_marts
from orchestration.defs.dbt.freshness import mart_freshness_checks
from orchestration.defs.dbt.project import clean_invocations, invocation_dir
from orchestration.defs.ingestion.state import table_specs
from orchestration.defs.keys import table_key
from orchestration.defs.resources import TidemarkResource

CHECK = "dbt_source_freshness"


def _specs() -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(CHECK, asset=table_key(t.source, t.name), description=(
        f"dbt source freshness of {t.source}.{t.name}: newest {t.loaded_at} against the "
        f"contract's warn/error ages."))
        for t in table_specs() if t.loaded_at]


def freshness_result(key: dg.AssetKey, entry: dict[str, Any] | None) -> dg.AssetCheckResult:
    """Turn one entry of dbt's ``sources.json`` into the check result of the table ``key``."""
    name = ".".join(key.path)
    if entry is None:
        return dg.AssetCheckResult(asset_key=key, check_name=CHECK, passed=False,
                                   description=f"dbt reported nothing for {name}.")
    status = str(entry.get("status"))
    age = entry.get("max_loaded_at_time_ago_in_s")
    criteria = entry.get("criteria") or {}
    meta = {"status": status, "max_loaded_at": str(entry.get("max_loaded_at")),
            "age_s": float(age) if age is not None else -1.0,
            "warn_after": str(criteria.get("warn_after")),
            "error_after": str(criteria.get("error_after"))}
    if status == "pass":
        return dg.AssetCheckResult(asset_key=key, check_name=CHECK, passed=True, metadata=meta,
                                   description=f"newest row {age:.0f} s old")
    severity = dg.AssetCheckSeverity.WARN if status == "warn" else dg.AssetCheckSeverity.ERROR
    reason = entry.get("error") or (f"newest row is {age:.0f} s old" if age is not None else
                                    "freshness could not be measured")
    return dg.AssetCheckResult(asset_key=key, check_name=CHECK, passed=False, severity=severity,
                               metadata=meta, description=f"{status}: {reason} (criteria "
                               f"{criteria}). Is ingestion running?")


@dg.multi_asset_check(specs=_specs(), can_subset=True, name="dbt_source_freshness")
def dbt_source_freshness(context: dg.AssetCheckExecutionContext, dbt: DbtCliResource,
                         tidemark: TidemarkResource):
    """Run ``dbt source freshness`` for the selected tables and report each."""
    if STATE.failure is not None:  # dbt would stop at the same parse error
        raise dg.Failure(STATE.failure.explain(), metadata=STATE.metadata())
    keys = sorted({k.asset_key for k in context.selected_asset_check_keys},
                  key=lambda k: k.to_user_string())
    selection = " ".join(f"source:{k.path[0]}.{k.path[1]}" for k in keys)
    target = invocation_dir("dbt_source_freshness", context.run.run_id)
    invocation = tidemark.dbt_cli(dbt, ["source", "freshness", "--select", selection],
                                  target_path=target, raise_on_error=False).wait()
    try:
        results = invocation.get_artifact("sources.json").get("results", [])
    except FileNotFoundError:
        raise dg.Failure(f"dbt source freshness wrote no sources.json; see "
                         f"{target / 'dbt.log'}.") from None
    by_key = {tuple(r["unique_id"].split(".")[2:4]): r for r in results
              if r["unique_id"].startswith("source.")}
    for key in keys:
        yield freshness_result(key, by_key.get((key.path[0], key.path[1])))
    clean_invocations()


mart_freshness = mart_freshness_checks([dbt_daily_marts])
