"""``tidemark dagster``: Dagster's run history in ``$TIDEMARK_HOME/dagster`` (prune)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from tidemark.cli.ingest import JsonOpt, parse_age
from tidemark.cli.output import console, emit_json, emit_table

app = typer.Typer(help="Dagster's run history (the runs `tidemark up` and its UI record).",
                  no_args_is_help=True)


def dagster_home_to_prune() -> Path:
    """``DAGSTER_HOME`` when set (docker compose, a user's own), else ``tidemark up``'s
    ``$TIDEMARK_HOME/dagster``; a home without ``dagster.yaml`` is refused."""
    from tidemark.errors import DagsterRetentionError
    from tidemark.settings import load_settings

    home = Path(os.environ.get("DAGSTER_HOME") or load_settings().dagster_home)
    if not (home / "dagster.yaml").exists():
        raise DagsterRetentionError(
            f"No Dagster home at {home} (no dagster.yaml): nothing to prune. `tidemark up` "
            f"creates $TIDEMARK_HOME/dagster; set TIDEMARK_HOME, or DAGSTER_HOME for another "
            f"instance.")
    return home


@app.command()
def prune(older_than: Annotated[str | None, typer.Option(
              "--older-than", help="Delete runs that ended longer ago than this, e.g. 7d, 12h "
                                   "(default: TIDEMARK_RUN_RETENTION_DAYS days, 7; 0 keeps "
                                   "every run).")] = None,
          dry_run: Annotated[bool, typer.Option(
              "--dry-run", help="Only print the runs that would be deleted.")] = False,
          json_out: JsonOpt = False) -> None:
    """Delete old Dagster runs whose every partition, check and status a later run holds."""
    from tidemark.settings import load_settings
    from tidemark.stack.dagster_retention import KEPT_PER_JOB, prune_home

    settings = load_settings()
    if older_than is None:
        age = timedelta(days=settings.run_retention_days)
    elif older_than.strip() == "0":
        age = timedelta(0)
    else:
        age = parse_age(older_than, "--older-than")
    plan = prune_home(dagster_home_to_prune(), age, dry_run=dry_run,
                      keep_per_job=max(KEPT_PER_JOB, settings.correction_attempts))
    if json_out:
        emit_json({"dry_run": dry_run, "cutoff": plan.cutoff, "bytes_freed": plan.bytes_freed,
                   "seconds": round(plan.seconds, 3), "kept": plan.kept,
                   "deleted": [vars(r) for r in plan.delete]})
        return
    if age <= timedelta(0):
        console.print("Retention 0: every run is kept.", highlight=False)
        return
    if dry_run and plan.delete:
        emit_table("runs that would be deleted", ["run", "job", "status", "ended (UTC)",
                                                  "partitions"],
                   [(r.run_id, r.job_name, r.status, f"{r.ended_at:%Y-%m-%d %H:%M}",
                     r.partitions) for r in plan.delete])
    console.print(plan.summary(dry_run=dry_run), highlight=False)
