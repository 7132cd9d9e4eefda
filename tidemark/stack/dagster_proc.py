"""Dagster for ``tidemark up``: its home, the webserver and the daemon as supervised children.

``DAGSTER_HOME`` is ``$TIDEMARK_HOME/dagster`` (SQLite storage there, so runs, schedules and
sensor cursors survive a restart). The storage is created once, before any Dagster process
starts; ``tidemark up`` then starts the webserver early (it loads the code location while the
data is built), runs its own builds in process against the same instance, and starts the daemon
(schedules, sensors, automation) last. The UI listens on 127.0.0.1 at ``TIDEMARK_DAGSTER_PORT``.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tidemark.errors import DagsterStartError
from tidemark.reconciliation.tags import CORRECTION_SLOTS, CORRECTION_TAG
from tidemark.settings import Settings
from tidemark.stack.dbt import environment, installed_executable
from tidemark.stack.supervisor import Child, Supervisor

CODE_LOCATION = "orchestration.definitions"
GRPC_TIMEOUT_S = 300
# The correction runs (tag CORRECTION_TAG, set by the reconciliation_corrections sensor) share
# CORRECTION_SLOTS of the run slots, so a user's run or backfill always finds the other (README
# "Daily truth"). Tag and limit come from tidemark.reconciliation.tags.
CORRECTION_LIMIT = f"""\
  # Late-data and drift corrections take at most one slot (README "Daily truth"):
  tag_concurrency_limits:
    - key: {CORRECTION_TAG}
      limit: {CORRECTION_SLOTS}
"""
# A loaded machine can take minutes to import the code location (Dagster, dbt): a run the
# daemon could not hand to the code server in time used to fail at once ("Failed to start",
# its checks "not evaluated"), and the daemon gave up on a code server after 180 s.
SLOW_CODE_SERVER = """\
  # A run whose code server does not answer yet (a loaded machine) is tried again, 5 times
  # 30 s apart, instead of failing at once:
  max_user_code_failure_retries: 5
  user_code_failure_retry_delay: 30
"""
CODE_SERVER_STARTUP = """\
# The daemon's and the UI's code server may take this long to start (Dagster's default: 180 s):
code_servers:
  local_startup_timeout: 600
"""
# Dagster's SQLite storage as earlier versions named it (Dagster's own class), and as today's do:
# the same files, one SQLAlchemy engine per file in every Dagster process
# (tidemark.stack.dagster_storage).
SQLITE_STORAGE = """\
storage:
  sqlite:
    base_dir: {storage}
"""
STORAGE_HEAD = """\
# Dagster's SQLite storage (same files), with one SQLAlchemy engine per file in each process:
storage:
  custom:
    module: tidemark.stack.dagster_storage
    class: SharedEngineSqliteStorage
    config:
      base_dir: """
DAGSTER_YAML = """\
# Written by `tidemark up`; edit freely, it is not overwritten.
""" + STORAGE_HEAD + """{storage}
run_queue:
  max_concurrent_runs: 2
""" + CORRECTION_LIMIT + SLOW_CODE_SERVER + CODE_SERVER_STARTUP + """\
telemetry:
  enabled: false
# No "Join the Dagster community" sign-up dialog over the asset catalog at the first visit:
nux:
  enabled: false
# Sensor and schedule tick history (Dagster's default keeps every tick that did something):
retention:
  schedule:
    purge_after_days: 90
  sensor:
    purge_after_days:
      skipped: 7
      success: 30
      failure: 30
"""


def check_port_free(port: int) -> None:
    """Raise a clear error if something listens on 127.0.0.1:``port`` already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of a previous run left in TIME_WAIT do not make the port
        # "taken"; a process listening on it still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DagsterStartError(
                f"Port {port} on 127.0.0.1 is taken, so the Dagster UI cannot start there. Stop "
                f"what uses it or set TIDEMARK_DAGSTER_PORT to a free port.") from None


def dagster_home(settings: Settings) -> Path:
    """``$TIDEMARK_HOME/dagster`` with a ``dagster.yaml`` (written once if missing)."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    text = DAGSTER_YAML.format(storage=home / "storage")
    # A file still as an earlier `tidemark up` wrote it (Dagster's own SQLite storage class,
    # without the correction limit or without the slow code server's settings) gets today's;
    # a file the user edited is theirs. The storage's files stay where they are.
    if not config.exists() or config.read_text(encoding="utf-8") in _earlier(text):
        config.write_text(text, encoding="utf-8")
    return home


def _earlier(text: str) -> set[str]:
    """The texts earlier versions of ``tidemark up`` wrote where today's writes ``text``."""
    head, rest = text.split(STORAGE_HEAD, 1)
    storage, tail = rest.split("\n", 1)
    sqlite = head + SQLITE_STORAGE.format(storage=storage) + tail
    without_slow = sqlite.replace(SLOW_CODE_SERVER + CODE_SERVER_STARTUP, "")
    return {sqlite, without_slow, without_slow.replace(CORRECTION_LIMIT, "")}


def prepare_dagster_home(settings: Settings) -> Path:
    """The Dagster home with its storage created (or migrated), before any process starts.

    The webserver and the daemon would otherwise both create a fresh SQLite storage at the same
    moment and can trip over each other (a table created twice, two migration heads).
    """
    from dagster import DagsterInstance

    home = dagster_home(settings)
    with environment({"DAGSTER_HOME": str(home)}):
        instance = DagsterInstance.get()
        try:
            end_interrupted_runs(instance)
        finally:
            instance.dispose()
    return home


def end_interrupted_runs(instance: Any) -> list[str]:
    """End the runs an earlier ``tidemark up`` left executing or cancelling; return their ids.

    Its processes are gone (``tidemark up`` runs one at a time per home), yet such a run counts
    against ``max_concurrent_runs``: two runs stuck in CANCELING (a stop that outwaited their
    cancel) kept every later run QUEUED, so schedules, sensors and backfills never ran again.
    A cancelling run becomes CANCELED, a starting or started one FAILURE, each with a message
    in its log. Queued runs stay queued: the daemon starts them.
    """
    from dagster import DagsterRunStatus, RunsFilter

    ended = []
    stuck = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    for record in instance.get_run_records(filters=RunsFilter(statuses=stuck)):
        run = record.dagster_run
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message="Canceled: the tidemark up that was "
                                                      "cancelling it stopped before it ended.")
        else:
            instance.report_run_failed(run, message="Interrupted: the tidemark up that ran it "
                                                    "stopped; its process is gone.")
        ended.append(run.run_id)
    return ended


def _executable(name: str) -> str:
    found = installed_executable(name)
    if found is None:
        raise DagsterStartError(f"{name} is not installed in this environment; run "
                                f"`pip install -e .` (it comes with dagster-webserver).")
    return found


def _child_env(supervisor: Supervisor, settings: Settings) -> None:
    supervisor.env["DAGSTER_HOME"] = str(settings.dagster_home)
    # Dagster waits 60 s for a code server's answer; on a loaded machine the first answer
    # (after importing the code location) can take longer. A user's own value wins.
    supervisor.env.setdefault("DAGSTER_GRPC_TIMEOUT_SECONDS", str(GRPC_TIMEOUT_S))
    supervisor.env["TIDEMARK_DBT_TARGET_PATH"] = str(settings.dbt_target_dir)


def start_webserver(supervisor: Supervisor, settings: Settings) -> Child:
    """Start ``dagster-webserver`` on the code location (the port is checked first).

    Raises:
        DagsterStartError: the port is taken or the executable is missing.
    """
    check_port_free(settings.dagster_port)
    _child_env(supervisor, settings)
    return supervisor.start("dagster-webserver", [
        _executable("dagster-webserver"), "-m", CODE_LOCATION, "-h", "127.0.0.1",
        "-p", str(settings.dagster_port)], settings.log_dir / "dagster-webserver.log")


def start_daemon(supervisor: Supervisor, settings: Settings) -> Child:
    """Start ``dagster-daemon`` (schedules, sensors, run queue, freshness)."""
    _child_env(supervisor, settings)
    return supervisor.start("dagster-daemon", [
        _executable("dagster-daemon"), "run", "-m", CODE_LOCATION],
        settings.log_dir / "dagster-daemon.log")


def ui_url(settings: Settings) -> str:
    """The Dagster UI's address."""
    return f"http://127.0.0.1:{settings.dagster_port}"


def wait_for_ui(url: str, children: list[Child], wait_s: float) -> None:
    """Wait until the UI answers and the code location is loaded.

    Raises:
        DagsterStartError: a process died (its log is named) or time ran out.
    """
    deadline = time.monotonic() + wait_s
    while not (_answers(url) and _location_loaded(url)):
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                raise DagsterStartError(f"{child.name} exited with "
                                        f"{child.process.returncode} while starting; see "
                                        f"{child.log}.")
        if time.monotonic() > deadline:
            raise DagsterStartError(f"The Dagster UI did not load the code location on {url} "
                                    f"within {wait_s:.0f} s; see {children[0].log}.")
        time.sleep(0.5)


def start_dagster(supervisor: Supervisor, settings: Settings, wait_s: float = 90.0) -> str:
    """Prepare the home and the dbt manifest, start webserver and daemon, wait for the UI.

    Args:
        supervisor: the ``tidemark up`` supervisor (its ``env`` is the children's environment).
        settings: the stack settings.
        wait_s: wait this long for the UI to answer (0: do not wait).

    Returns:
        The UI URL, e.g. ``http://127.0.0.1:3000``.

    Raises:
        DagsterStartError: the port is taken, the manifest cannot be built, or a process died
            while starting (its log is named).
    """
    from orchestration.defs.dbt.project import prepare_manifest, tidemark_dbt_project

    check_port_free(settings.dagster_port)
    with environment({"TIDEMARK_DBT_TARGET_PATH": str(settings.dbt_target_dir)}):
        prepare_manifest(tidemark_dbt_project())
    prepare_dagster_home(settings)
    web = start_webserver(supervisor, settings)
    daemon = start_daemon(supervisor, settings)
    url = ui_url(settings)
    if wait_s > 0:
        wait_for_ui(url, [web, daemon], wait_s)
    return url


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def launch_job(url: str, job: str, tags: dict[str, str] | None = None) -> str:
    """Queue a run of ``job`` through the webserver's GraphQL API (as the UI's Launch does);
    the daemon starts it. Returns the run id.

    Raises:
        DagsterStartError: the webserver refused the launch (its answer is quoted).
    """
    import json

    params = {"selector": {"repositoryLocationName": CODE_LOCATION,
                           "repositoryName": "__repository__", "jobName": job},
              "executionMetadata": {"tags": [{"key": k, "value": v}
                                             for k, v in (tags or {}).items()]}}
    body = json.dumps({"query": LAUNCH_RUN, "variables": {"params": params}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DagsterStartError(f"Could not launch {job} through {url}: {exc}") from None
    launched = (answer.get("data") or {}).get("launchRun") or {}
    if launched.get("__typename") != "LaunchRunSuccess":
        raise DagsterStartError(f"The webserver did not launch {job}: {answer}")
    return launched["run"]["runId"]


ACTIVE_RUNS = """
query { runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
  ... on Runs { results { runId status } } } }
"""
TERMINATE_RUNS = """
mutation($ids: [String!]!) {
  terminateRuns(runIds: $ids, terminatePolicy: SAFE_TERMINATE) { __typename } }
"""


def _graphql(url: str, query: str, variables: dict | None = None,
             timeout_s: float = 10.0) -> dict:
    import json

    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read()).get("data") or {}


RELOAD_WORKSPACE = "mutation { reloadWorkspace { __typename } }"
# The webserver answers a reload once it has asked its code server again: under load that
# took more than _graphql's 10 s (seen in CI at load 8+: the reload then said "no answer").
RELOAD_TIMEOUT_S = 90.0


def reload_code_location(url: str) -> bool:
    """Ask the webserver at ``url`` to load the code location again (the UI's "Reload
    definitions"); the daemon reloads its own every minute. False when it did not answer
    within :data:`RELOAD_TIMEOUT_S`."""
    try:
        answer = _graphql(url, RELOAD_WORKSPACE, timeout_s=RELOAD_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return (answer.get("reloadWorkspace") or {}).get("__typename") == "Workspace"


def _active_runs(url: str) -> list[str]:
    runs = (_graphql(url, ACTIVE_RUNS).get("runsOrError") or {}).get("results") or []
    return [r["runId"] for r in runs]


def cancel_active_runs(url: str, wait_s: float = 20.0) -> list[str]:
    """Cancel the runs still queued or executing (a schedule's, a sensor's, one launched from
    the UI) before the daemon stops, and wait up to ``wait_s`` for them to end: stopping the
    daemon under a run left it as a FAILURE ("interrupted unexpectedly") after a plain Ctrl-C.
    A sensor may launch a run while this waits (the closed-days and correction sensors fire
    right after a start): runs are asked again until none is active twice a second apart.

    Returns the ids asked to cancel. Best effort: a webserver that does not answer is left
    alone (the runs then end as before).
    """
    asked: list[str] = []
    deadline = time.monotonic() + wait_s
    try:
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            ids = _active_runs(url)
            new = [i for i in ids if i not in asked]
            if new:
                _graphql(url, TERMINATE_RUNS, {"ids": new})
                asked += new
            quiet = 0 if ids else quiet + 1
            time.sleep(0.5 if ids else 1.0)
        return asked
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return asked


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _location_loaded(url: str) -> bool:
    """Whether the webserver's code location has loaded (GraphQL ``repositoriesOrError``)."""
    import json

    body = json.dumps({"query": "{ repositoriesOrError { __typename } }"}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    data = answer.get("data") or {}
    return (data.get("repositoriesOrError") or {}).get("__typename") == "RepositoryConnection"
