"""``tidemark status``: one look at every layer — start-up, ingestion, live views, batch, checks.

Starts nothing: it reads what ``tidemark up`` wrote about its start
(``$TIDEMARK_HOME/up-progress.json``), the databases where the settings say they are, and the
Dagster instance under ``$TIDEMARK_HOME/dagster`` (every check's latest result, whoever ran
it). A layer that cannot be read is reported with the reason instead of failing the command.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import psycopg
import typer
from psycopg import sql
from rich.markup import escape

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.cli.slo import freshness_layer, page, show_freshness, show_verdict
from tidemark.cli.slo import show as show_slo
from tidemark.cli.status_sources import (
    demo_layer,
    sources_layer,
    utc_text,
    wal_layer,
    wal_warnings,
    watermarks_layer,
)
from tidemark.settings import Settings, load_settings
from tidemark.stack.databases import Databases, locate_databases


def _guard(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or ``{"error": why}`` when its layer cannot be read: a database that does
    not answer, or a contract file that does not load (the other layers are still shown)."""
    from contracts.errors import ContractsError
    from tidemark.reconciliation.errors import ReconciliationConfigError

    try:
        return fn(*args)
    except ReconciliationConfigError as exc:
        return {"error": f"the reconciliation pair file does not load, fix it: {exc}"}
    except ContractsError as exc:
        return {"error": f"a contract does not load, fix it: {exc} (a running ingestion keeps "
                         "the contracts it had until the folder loads again)"}
    except (psycopg.Error, OSError) as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return {"error": message}


def up_layer(settings: Settings) -> dict[str, Any] | None:
    """``tidemark up``'s own state: starting (with each phase's progress), ready, failed."""
    from tidemark.stack.display import read_status

    return read_status(settings.home)


def finality_layer(settings: Settings, dbs: Databases) -> list[dict[str, Any]] | dict[str, str]:
    """Per daily mart: last closed day, whether yesterday is closed and reconciled (final), the
    table holding the next day open (``tidemark.reconciliation.finality``)."""
    from datetime import UTC, datetime, timedelta

    from tidemark.reconciliation.days import summary
    from tidemark.reconciliation.errors import ReconciliationConfigError
    from tidemark.reconciliation.finality import read_finality
    from tidemark.reconciliation.pairs import PAIRS_FILE, load_pairs

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    paired: dict[str, list[str]] = {}
    try:
        for pair in load_pairs(settings.dbt_project_dir / PAIRS_FILE):
            paired.setdefault(pair.mart, []).append(pair.name)
    except ReconciliationConfigError:
        pass  # the reconciliation layer of the status names the broken pair file
    manifest = settings.dbt_target_dir / "manifest.json"
    if not manifest.exists():
        return {"error": "no dbt manifest: the dbt project has not parsed yet (see dbt above)"}
    reconciled: dict[str, Any] = {}
    for row in summary(dbs.landing):
        latest = row.get("latest_reconciled_day")
        if latest is not None and (reconciled.get(row["mart"]) is None
                                   or latest < reconciled[row["mart"]]):
            reconciled[row["mart"]] = latest
    out = []
    for mart, f in sorted(read_finality(dbs.landing, manifest).items()):
        closed = f.is_closed(yesterday)
        final = closed and reconciled.get(mart) is not None and reconciled[mart] >= yesterday
        out.append({"mart": mart, "closed_through": f.closed_through,
                    "yesterday": "final" if final else "closed" if closed else "open",
                    "reconciled_by": paired.get(mart, []),
                    "held_by": f.blocking or "-",
                    "watermark": utc_text(f.watermark, "%Y-%m-%d %H:%M") if f.watermark else "-"})
    return out


def views_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Deployed live views (``streaming_views.list_views``), each with the client sessions
    holding it (or its state) open in a transaction for over a minute (a redeploy waits for
    them): a BI tab, or ingestion applying a large source transaction — or stuck in one."""
    from ingestion.status import READ_LOCK_WAIT
    from streaming_views.holders import long_holders
    from streaming_views.status import list_views

    with psycopg.connect(dbs.landing, autocommit=True) as conn:
        held = long_holders(conn)
    return [{"name": v.name, "target": v.target, "rows": v.rows,
             "status": "busy" if v.status.startswith("busy:") else v.status,
             "busy": v.status if v.status.startswith("busy:") else None,
             "last_change_at": v.last_change_at, "deployed_at": v.deployed_at,
             "held_open_by": "; ".join(h.session() for h in held.get(v.name, [])) or "-"}
            for v in list_views(dbs.landing, READ_LOCK_WAIT)]


SHORT_WAIT_S = 1.0


def long_waits(waits: Any) -> tuple[Any, int]:
    """The lock waits worth showing, and how many were left out.

    A live view's clock or a writer waits for ingestion's transaction a few hundred ms at a
    time on a healthy stack; only a wait of :data:`SHORT_WAIT_S` or more is shown (``--json``
    keeps every wait). An error (a dict) is shown as it is.
    """
    if not isinstance(waits, list):
        return waits, 0
    kept = [w for w in waits if (w.get("waiting_s") or 0) >= SHORT_WAIT_S]
    return kept, len(waits) - len(kept)


def lock_waits_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Sessions of the landing database waiting for a lock, and who blocks them."""
    from streaming_views.holders import lock_waits

    with psycopg.connect(dbs.landing, autocommit=True) as conn:
        return lock_waits(conn)


def batch_layer(dbs: Databases) -> list[dict[str, Any]]:
    """Per daily mart (``marts.fct_daily_*``): its day column, latest day and days built, or
    ``busy`` (who holds it) when it stays locked past ``READ_LOCK_WAIT`` (a dbt build's swap)."""
    from ingestion.status import READ_LOCK_WAIT
    from streaming_views.status import busy_text

    out = []
    with psycopg.connect(dbs.landing, autocommit=True) as conn:
        conn.execute("select set_config('lock_timeout', %s, false)", (READ_LOCK_WAIT,))
        marts = conn.execute(
            "select c.relname, (select a.attname from pg_attribute a where a.attrelid = c.oid"
            " and a.atttypid = 'date'::regtype and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum limit 1) from pg_class c join pg_namespace n on"
            " n.oid = c.relnamespace where n.nspname = 'marts' and c.relkind = 'r'"
            " and c.relname like 'fct\\_daily\\_%' order by 1").fetchall()
        for name, day_column in marts:
            if day_column is None:
                continue
            latest = days = busy = None
            try:
                latest, days = conn.execute(sql.SQL(
                    "select max({d}), count(distinct {d}) from {t}").format(
                    d=sql.Identifier(day_column), t=sql.Identifier("marts", name))).fetchone()
            except psycopg.errors.LockNotAvailable:
                busy = busy_text(conn, f"marts.{name}", "days are not counted")
            out.append({"mart": name, "day_column": day_column, "latest_day": latest,
                        "days": days, "busy": busy})
    return out


def reconciliation_layer(settings: Settings, dbs: Databases) -> list[dict[str, Any]]:
    """Reconciliation per pair (``tidemark.reconciliation.days.summary``), with the days each
    pair can compare: ``live_keeps`` is the live view's ``live_retention_days`` from the pair
    file (``all`` without one). A view keeping 2 days compares only yesterday, which drifts
    until its correction: ``reconciled_days 0`` is then expected, and this column says why."""
    from tidemark.reconciliation.days import summary
    from tidemark.reconciliation.pairs import PAIRS_FILE, load_pairs

    pairs = load_pairs(settings.dbt_project_dir / PAIRS_FILE)
    rows = {row["pair"]: row for row in summary(dbs.landing)}
    for pair in pairs:  # a pair not compared yet (no closed day it holds) is listed too
        rows.setdefault(pair.name, {"pair": pair.name, "mart": pair.mart, "reconciled_days": 0,
                                    "drifting_days": [], "last_checked_at": None,
                                    "latest_reconciled_day": None})
    keeps = {pair.name: pair.live_retention_days for pair in pairs}
    for row in rows.values():
        days = keeps.get(row["pair"])
        row["live_keeps"] = "all" if days is None else f"{days} days"
    return sorted(rows.values(), key=lambda row: row["pair"])


def collect(settings: Settings, dbs: Databases, dagster: bool = True) -> dict[str, Any]:
    """Every layer's summary (a layer that cannot be read carries ``error``)."""
    from tidemark.stack.dagster_status import dagster_summary

    demo = _guard(demo_layer, dbs)  # None: no demo, only the user's sources
    dbt, batch = _guard(dbt_layer, settings), _guard(batch_layer, dbs)
    nothing = _guard(not_built, settings, dbs, dbt, batch)
    built = nothing is None or "error" in nothing
    return {
        "up": up_layer(settings),
        "dbt": dbt if built else nothing,
        # nothing applied for longer: the stream is stalled (an idle source gets heartbeats)
        "stalled_after_s": max(settings.lag_thresholds[0], 3 * settings.heartbeat_s),
        "ingestion": demo,
        "sources": _guard(sources_layer, dbs),
        "wal": _guard(wal_layer, dbs, int(settings.slot_wal_warn_gb * 1024**3),
                      demo is not None),
        "watermarks": _guard(watermarks_layer, dbs, None, demo is not None),
        "finality": _guard(finality_layer, settings, dbs) if built else [],
        "live_views": _guard(views_layer, dbs),
        "lock_waits": _guard(lock_waits_layer, dbs),
        "freshness": _guard(freshness_layer, settings, dbs, demo is not None),
        "batch": batch,
        "reconciliation": _guard(reconciliation_layer, settings, dbs) if built else [],
        "dagster": dagster_summary(settings) if dagster else None,
    }


def not_built(settings: Settings, dbs: Databases, dbt: dict[str, Any], batch: Any
              ) -> dict[str, Any] | None:
    """The dbt layer of a stack where the dbt project was never parsed nor built (a user with
    only their own database, no ``tidemark up``): no manifest, no parse failure, no daily
    mart and no reconciled day in landing. None when it was: then finality and reconciliation
    are shown. Otherwise the shipped project's pairs (0 days each) and a missing manifest
    would be listed as if the user had them."""
    from tidemark.reconciliation.days import summary

    if "error" in dbt or dbt.get("manifest_at") or dbt.get("failure") or \
            not isinstance(batch, list) or batch or summary(dbs.landing):
        return None
    return {**dbt, "built": False, "advice": (
        f"not built here (no manifest in {settings.dbt_target_dir}, no daily mart in landing):"
        f" no finality or reconciliation yet. `tidemark up` builds the dbt project at "
        f"{settings.dbt_project_dir}; README \"Your own database\", step 5, adds your models.")}


def dbt_layer(settings: Settings) -> dict[str, Any]:
    """Whether the dbt project parses (``orchestration.defs.dbt.state``; no parse here)."""
    from orchestration.defs.dbt.state import project_status

    return project_status(settings.dbt_project_dir, settings.dbt_target_dir)


def _show_dbt(layer: dict[str, Any] | None) -> None:
    if not layer or "error" in layer:
        return
    if layer.get("failure"):
        failure = layer["failure"]
        message = "\n".join(f"    {line}" for line in failure["message"].splitlines())
        console.print(f"[bold red]dbt project does not parse[/] at {failure['where']} (parse "
                      f"of {failure['at']}):\n{escape(message)}\n  {layer['advice']}",
                      highlight=False)
    elif layer.get("advice"):
        console.print(f"[yellow]dbt:[/] {layer['advice']}", highlight=False)


def _show_up(up: dict[str, Any] | None) -> None:
    if not up:
        return
    state = up.get("state")
    if state == "starting" and up.get("running"):
        rows = [(p["title"], p["state"], "-" if not p.get("unit") else f"{p['done']:,.0f}"
                 + (f"/{p['total']:,.0f}" if p.get("total") else "") + f" {p['unit']}",
                 p.get("detail", ""), f"{p['seconds']:.0f} s") for p in up.get("phases", [])]
        emit_table("tidemark up is starting", ["phase", "state", "progress", "now", "time"],
                   rows)
    elif state == "failed":
        console.print(f"[red]tidemark up failed:[/] {up.get('error')}", highlight=False)
    elif state == "ready" and up.get("running"):
        console.print(f"tidemark up is running (ready since {up.get('ready_at')}).")
    elif state in ("starting", "ready"):  # its process is gone without saying it stopped
        console.print(f"[yellow]tidemark up (pid {up.get('pid')}) is not running:[/] it ended "
                      f"without stopping (killed?) while {state}"
                      + (f", ready since {up['ready_at']}" if up.get("ready_at") else "")
                      + ". What it started may still run (the database, as `tidemark db "
                      "status` shows); `tidemark up` starts everything again and takes over "
                      "the database.", highlight=False)


def expected_in_demo(row: dict[str, Any], demo: dict[str, Any] | None) -> str | None:
    """Why a failing check is what the running demo load does on purpose, or None: only the
    ``dead_letters`` WARN of the demo's outbox table, whose events are malformed by design."""
    if not demo or row["check"] != "dead_letters" or row["severity"] != "WARN" \
            or row["asset"] != f"{demo['source']}/{demo['table']}":
        return None
    return (f"Expected in the demo: its load writes {demo['malformed_share']:.0%} of the "
            f"{demo['table']} events malformed on purpose; dead letters in any other table "
            f"need action")


def _show_checks(dag: dict[str, Any], demo: dict[str, Any] | None = None) -> None:
    checks = dag.get("checks")
    if checks is None:
        if dag.get("checks_error"):
            console.print(f"[red]checks:[/] {dag['checks_error']}", highlight=False)
        return
    by_name: dict[str, Counter] = {}
    for row in checks:
        name = "dbt tests" if not _platform_check(row["check"]) else row["check"]
        outcome = _outcome(row)
        by_name.setdefault(name, Counter())[outcome] += 1
    emit_table("checks (latest result of each)", ["check", *OUTCOMES],
               [(name, *(c[o] for o in OUTCOMES)) for name, c in sorted(by_name.items())])
    failing = [r for r in checks if r["passed"] is False or r["status"] == "execution_failed"]
    if failing:
        emit_table("failing checks", ["asset", "check", "severity", "evaluated_at", "why"],
                   [(r["asset"], r["check"], r["severity"] or "ERROR", r["evaluated_at"],
                     ". ".join(filter(None, (expected_in_demo(r, demo), _why(r)))))
                    for r in failing])


def _why(row: dict[str, Any]) -> str | None:
    if row["status"] == "execution_failed":
        return (f"not evaluated: its run {row['run_id'][:8]} failed before it ran (see the run "
                f"in the Dagster UI); the next run evaluates it again")
    return row["description"]


OUTCOMES = ("passed", "warn", "error", "running", "skipped", "never")


def _outcome(row: dict[str, Any]) -> str:
    """A check's latest result in one word (see :data:`OUTCOMES`)."""
    if row["status"] in ("never", "skipped"):
        return row["status"]
    if row["passed"] is None:
        return "error" if row["status"] in ("failed", "execution_failed") else "running"
    return "passed" if row["passed"] else (row["severity"] or "error").lower()


def _platform_check(name: str) -> bool:
    return name in ("ingestion_lag", "dead_letters", "watermark_delay", "dbt_source_freshness",
                    "matches_query",
                    "hydrated_and_current", "freshness_check",
                    "freshness_slo") or name.startswith("reconcile_")


EMPTY = {
    "watermarks": "none (no contract of a source here names an event-time column)",
    "finality": "none (no daily mart in the dbt manifest)",
    "live_views": "none deployed (`tidemark views deploy`)",
    "batch": "none built (no marts.fct_daily_* table)",
    "reconciliation": "none (no pair in the dbt project's reconciliation.yml)",
}
"""What an empty layer says instead of an empty table."""


def _show(summary: dict[str, Any]) -> None:
    _show_up(summary.get("up"))
    _show_dbt(summary.get("dbt"))
    ing = summary["ingestion"]
    others = summary.get("sources")
    others = others if isinstance(others, list) else []
    if ing is not None and "error" in ing:
        console.print(f"[red]ingestion:[/] {ing['error']}")
    elif ing is None and not others and not isinstance(summary.get("sources"), dict):
        console.print("ingestion: no source registered. Add your database with `tidemark "
                      "source add` (README, \"Your own database\"), or start the demo with "
                      "`tidemark up`.", highlight=False)
    else:
        rows = [row for row in [ing, *others] if row is not None and "error" not in row]
        emit_table("ingestion", ["source", "streaming", "lag s", "lag bytes", "rows/s",
                                 "applied s ago", "dead letters", "paused"],
                   [(row["source"], row["slot_active"], row["lag_seconds"], row["lag_bytes"],
                     row["rows_per_s"], row.get("seconds_since_last_apply"),
                     row["dead_letters"],
                     ", ".join(p["table"] + (" (resyncing by itself)" if p.get("automatic")
                                             else "") for p in row["paused_tables"]) or "-")
                    for row in rows])
        for row in rows:
            idle = row.get("seconds_since_last_apply")
            if row.get("lock_wait"):  # why nothing lands: said with what to do
                console.print(f"[yellow]stalled:[/] {escape(row['lock_wait']['message'])}",
                              highlight=False)
            elif row.get("busy"):  # applying one long transaction: not stalled, not stopped
                console.print(f"[yellow]source {escape(row['source'])}:[/] "
                              f"{escape(row['busy']['message'])}", highlight=False)
            elif idle is not None and idle > summary.get("stalled_after_s", 60.0) \
                    and "problem" not in row:
                console.print(f"[red]source {row['source']}:[/] nothing applied for {idle:.0f} "
                              f"s (a running ingestion lands a heartbeat on an idle source): "
                              f"its lag s and rows/s are the last transaction's. Is ingestion "
                              f"running? `tidemark ingest status`, logs/ingest.log")
        for row in others:
            if "error" in row or "problem" in row:
                console.print(f"[red]source {row['source']}:[/] "
                              f"{row.get('error') or row['problem']}")
    wal = summary.get("wal")
    for line in wal_warnings(wal if isinstance(wal, list) else []):
        console.print(f"[bold yellow]WAL:[/] {escape(line)}", highlight=False)
    if isinstance(summary.get("sources"), dict):
        console.print(f"[red]sources:[/] {summary['sources']['error']}")
    for key, title, columns in (
            ("watermarks", "watermarks, UTC (event time − allowed lateness; delay_s = now − "
             "watermark, so it counts the lateness)",
             ["table", "watermark", "allowed_lateness_s", "delay_s", "state", "idle",
              "late_rows", "late_days"]),
            ("finality", "finality, UTC days (a day is final once closed by the watermarks "
             "and reconciled)", ["mart", "closed_through", "yesterday", "reconciled_by", "held_by",
                   "watermark"]),
            ("live_views", "live views", ["name", "target", "status", "rows",
                                          "last_change_at", "held_open_by"]),
            ("lock_waits", "lock waits (landing: who blocks whom)", [
                "waiting_pid", "waiting_application", "waiting_s", "query", "blocked_by"]),
            ("freshness", None, None),
            ("batch", "daily marts", ["mart", "day_column", "latest_day", "days"]),
            ("reconciliation", "reconciliation (a live view keeping N days compares only the"
             " closed days it still holds)", ["pair", "mart", "live_keeps", "reconciled_days",
                                              "drifting_days", "last_checked_at"])):
        layer = summary[key]
        if key in ("finality", "batch", "reconciliation") and \
                (summary.get("dbt") or {}).get("built") is False:
            continue  # no dbt here: the dbt line says so once
        if key == "lock_waits":
            layer, short = long_waits(layer)
            if not layer:
                continue  # nobody waits, or only for a moment: nothing to say
            if short:
                title += f"; {short} shorter than {SHORT_WAIT_S:g} s not shown"
        if title is None:
            show_freshness(layer)
        elif layer == []:
            console.print(f"{title.split(' (')[0].split(',')[0]}: {EMPTY[key]}", highlight=False)
        elif isinstance(layer, dict) and "error" in layer:
            console.print(f"[red]{title}:[/] {escape(str(layer['error']))}", highlight=False)
        else:
            emit_table(title, columns, [[row.get(c) for c in columns] for row in layer])
            for row in layer:  # a view or mart locked past the read's lock wait: who holds it
                if row.get("busy"):
                    console.print(f"[yellow]{escape(row['busy'])}[/]", highlight=False)
    dag = summary.get("dagster")
    if dag and "error" not in dag:
        emit_table("dagster runs (latest per job)", ["job", "status", "days", "trigger",
                                                      "started_at"],
                   [(j, r["status"], "..".join(d or "" for d in r["partition_range"]) or "-",
                     r["trigger"], r["started_at"]) for j, r in dag["latest_runs"].items()])
        _show_checks(dag, (summary.get("up") or {}).get("demo"))
    elif dag:
        console.print(f"dagster: {dag['error']}")


def status(json_out: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
           = False,
           slo: Annotated[bool, typer.Option("--slo", help="Only the SLO page: is the "
                                             "freshness promise kept (live views, ingestion "
                                             "lag, watermarks, mart deadlines).")] = False
           ) -> None:
    """Summarise every layer: start-up, ingestion lag, live views, batch, every check, runs."""
    settings = load_settings()
    summary = collect(settings, locate_databases(settings))
    summary["slo"] = page(summary, settings)
    if json_out:
        emit_json(summary["slo"] if slo else summary)
    elif slo:
        show_slo(summary["slo"])
    else:
        _show(summary)
        show_verdict(summary["slo"], "; details: `tidemark status --slo`.")

