"""The SLO page of ``tidemark status`` (``--slo``): is the freshness promise kept, at a glance.

One verdict, then the promises it is made of:

- **live views** — each view's freshness objective (``@freshness``, else
  ``TIDEMARK_FRESHNESS_OBJECTIVE``) against the source commit → visible-in-view latency measured
  all the time (``tidemark.slo.freshness``): p50/p95/p99 over 5 min and 1 h;
- **ingestion lag** — the last transaction's lag and the silence since the last landing,
  against ``TIDEMARK_INGEST_LAG_WARN_S`` / ``_ERROR_S``;
- **watermarks** — each event-time table's watermark delay against its contract;
- **daily marts** — whether yesterday is final, and the mart deadline checks' latest result
  (``freshness_check``, evaluated by Dagster).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tidemark.cli.output import console, emit_table
from tidemark.settings import Settings
from tidemark.slo.freshness import NOT_DEPLOYED
from tidemark.stack.databases import Databases


def freshness_layer(settings: Settings, dbs: Databases, with_demo: bool = True
                    ) -> list[dict[str, Any]]:
    """Each live view against its freshness objective (``tidemark.slo.freshness``).

    Without ``TIDEMARK_VIEWS_DIR`` the view files are the shipped ones, the demo's: when the
    demo is not there (``with_demo`` False: a user with only their own database) those not
    deployed are not the user's and are left out (a deployed one is a live view here and is
    judged).
    """
    from streaming_views.viewfile import load_views
    from tidemark.slo.freshness import evaluate

    judged = [f.as_dict() for f in evaluate(
        dbs.landing, load_views(settings.views_dir),
        default_objective=settings.freshness_objective,
        window_s=settings.freshness_window_s, heartbeat_s=settings.heartbeat_s)]
    if settings.views_dir is None and not with_demo:
        return [f for f in judged if f["state"] != NOT_DEPLOYED]
    return judged


def _lag_state(ing: dict[str, Any], settings: Settings) -> str:
    warn, error = settings.lag_thresholds
    lag = max(float(ing.get("lag_seconds") or 0), 0.0)
    if ing.get("checkpoint_lsn") is None:
        return "unknown"
    silent = float(ing.get("seconds_since_last_apply") or 0)
    worst = max(lag, silent - settings.heartbeat_s)
    return "error" if worst > error else "warn" if worst > warn else "ok"


def _or_dash(value: Any) -> Any:
    """``-`` for a number not known yet (no transaction landed), else the number."""
    return "-" if value is None else value


ACTIVE_RUN = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
IN_PROGRESS = ("correcting", "checking", "waiting")


def _active_runs(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs in flight among the latest run of each job (run id -> run, with its job)."""
    latest = (summary.get("dagster") or {}).get("latest_runs") or {}
    return {r["run_id"]: {**r, "job": job} for job, r in latest.items()
            if r.get("status") in ACTIVE_RUN}


def _rebuilding(runs: dict[str, dict[str, Any]], day: str) -> dict[str, Any] | None:
    """The run in flight that builds the marts' partition ``day`` (ISO), if any."""
    for run in runs.values():
        first, last = (run.get("partition_range") or [None, None])[:2]
        if run["job"] in ("daily_marts", "nightly_batch") and first and last \
                and first <= day <= last:
            return run
    return None


def _run_when(run: dict[str, Any]) -> str:
    """A run in flight's state and start as a reason says it: "started at <UTC time>", or
    "queued, not started yet" for a run the queue holds (it has no start time)."""
    if not run.get("started_at"):
        return ("queued, not started yet" if run["status"] in ("QUEUED", "NOT_STARTED")
                else run["status"].lower())
    return f"{run['status'].lower()} at {run['started_at']}"


def _holding_watermarks(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The watermark rows of ``status`` by the name a finality row's ``held_by`` gives a table
    (``<source>.<table>``; the demo's and a lone source's rows name the table alone)."""
    rows = summary.get("watermarks") if isinstance(summary.get("watermarks"), list) else []
    return {w["table"]: w for w in rows}


def _open_on_schedule(f: dict[str, Any], marks: dict[str, dict[str, Any]]) -> str | None:
    """Why an open yesterday is on schedule, or None when it may be late.

    Yesterday closes once the watermark of the table holding it passes midnight UTC, which is
    the table's allowed lateness after midnight when its events come on time: until then an
    open yesterday is what the contracts promise, not a risk. It is on schedule while that
    watermark's own state is ``ok`` (its delay within the allowed lateness and the contract's
    ``warn_after``); a watermark that falls behind is said by its own promise, and yesterday is
    then at risk too.
    """
    held = str(f.get("held_by") or "")
    mark = marks.get(held) or marks.get(held.partition(".")[2])
    if mark is None or mark.get("state") != "ok":
        return None
    lateness_h = float(mark.get("allowed_lateness_s") or 0) / 3600
    return (f"yesterday closes when the watermark of {held} ({f.get('watermark', '-')}) passes "
            f"midnight UTC, about {lateness_h:g} h after it (the table's allowed lateness): on "
            f"schedule, its watermark is ok")


def _yesterday(f: dict[str, Any], runs: dict[str, dict[str, Any]] | None = None,
               demo: dict[str, Any] | None = None,
               marks: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """State and reason of a mart's yesterday (a row of ``status``'s finality layer); a day
    waiting for its reconciliation while a run in flight rebuilds it is ``correcting``, an open
    day whose holding watermark is on time is ``waiting`` (``marks``: the watermark rows by
    table, :func:`_holding_watermarks`)."""
    from datetime import UTC, datetime, timedelta

    pairs = ", ".join(f.get("reconciled_by") or [])
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    run = _rebuilding(runs or {}, yesterday) if f["yesterday"] == "closed" and pairs else None
    if run is not None:
        why = (f"yesterday is closed by the watermarks; {run['job']} run {run['run_id'][:8]} "
               f"({run['trigger']}, {_run_when(run)}) rebuilds it, "
               f"then {pairs} reconcile it")
        if demo and run["trigger"] == "reconciliation_corrections":
            why += (f" (expected in the demo: its load places "
                    f"{demo.get('beyond_lateness_share', 0):.0%} of orders on days already "
                    f"closed, so late rows start a correction every few minutes)")
        return {"state": "correcting", "why": why}
    if f["yesterday"] == "final":
        return {"state": "ok", "why": f"yesterday is final: closed by the watermarks and "
                                      f"reconciled ({pairs})"}
    if f["yesterday"] == "closed" and not pairs:
        return {"state": "ok", "why": "yesterday is closed by the watermarks (no live view "
                                      "reconciles this mart)"}
    if f["yesterday"] == "closed":
        return {"state": "pending", "why": f"yesterday is closed by the watermarks, not "
                                           f"reconciled yet ({pairs}): the nightly batch or "
                                           f"closed_days_sensor builds and checks it"}
    waiting = _open_on_schedule(f, marks or {})
    if waiting is not None:
        return {"state": "waiting", "why": waiting}
    return {"state": "open", "why": f"yesterday is still open: closed through "
                                    f"{f['closed_through']}, held by the watermark of "
                                    f"{f['held_by']} ({f.get('watermark', '-')})"}


def page(summary: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The SLO page from ``tidemark status``'s layers: a verdict and the rows behind it."""
    promises: list[dict[str, Any]] = []
    fresh = summary.get("freshness")
    if isinstance(fresh, list):
        for f in fresh:
            if f["state"] == NOT_DEPLOYED:
                continue  # a view file only: no view, no promise
            promises.append({"promise": f"live.{f['view']} {f['objective']}",
                             "state": f["state"], "why": f["reason"]})
    others = summary.get("sources") if isinstance(summary.get("sources"), list) else []
    for ing in [summary.get("ingestion"), *others]:  # the demo's (if there) and the user's
        if ing is None or "error" in ing:
            continue
        state = _lag_state(ing, settings)
        promises.append({"promise": f"ingestion lag of {ing.get('source')}", "state": state,
                         "why": f"lag {_or_dash(ing.get('lag_seconds'))} s, last landing "
                                f"{_or_dash(ing.get('seconds_since_last_apply'))} s ago (warn "
                                f"{settings.lag_thresholds[0]:g} s, error "
                                f"{settings.lag_thresholds[1]:g} s)"
                                + (f"; {ing['lock_wait']['message']}" if ing.get("lock_wait")
                                   else "")})
    for w in summary.get("watermarks") if isinstance(summary.get("watermarks"), list) else []:
        promises.append({"promise": f"watermark of {w['table']}", "state": w["state"],
                         "why": f"{w['delay_s']} s behind now"})
    runs = _active_runs(summary)
    demo = (summary.get("up") or {}).get("demo")
    marks = _holding_watermarks(summary)
    for f in summary.get("finality") if isinstance(summary.get("finality"), list) else []:
        promises.append({"promise": f"{f['mart']}: yesterday",
                         **_yesterday(f, runs, demo, marks)})
    dag = summary.get("dagster") or {}
    for row in dag.get("checks") or []:
        if row["check"] == "freshness_check":
            state = "unknown" if row["passed"] is None else "ok" if row["passed"] else "missed"
            why = row["description"] or row["status"]
            if row["status"] == "execution_failed":
                why = (f"not evaluated: its run {row['run_id'][:8]} failed before it ran; the "
                       f"next run evaluates it")
            if row["status"] == "planned" and row.get("run_id"):  # its run is still going
                run = runs.get(row["run_id"])
                state, why = "checking", (f"evaluated by run {row['run_id'][:8]}" + (
                    f" ({run['job']}, {_run_when(run)})"
                    if run else ", in progress"))
            promises.append({"promise": f"{row['asset']} deadline", "state": state,
                             "why": why})
    bad = [p for p in promises if p["state"] in ("missed", "error")]
    warn = [p for p in promises if p["state"] in ("warn", "unknown", "open", "pending")]
    verdict = "missed" if bad else "at risk" if warn else "kept"
    return {"verdict": verdict, "missed": len(bad), "at_risk": len(warn),
            "promises": promises, "freshness": fresh}


def show_verdict(slo: dict[str, Any], hint: str = "") -> None:
    """The page's one-line verdict (``hint``: appended, e.g. where the details are)."""
    colour = {"kept": "green", "at risk": "yellow", "missed": "red"}[slo["verdict"]]
    busy = Counter(p["state"] for p in slo["promises"] if p["state"] in IN_PROGRESS)
    doing = ("; in progress, not at risk: " + ", ".join(
        f"{n} {state}" for state, n in sorted(busy.items()))) if busy else ""
    console.print(f"[bold]freshness promise:[/] [{colour}]{slo['verdict'].upper()}[/] "
                  f"({slo['missed']} missed, {slo['at_risk']} at risk{_states(slo)}, "
                  f"{_count(len(slo['promises']), 'promise')}{doing}){hint}", highlight=False)


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 promise", "3 promises"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _states(slo: dict[str, Any]) -> str:
    """The at-risk promises by the state the table shows them in, e.g. ``: 2 pending, 1 unknown``
    (the verdict counts them; the reader looks for these words in the table)."""
    counts = Counter(p["state"] for p in slo["promises"]
                     if p["state"] in ("warn", "unknown", "open", "pending"))
    return ": " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) if counts else ""


def show(slo: dict[str, Any]) -> None:
    """Print the SLO page for a person."""
    show_verdict(slo)
    show_freshness(slo["freshness"])
    emit_table("every promise", ["promise", "state", "why"],
               [(p["promise"], p["state"], p["why"]) for p in slo["promises"]])


def show_freshness(fresh: Any) -> None:
    """The live views' freshness table (source commit → visible in the view, seconds)."""
    if isinstance(fresh, dict) and "error" in fresh:
        console.print(f"[red]freshness:[/] {fresh['error']}", highlight=False)
        return
    if fresh == []:
        console.print("live view freshness: none (no live view deployed; set "
                      "TIDEMARK_VIEWS_DIR to your view files' folder and status judges them)",
                      highlight=False)
        return
    deployed = [f for f in fresh or [] if f["state"] != NOT_DEPLOYED]
    if deployed or not fresh:
        emit_table("live view freshness (source commit → visible in view, s)",
                   ["view", "objective", "p50 5m", "p95 5m", "p99 5m", "p95 1h", "samples 5m",
                    "silent s", "state"],
                   [(f["view"], f["objective"] + ("" if f["declared"] else " (default)"),
                     f.get("p50_5min"), f.get("p95_5min"), f.get("p99_5min"), f.get("p95_1h"),
                     f.get("samples_5min"), f["silent_s"], f["state"]) for f in deployed])
    idle = [f["view"] for f in fresh or [] if f["state"] == NOT_DEPLOYED]
    if idle:
        console.print(f"live view freshness: {_count(len(idle), 'view file')} "
                      f"{'is' if len(idle) == 1 else 'are'} not deployed, so no "
                      f"promise is judged for them ({', '.join(idle)}); `tidemark views "
                      f"deploy` deploys them.", highlight=False)
