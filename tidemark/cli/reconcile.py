"""``tidemark reconcile``: the reconciliation of live against truth (retry given-up corrections).

A correction run that fails is asked again by the correction sensor after a backoff, at most
``TIDEMARK_CORRECTION_ATTEMPTS`` times per day of a mart; then the sensor stops asking and the
mart's reconciliation check is an ERROR naming the days. Once the cause is fixed,
``tidemark reconcile retry`` clears those days' count, so the sensor asks again at its next tick.
The reconciliation job's own failed runs are asked again the same way, at most that many in a
row; ``tidemark reconcile retry --job`` makes them count from zero again.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from tidemark.cli.output import console, emit_json, emit_table

app = typer.Typer(help="Reconciliation of live views against the daily marts.",
                  no_args_is_help=True)


def parse_days(values: list[str] | None) -> list[date]:
    """``DAYS``: ISO dates (``2026-12-03``), each checked."""
    days = []
    for value in values or []:
        try:
            days.append(date.fromisoformat(value.strip()))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a day: write it as YYYY-MM-DD, e.g. "
                                     f"2026-12-03", param_hint="DAYS") from None
    return days


def mart_name(value: str | None) -> str | None:
    """``--mart``: a mart of dbt_project/reconciliation.yml (``marts.`` prefix optional)."""
    if value is None:
        return None
    from tidemark.reconciliation.pairs import load_pairs

    name = value.strip().removeprefix("marts.")
    marts = sorted({p.mart for p in load_pairs()})
    if name not in marts:
        raise typer.BadParameter(f"{value!r} is not a reconciled mart; the marts of "
                                 f"reconciliation.yml are {', '.join(marts)}",
                                 param_hint="--mart")
    return name


@app.command()
def retry(days: Annotated[list[str] | None, typer.Argument(
              help="Days (YYYY-MM-DD) to ask a correction for again.", show_default=False)
          ] = None,
          mart: Annotated[str | None, typer.Option(
              help="Only this mart (default: every mart).")] = None,
          all_: Annotated[bool, typer.Option(
              "--all", help="Every day whose correction runs failed.")] = False,
          job: Annotated[bool, typer.Option(
              "--job", help="Also the reconciliation job itself, given up after its runs "
                            "failed: the sensor launches it again.")] = False,
          dsn: Annotated[str | None, typer.Option(
              "--dsn", help="The landing database (default: the stack's).")] = None,
          json_out: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
          = False) -> None:
    """Ask again for the corrections the sensor gave up on (after the cause is fixed).

    Clears the count of failed correction runs of the days (given up, or waiting for their
    backoff): the correction sensor asks for them at its next tick (within a minute while
    `tidemark up` runs). A day that then reconciles is final again. With --job, the
    reconciliation job's own failed runs no longer count either, and the sensor launches the
    job again if its last run failed.
    """
    from tidemark.reconciliation.days import given_up, retry_corrections
    from tidemark.reconciliation.errors import NothingToRetryError
    from tidemark.settings import load_settings
    from tidemark.stack.databases import ensure_databases

    wanted = parse_days(days)
    if wanted and all_:
        raise typer.BadParameter("name days or pass --all, not both", param_hint="--all")
    name = mart_name(mart)
    landing = dsn or ensure_databases(load_settings()).landing_app
    if job:
        _retry_job(landing, json_out and not wanted and not all_)
        if not wanted and not all_:
            return
    if not wanted and not all_:
        stuck = given_up(landing)
        listed = "; ".join(g.message().split(":")[0] for g in stuck) or "none"
        raise NothingToRetryError(
            f"name the days to retry (YYYY-MM-DD ...) or pass --all. Given up now: {listed}.")
    done = retry_corrections(landing, wanted or None, name)
    if json_out:
        emit_json([{"mart": r.mart, "day": r.day, "failed_runs": r.attempts,
                    "last_failed_run": r.last_run} for r in done])
        return
    left = sorted(set(wanted) - {r.day for r in done})
    if not done and job:  # the job was asked again: said above
        return
    if not done:
        stuck = given_up(landing)
        listed = "; ".join(g.message().split(":")[0] for g in stuck) or "none"
        which = ", ".join(d.isoformat() for d in wanted) or "any day"
        raise NothingToRetryError(
            f"no correction run failed for {which}{f' of marts.{name}' if name else ''} "
            f"(or one is queued or running): nothing to retry. Given up now: {listed}. "
            f"`tidemark status` lists the failing reconciliation checks.")
    emit_table("corrections asked again", ["mart", "day", "failed runs", "last failed run"],
               [(f"marts.{r.mart}", r.day, r.attempts, r.last_run or "") for r in done])
    console.print("The correction sensor asks for these days at its next tick (within a "
                  "minute while `tidemark up` runs); the reconciliation check turns green "
                  "once they reconcile.", highlight=False)
    if left:
        console.print(f"Nothing to retry for {', '.join(d.isoformat() for d in left)}: no "
                      f"correction run failed for them, or one is queued or running.",
                      highlight=False)


def _retry_job(landing: str, json_out: bool) -> None:
    """``--job``: the reconciliation job's failed runs so far no longer count; the correction
    sensor launches the job at its next tick if its last run failed."""
    from datetime import UTC

    from tidemark.reconciliation.days import RECONCILIATION_JOB, ask_job_again

    at = ask_job_again(landing, RECONCILIATION_JOB).astimezone(UTC)
    if json_out:
        emit_json({"job": RECONCILIATION_JOB, "asked_at": at.isoformat()})
        return
    console.print(f"The {RECONCILIATION_JOB} job is asked again (at {at:%Y-%m-%d %H:%M:%S} "
                  f"UTC): its failed runs so far no longer count, and the correction sensor "
                  f"launches it at its next tick if its last run failed (within a minute "
                  f"while `tidemark up` runs).", highlight=False)
