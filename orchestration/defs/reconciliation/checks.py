"""Reconciliation checks: ``reconcile_<pair>`` on ``marts/<mart>`` (with ``live/<view>`` as
extra dependency).

Every closed day of the window (closed: the watermarks of every table the mart reads passed the
day's end, ``tidemark.reconciliation.finality``) is compared with the pair's tolerances; ERROR
when a day drifts, WARN ("correction pending") when every drifted day is explained by late rows
landed after the day's reconciliation (``tidemark.reconciliation.late``): the correction sensor
re-runs those days.
Metadata: a per-day table (groups, drifted groups, live / truth / difference totals per
measure), the drifted rows (day, key, measure, live, truth, difference) and the drifted days.
The outcome per day goes to ``tidemark.reconciled_days``.
"""


from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from orchestration.defs.keys import check_name, mart_key, view_key
from orchestration.defs.resources import TidemarkResource
from tidemark.reconciliation.compare import Comparison, closed_window, compare
from tidemark.reconciliation.days import record_days
from tidemark.reconciliation.finality import mart_event_tables, read_finality
from tidemark.reconciliation.late import explain_late_drift
from tidemark.reconciliation.pairs import load_pairs


def _specs() -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(
        check_name(p.name), asset=mart_key(p.mart), additional_deps=[view_key(p.live_view)],
        description=f"live.{p.live_view} against marts.{p.mart} per closed {p.day_column}, "
                    f"keys {', '.join(p.keys)}, measures "
                    f"{', '.join(m.name for m in p.measures)} (reconciliation.yml).")
        for p in load_pairs()]


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def check_result(comparison: Comparison) -> dg.AssetCheckResult:
    """Turn a comparison into a check result with per-day and per-row table metadata."""
    pair = comparison.pair
    measures = [m.name for m in pair.measures]
    day_columns = [dg.TableColumn("day", "date"), dg.TableColumn("groups", "int"),
                   dg.TableColumn("drifted_groups", "int"), dg.TableColumn("status")]
    for m in measures:
        day_columns += [dg.TableColumn(f"{m}_live", "float"),
                        dg.TableColumn(f"{m}_truth", "float"),
                        dg.TableColumn(f"{m}_difference", "float")]
    day_rows = []
    for d in comparison.days:
        status = ("reconciled" if d.reconciled else "late: correction pending"
                  if d.day in comparison.late else "drift")
        values: dict[str, Any] = {"day": d.day.isoformat(), "groups": d.groups,
                                  "drifted_groups": d.drifted_groups, "status": status}
        for m in measures:
            live, truth = d.totals[m]
            values.update({f"{m}_live": float(live), f"{m}_truth": float(truth),
                           f"{m}_difference": float(live - truth)})
        day_rows.append(dg.TableRecord(values))
    drift_columns = [dg.TableColumn(k) for k in pair.keys] + [
        dg.TableColumn("measure"), dg.TableColumn("live", "float"),
        dg.TableColumn("truth", "float"), dg.TableColumn("difference", "float")]
    drift_rows = [dg.TableRecord({**{k: r[k] for k in pair.keys}, "measure": r["measure"],
                                  "live": _num(r["live"]), "truth": _num(r["truth"]),
                                  "difference": _num(r["difference"])})
                  for r in comparison.drift]
    drifted = [d.isoformat() for d in comparison.drifted_days]
    unexplained = [d.isoformat() for d in comparison.unexplained_days]
    late = {d.isoformat(): v.late_rows for d, v in sorted(comparison.late.items())}
    metadata = {
        "days": dg.TableMetadataValue(day_rows, dg.TableSchema(columns=day_columns)),
        "drift": dg.TableMetadataValue(drift_rows, dg.TableSchema(columns=drift_columns)),
        "drifted_days": dg.JsonMetadataValue(drifted),
        "late_days": dg.JsonMetadataValue(late),
        "days_compared": len(comparison.days),
    }
    parts = []
    if unexplained:
        parts.append(f"live.{pair.live_view} and marts.{pair.mart} differ beyond tolerance on "
                     f"{len(unexplained)} day(s): {', '.join(unexplained)}; the correction "
                     f"sensor re-runs the mart for those days.")
    if late:
        counts = ", ".join(f"{d}: {n} late row(s)" for d, n in late.items())
        parts.append(f"{len(late)} day(s) differ because late rows landed after their "
                     f"reconciliation ({counts}): correction pending, the correction sensor "
                     f"re-runs the mart for them.")
    if not drifted:
        parts.append(f"{len(comparison.days)} closed day(s) agree within tolerance."
                     if comparison.days else "no closed days to compare yet.")
    severity = dg.AssetCheckSeverity.ERROR if unexplained else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(asset_key=mart_key(pair.mart), check_name=check_name(pair.name),
                               passed=not drifted, severity=severity,
                               metadata=metadata, description=" ".join(parts))


def reconcile_pairs(tidemark: TidemarkResource, names: list[str] | None = None,
                    today: datetime | None = None) -> list[Comparison]:
    """Compare and record every pair (or ``names``) over its closed-day window."""
    landing = tidemark.urls().landing_app
    today_d = (today or datetime.now(UTC)).date()
    from orchestration.defs.dbt.project import manifest_path

    final = read_finality(landing, manifest_path())
    tables = mart_event_tables(manifest_path())
    out = []
    for pair in load_pairs():
        if names is not None and pair.name not in names:
            continue
        retention = pair.live_retention_days  # @retention applies on both engines
        closed = final[pair.mart].closed_through if pair.mart in final else None
        first, last = closed_window(today_d, tidemark.reconcile_window(), retention, closed)
        comparison = compare(landing, pair, first, last)
        explain_late_drift(landing, comparison, tables.get(pair.mart, []))
        record_days(landing, comparison)
        out.append(comparison)
    return out


@dg.multi_asset_check(specs=_specs(), can_subset=True, name="reconciliation_checks")
def reconciliation(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """Reconcile the selected pairs, live against truth, for every closed day."""
    wanted = {k.name.removeprefix("reconcile_") for k in context.selected_asset_check_keys}
    for comparison in reconcile_pairs(tidemark, sorted(wanted)):
        yield check_result(comparison)
