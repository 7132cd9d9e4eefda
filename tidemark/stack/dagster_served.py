"""What the running Dagster UI of ``tidemark up`` answers, for ``tidemark status``.

One GraphQL request for the check keys of its code location, one for the latest run of each
job and the latest execution of every check, read as :mod:`tidemark.stack.dagster_status`
reads the instance (same rows). No Dagster import: ``None`` whenever the UI does not answer, is
another home's, or has no code location loaded, and the status reads the instance instead.
"""

from __future__ import annotations

import json
import urllib.error
from typing import Any

from tidemark.settings import Settings
from tidemark.stack.dagster_proc import _graphql, ui_url
from tidemark.stack.dagster_status import JOBS, check_row, run_row

SERVED_CHECKS = """
{ instance { info }
  assetNodes { assetKey { path }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }
"""
RUN = ('{alias}: runsOrError(filter: {{pipelineName: {job}}}, limit: 1) {{ ... on Runs {{ '
       'results {{ runId status startTime tags {{ key value }} }} }} }}')
EXECUTION = ('{alias}: assetCheckExecutions(assetKey: {{path: {path}}}, checkName: {name}, '
             'limit: 1) {{ runId status timestamp evaluation {{ success severity '
             'description }} }}')
# GraphQL resolves a planned execution against its run, as dagster_status._resolved does.
STATUS = {"IN_PROGRESS": "planned", "SUCCEEDED": "succeeded", "FAILED": "failed",
          "EXECUTION_FAILED": "execution_failed", "SKIPPED": "skipped"}
ERRORS = (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError)
SUMMARY_TIMEOUT_S = 120.0
"""How long the summary may take once the UI has answered the check keys: it resolves the
latest execution of every check one by one (~160 at the demo), 13-17 s on two cores at a load of
50 (bench/RESULTS.md e36), whatever the history. At the 10 s of the first request it timed out,
and the status then read the same from the instance after importing Dagster: 57 s in all."""


def served_checks(settings: Settings) -> list[tuple[list[str], str]] | None:
    """(asset key path, check name) of every check the UI's code location defines, or None."""
    try:
        data = _graphql(ui_url(settings), SERVED_CHECKS)
        if f"base_dir: {settings.dagster_home}\n" not in data["instance"]["info"]:
            return None  # a UI on this port serving another home
        nodes = data["assetNodes"] or []
        answers = [n["assetChecksOrError"] for n in nodes]
    except ERRORS:
        return None
    if not nodes or any(a.get("__typename") != "AssetChecks" for a in answers):
        return None
    return [(n["assetKey"]["path"], c["name"])
            for n, a in zip(nodes, answers, strict=True) for c in a["checks"]]


def served_summary(settings: Settings) -> dict[str, Any] | None:
    """``latest_runs`` and ``checks`` as :func:`~tidemark.stack.dagster_status.dagster_summary`
    gives them, from the running UI; None when it cannot answer."""
    keys = served_checks(settings)
    if keys is None:
        return None
    keys.sort(key=lambda k: ("/".join(k[0]), k[1]))
    parts = [RUN.format(alias=f"r{i}", job=json.dumps(job)) for i, job in enumerate(JOBS)]
    parts += [EXECUTION.format(alias=f"c{i}", path=json.dumps(path), name=json.dumps(name))
              for i, (path, name) in enumerate(keys)]
    try:
        data = _graphql(ui_url(settings), "{ " + "\n".join(parts) + " }",
                        timeout_s=SUMMARY_TIMEOUT_S)
        runs = {}
        for i, job in enumerate(JOBS):
            results = data[f"r{i}"]["results"]
            if results:
                run = results[0]
                runs[job] = run_row(run["status"], run["runId"],
                                    {t["key"]: t["value"] for t in run["tags"]},
                                    run["startTime"])
        checks = []
        for i, (path, name) in enumerate(keys):
            asset = "/".join(path)
            if not data[f"c{i}"]:
                checks.append(check_row(asset, name))
                continue
            ex = data[f"c{i}"][0]
            ev = ex["evaluation"] or {}
            checks.append(check_row(asset, name, STATUS[ex["status"]], ex["runId"],
                                    ex["timestamp"], ev.get("success"), ev.get("severity"),
                                    ev.get("description")))
    except ERRORS:
        return None
    return {"latest_runs": runs, "checks": checks}
