"""Backfills a stop interrupted: found at the next start, re-launched once they have ended.

``tidemark up`` cancels the runs in flight when it stops (:func:`tidemark.stack.dagster_proc.
cancel_active_runs`), so a backfill launched from the Dagster UI loses the partitions it was
building: at the next start the daemon sees their runs CANCELED and ends the backfill
COMPLETED_FAILED, and the user has to notice it and re-launch it by hand. A data engineer who
pressed Ctrl-C expects the next ``tidemark up`` to finish what they asked for.

The stop records the runs it canceled (:func:`remember_stopped`). At the next start, before
the daemon runs, :func:`interrupted_backfills` names the backfills with such a run. Once the
webserver answers, :func:`resume_backfills` waits for each to end (the daemon finishes the
partitions it had not launched) and re-executes it *from failure* through the webserver's
GraphQL API, as the UI's "Re-execute" button does: a new backfill of what was not built, tagged
with its parent. A backfill the user canceled, or one the daemon finished anyway (its
partitions built by other runs), is left alone.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from threading import Event, Thread
from typing import Any

BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { id status title } ... on PythonError { message } } }
"""
REEXECUTE = """
mutation($id: String!) {
  reexecutePartitionBackfill(reexecutionParams: {parentRunId: $id, strategy: FROM_FAILURE}) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }
"""
ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RETRIED = {"COMPLETED_FAILED", "FAILED"}  # CANCELED: the user canceled the backfill itself


@dataclass(frozen=True)
class Interrupted:
    """A backfill the last stop interrupted.

    Attributes:
        backfill_id: its id (Dagster UI: Overview → Backfills).
        unfinished: how many of its runs the stop ended unfinished (canceled, or failed by a
            killed ``tidemark up``).
    """

    backfill_id: str
    unfinished: int


STOPPED_RUNS = "tidemark-stopped-runs.json"  # in the Dagster home: the runs a stop canceled
RECENT = 50  # backfills looked at, newest first


def remember_stopped(dagster_home: Path, run_ids: list[str]) -> None:
    """Record the runs a stop canceled (:func:`tidemark.stack.dagster_proc.cancel_active_runs`)
    for the next start; a stop that canceled none leaves no record."""
    if run_ids:
        (dagster_home / STOPPED_RUNS).write_text(json.dumps(run_ids))


def interrupted_backfills(instance: Any, stopped: set[str]) -> list[Interrupted]:
    """The backfills the last stop interrupted, read before the daemon starts.

    Such a backfill has a run the stop canceled (``stopped``): the daemon may have ended the
    backfill COMPLETED_FAILED before it stopped too. A backfill still in progress with a run
    :func:`tidemark.stack.dagster_proc.end_interrupted_runs` ended (a killed ``tidemark up``,
    which recorded nothing) counts too. A backfill the user canceled does not.
    """
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    found = []
    for backfill in instance.get_backfills(limit=RECENT):
        if backfill.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.COMPLETED_FAILED,
                                   BulkActionStatus.FAILED):
            continue
        ended = [r.dagster_run.run_id for r in instance.get_run_records(filters=RunsFilter(
            tags={"dagster/backfill": backfill.backfill_id},
            statuses=[DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE]))]
        ours = [r for r in ended if r in stopped]
        if not ours and backfill.status == BulkActionStatus.REQUESTED:
            ours = ended
        if ours:
            found.append(Interrupted(backfill.backfill_id, len(ours)))
    return found


def find_interrupted(dagster_home: Path) -> list[Interrupted]:
    """:func:`interrupted_backfills` of the instance in ``dagster_home`` (prepared by
    :func:`tidemark.stack.dagster_proc.prepare_dagster_home`); the stop's record is consumed."""
    from dagster import DagsterInstance

    record = dagster_home / STOPPED_RUNS
    try:
        stopped = set(json.loads(record.read_text()))
    except (OSError, ValueError):
        stopped = set()
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        found = interrupted_backfills(instance, stopped)
    record.unlink(missing_ok=True)
    return found


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a GraphQL answer (the webserver answers a PythonError with HTTP 500 and
    the error in its body)."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read()).get("data") or {}
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}").get("data") or {}


def _status(url: str, backfill_id: str) -> tuple[str | None, str | None]:
    """(status, title) of a backfill; (None, None) when the webserver does not know it."""
    found = _graphql(url, BACKFILL_STATUS, {"id": backfill_id}).get(
        "partitionBackfillOrError") or {}
    return found.get("status"), found.get("title")


def resume_backfills(url: str, interrupted: list[Interrupted], say: Callable[[str], None],
                     stop: Event, poll_s: float = 5.0) -> list[str]:
    """Re-execute each interrupted backfill from failure once it has ended; return the new ids.

    Runs until every backfill is handled or ``stop`` is set. Each outcome is said in a line of
    ``tidemark up``'s output; a webserver that does not answer is retried at the next poll.
    """
    waiting = {i.backfill_id: i for i in interrupted}
    launched: list[str] = []
    while waiting and not stop.is_set():
        for backfill_id, item in list(waiting.items()):
            answer = None
            try:
                status, title = _status(url, backfill_id)
                if status in RETRIED:
                    answer = _graphql(url, REEXECUTE, {"id": backfill_id}).get(
                        "reexecutePartitionBackfill") or {}
            except (urllib.error.URLError, OSError, ValueError):
                continue  # asked again at the next poll
            if status is not None and status not in ENDED:
                continue  # the daemon is still finishing it
            waiting.pop(backfill_id)
            if answer is None:  # unknown, finished by the daemon, or canceled by the user
                continue
            name = f"{backfill_id} ({title})" if title else backfill_id
            if answer.get("__typename") == "LaunchBackfillSuccess":
                launched.append(answer["backfillId"])
                say(f"Backfill {name} was interrupted by the last stop ({item.unfinished} "
                    f"run(s) ended unfinished): re-launched what it had not built as backfill "
                    f"{answer['backfillId']} (Dagster UI: Overview → Backfills).")
            else:
                say(f"Backfill {name} was interrupted by the last stop and could not be "
                    f"re-launched: {answer.get('message') or answer}. Re-execute it from "
                    f"the Dagster UI (Overview → Backfills → its menu → Re-execute).")
        stop.wait(poll_s)
    return launched


def resume_in_background(url: str, interrupted: list[Interrupted], say: Callable[[str], None],
                         stop: Event) -> Thread | None:
    """:func:`resume_backfills` in a daemon thread that ends with the stack (``stop``); None
    when nothing was interrupted."""
    if not interrupted:
        return None
    thread = Thread(target=resume_backfills, args=(url, interrupted, say, stop),
                    name="resume-backfills", daemon=True)
    thread.start()
    return thread
