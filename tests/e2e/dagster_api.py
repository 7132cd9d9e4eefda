"""The Dagster webserver's GraphQL API, as a user's script would drive it (no in-process Dagster).

Runs are launched through ``dagster_graphql.DagsterGraphQLClient`` (the official client of the
webserver's API); run status and asset check executions are read with plain GraphQL queries.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterApiError(RuntimeError):
    """The webserver answered with an error (its message is included)."""


LOCKED_TRIES = 3
"""Answers of SQLite's "database is locked" tried this many times, 5 s apart: the instance of
``tidemark up`` is SQLite, whose writers (webserver, daemon, runs) wait 5 s at most for each
other, a limit a CI's load can reach; a user would press the button again."""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None,
            timeout_s: float = 30.0) -> dict[str, Any]:
    """POST ``query`` to ``<url>/graphql`` and return its ``data``.

    Raises:
        DagsterApiError: the answer carries GraphQL errors, or is an HTTP error (its body, the
            webserver's own message, is included).
    """
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    for attempt in range(1, LOCKED_TRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                answer = json.loads(response.read())
            break
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if "database is locked" not in text or attempt == LOCKED_TRIES:
                raise DagsterApiError(f"HTTP {exc.code} from {url}/graphql: {text[:2000]}") \
                    from None
            time.sleep(5)
    if answer.get("errors"):
        raise DagsterApiError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def launch_job(url: str, job: str, tags: dict[str, str] | None = None) -> str:
    """Launch ``job`` of the code location with ``tags``; return the run id."""
    from dagster_graphql import DagsterGraphQLClient

    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port), timeout=60)
    return client.submit_job_execution(job, tags=tags or {})


RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on PythonError { message }
  }
}
"""


def run_info(url: str, run_id: str) -> dict[str, Any]:
    """Status, job name and tags of a run."""
    run = graphql(url, RUN_QUERY, {"runId": run_id})["runOrError"]
    if run["__typename"] != "Run":
        raise DagsterApiError(f"run {run_id}: {run}")
    return run


def wait_run(url: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll a run until it ends (or ``timeout_s`` passes); return its last info."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = run_info(url, run_id)
        if run["status"] in TERMINAL or time.monotonic() >= deadline:
            return run
        time.sleep(1.0)


RUNS_QUERY = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 20) {
    __typename
    ... on Runs { results { runId status jobName creationTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""


def runs(url: str, job: str | None = None, statuses: list[str] | None = None
         ) -> list[dict[str, Any]]:
    """The newest runs (of ``job``), newest first."""
    flt: dict[str, Any] = {}
    if job:
        flt["pipelineName"] = job
    if statuses:
        flt["statuses"] = statuses
    answer = graphql(url, RUNS_QUERY, {"filter": flt})["runsOrError"]
    if answer["__typename"] != "Runs":
        raise DagsterApiError(f"runs: {answer}")
    return answer["results"]


CHECKS_QUERY = """
query Checks($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 10) {
    runId status timestamp
    evaluation { success severity description }
  }
}
"""


def check_executions(url: str, asset_key: list[str], check: str) -> list[dict[str, Any]]:
    """Executions of the asset check ``check`` on ``asset_key``, newest first."""
    return graphql(url, CHECKS_QUERY, {"key": {"path": asset_key}, "check": check}
                   )["assetCheckExecutions"]


def tag(run: dict[str, Any], key: str) -> str | None:
    """A run's tag value, or None."""
    return next((t["value"] for t in run.get("tags", []) if t["key"] == key), None)


ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    isObservable
    assetMaterializations(limit: 1) { timestamp }
    assetObservations(limit: 1) { timestamp }
    partitionKeys
    partitionStats { numMaterialized numMaterializing numPartitions numFailed }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
  }
}
"""


def asset_nodes(url: str) -> dict[str, dict[str, Any]]:
    """Every asset the UI shows, by ``a/b`` key: materialised / observed, partitions, checks."""
    nodes = graphql(url, ASSETS_QUERY, timeout_s=60)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def latest_check(url: str, asset_key: list[str], check: str) -> dict[str, Any] | None:
    """The latest execution of a check (what its row in the UI shows), or None."""
    found = check_executions(url, asset_key, check)
    return found[0] if found else None


def latest_evaluated_check(url: str, asset_key: list[str], check: str) -> dict[str, Any] | None:
    """The latest execution of a check that has an evaluation, else the latest, else None.

    A run re-evaluating a check (a correction, the observer's next pass) has no evaluation while
    in flight; the check was evaluated all the same by the execution before it.
    """
    found = check_executions(url, asset_key, check)
    return next((e for e in found if e["evaluation"] is not None), found[0] if found else None)
