"""Reconciliation checks: ``reconcile_<pair>`` on ``marts/<mart>`` (with ``live/<view>`` as
extra dependency).

Every closed day of the window (closed: the watermarks of every table the mart reads passed the
day's end, ``tidemark.reconciliation.finality``) the mart has built is compared with the pair's
tolerances; ERROR when a day drifts, WARN ("correction pending") when every drifted day is
explained by late rows landed after the day's reconciliation, or after it closed for a day never
reconciled (``tidemark.reconciliation.late``):
the correction sensor re-runs those days. A closed day no run has built yet is set aside and
said (``unbuilt_days``), and so is a drifted day last built before it closed
(``built_open_days``).
Metadata: a per-day table (groups, drifted groups, live / truth / difference totals per
measure), the drifted rows (day, key, measure, live, truth, difference) and the drifted days.
The outcome per day goes to ``tidemark.reconciled_days``.
"""


from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dagster as dg

from orchestration.defs.keys import check_name, mart_key, view_key
from orchestration.defs.reconciliation.runs import (
    UNFINISHED,
    building_days,
    note_later_rebuilds,
    queued_days,
    set_aside_built_open,
    set_aside_unbuilt,
)
from orchestration.defs.resources import TidemarkResource
from tidemark.reconciliation.compare import Comparison, closed_window, compare
from tidemark.reconciliation.days import GivenUp, given_up, record_days, requested_corrections
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


def _stores(comparison: Comparison) -> str:
    """Where: the keys (other than the day) of the first drifted rows, e.g. " (store_id 3)"."""
    pair, shown = comparison.pair, []
    for row in comparison.drift:
        key = ", ".join(f"{k} {row[k]}" for k in pair.keys if k != pair.day_column)
        if key and row[pair.day_column] in {d.isoformat() for d in comparison.unexplained_days} \
                and key not in shown:
            shown.append(key)
    more = " ..." if len(shown) > 5 else ""
    return f" ({'; '.join(shown[:5])}{more}; rows in the drift table)" if shown else ""


def _way_forward(comparison: Comparison) -> str:
    """What to do about the unexplained drifted days: which side is wrong, what repairs it."""
    pair, days = comparison.pair, comparison.unexplained_days
    view = pair.live_view
    if comparison.live_wrong:
        return (f"live.{view} itself is wrong there: {comparison.live_wrong} (`tidemark views "
                f"verify {view}` shows them). Re-running the mart cannot fix that: rebuild the "
                f"view with `tidemark views rebuild {view}` (or materialise live/{view} in "
                f"Dagster), then run the reconciliation job.")
    fresh = [d for d in days if d not in comparison.requested and d not in comparison.queued]
    queued = [d for d in days if d in comparison.queued]
    redone = [d for d in days if d in comparison.requested and d not in comparison.queued]
    out = []
    if fresh:
        checked = f" (live.{view} equals its query there)" if comparison.live_wrong == "" \
            else ""
        out.append(f"the correction sensor re-runs marts.{pair.mart} for {_iso(fresh)}, "
                   f"rebuilding those days from landing{checked}.")
    if queued:
        out.append(f"a run of marts.{pair.mart} for {_iso(queued)} (a correction, or a "
                   f"closure run) is queued or running.")
    if redone:
        since = min(comparison.requested[d] for d in redone)
        checked = f", and live.{view} equals its query" if comparison.live_wrong == "" else ""
        out.append(f"{_iso(redone)} still differ after marts.{pair.mart} was re-run for them "
                   f"(correction requested {since:%Y-%m-%d %H:%M} UTC){checked}: re-running "
                   f"does not fix it. Compare the view's file with the mart's SQL (a definition "
                   f"differs) and `tidemark views verify {view}`; after the fix re-run those "
                   f"days (the daily_marts job or a backfill of the partitions).")
    return " ".join(out)


def _late_said(comparison: Comparison) -> str:
    """The drifted days late rows explain: those that had reconciled ("landed after their
    reconciliation") apart from those that never did (the rows landed after the day closed;
    it was never reconciled, so not "after their reconciliation")."""
    def counts(days: list) -> str:
        return ", ".join(f"{d.day.isoformat()}: {d.late_rows} late row(s)" for d in days)

    late = [comparison.late[d] for d in sorted(comparison.late)]
    since = [d for d in late if d.reconciled_at is not None]
    never = [d for d in late if d.reconciled_at is None]
    said = []
    if since:
        said.append(f"{len(since)} day(s) differ because late rows landed after their "
                    f"reconciliation ({counts(since)})")
    if never:
        said.append(f"{len(never)} day(s) not reconciled yet differ by late rows landed after "
                    f"they closed ({counts(never)})")
    return f"{'; '.join(said)}: correction pending, the correction sensor re-runs the mart for " \
           f"them."


def _iso(days: list) -> str:
    return ", ".join(d.isoformat() for d in days)


def check_result(comparison: Comparison, stuck: GivenUp | None = None) -> dg.AssetCheckResult:
    """Turn a comparison into a check result with per-day and per-row table metadata; an ERROR
    naming the run and what to do when the correction sensor gave up on drifted days of the
    mart (``stuck``: its correction runs kept failing)."""
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
    if comparison.live_wrong is not None:
        metadata["live_view_matches_query"] = not comparison.live_wrong
    parts = []
    if unexplained:
        parts.append(f"live.{pair.live_view} and marts.{pair.mart} differ beyond tolerance on "
                     f"{len(unexplained)} day(s): {', '.join(unexplained)}"
                     f"{_stores(comparison)}; {_way_forward(comparison)}")
    if late:
        parts.append(_late_said(comparison))
    abandoned = sorted(set(stuck.days) & set(comparison.drifted_days)) if stuck else []
    if abandoned:
        metadata["correction_given_up_days"] = dg.JsonMetadataValue(_iso(abandoned).split(", "))
        parts.insert(0, f"No correction is coming for {_iso(abandoned)}: {stuck.message()}")
    if not drifted:
        parts.append(f"{len(comparison.days)} closed day(s) agree within tolerance."
                     if comparison.days else "no closed days to compare yet.")
    if comparison.unbuilt:
        metadata["unbuilt_days"] = dg.JsonMetadataValue(_iso(comparison.unbuilt).split(", "))
        parts.append(f"Not compared: {_iso(comparison.unbuilt)} closed but marts.{pair.mart} "
                     f"has not built them yet (closed_days_sensor asks for their run; "
                     f"they are reconciled after it).")
    if comparison.built_open:
        metadata["built_open_days"] = dg.JsonMetadataValue(
            _iso(comparison.built_open).split(", "))
        parts.append(f"Not compared: {_iso(comparison.built_open)} closed after marts."
                     f"{pair.mart} last built them (rows landed in between; closed_days_sensor "
                     f"asks for their run; they are reconciled after it).")
    severity = dg.AssetCheckSeverity.ERROR if unexplained or abandoned \
        else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(asset_key=mart_key(pair.mart), check_name=check_name(pair.name),
                               passed=not drifted, severity=severity,
                               metadata=metadata, description=" ".join(parts))


def live_side(tidemark: TidemarkResource, comparison: Comparison) -> None:
    """Whether the live view is wrong on the unexplained drifted days (embedded engine): its
    rows there that differ from its own query (``streaming_views.verify``), kept in
    ``comparison.live_wrong``."""
    days = set(comparison.unexplained_days)
    if not days or tidemark.target() != "embedded":
        return
    from streaming_views import verify
    from streaming_views.errors import ViewNotFoundError

    view = comparison.pair.live_view
    try:
        [result] = verify(tidemark.urls().landing_app, view)
    except ViewNotFoundError:
        comparison.live_wrong = f"live.{view} is not deployed"
        return
    if result.problem:
        comparison.live_wrong = f"it no longer follows its tables ({result.problem})"
        return
    if result.interrupted:  # gave way to ingestion's schema change: not checked this time
        return
    at = result.columns.index(comparison.pair.day_column)
    extra = sum(row[at] in days for row in result.extra)
    missing = sum(row[at] in days for row in result.missing)
    comparison.live_wrong = "" if not extra + missing else (
        f"{extra} row(s) of those days are only in the view and {missing} only in its query "
        f"over the landed tables")


def reconcile_pairs(tidemark: TidemarkResource, names: list[str] | None = None,
                    today: datetime | None = None, instance: dg.DagsterInstance | None = None,
                    run_id: str | None = None) -> list[Comparison]:
    """Compare and record every pair (or ``names``) over its closed-day window.

    For drift late data does not explain, also: which days had a correction already
    (``tidemark.reconciled_days``), which a correction run not finished yet (other than
    ``run_id``) of ``instance`` will rebuild, and whether the live view is wrong there. A day
    whose correction runs failed and that a run of ``instance`` rebuilt since (a re-run from
    the UI) counts as corrected then (:func:`note_later_rebuilds`). Closed days the mart has no
    row of and ``instance`` never built are set aside (:func:`set_aside_unbuilt`), and so
    are drifted days last built before they could close (:func:`set_aside_built_open`).
    """
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
        if instance is not None:  # a given-up day the user re-ran is corrected, not given up
            note_later_rebuilds(instance, landing, pair.mart)
        comparison = compare(landing, pair, first, last)
        set_aside_unbuilt(instance, comparison)
        set_aside_built_open(instance, landing, comparison, tables.get(pair.mart, []))
        explain_late_drift(landing, comparison, tables.get(pair.mart, []))
        if comparison.unexplained_days:
            requested_corrections(landing, comparison)
            waiting = queued_days(instance, UNFINISHED, run_id).get(pair.mart, set()) | \
                building_days(instance, run_id).get(pair.mart, set())
            comparison.queued = {d for d in comparison.drifted_days if d.isoformat() in waiting}
            live_side(tidemark, comparison)
        record_days(landing, comparison)
        out.append(comparison)
    return out


@dg.multi_asset_check(specs=_specs(), can_subset=True, name="reconciliation_checks")
def reconciliation(context: dg.AssetCheckExecutionContext, tidemark: TidemarkResource):
    """Reconcile the selected pairs, live against truth, for every closed day."""
    wanted = {k.name.removeprefix("reconcile_") for k in context.selected_asset_check_keys}
    comparisons = reconcile_pairs(tidemark, sorted(wanted), instance=context.instance,
                                  run_id=context.run.run_id)
    stuck = {g.mart: g for g in given_up(tidemark.urls().landing_app)}
    for comparison in comparisons:
        yield check_result(comparison, stuck.get(comparison.pair.mart))
