"""`tidemark up`'s Dagster: webserver and daemon start as supervised children, answer, stop."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.support import free_port
from tidemark.errors import DagsterStartError
from tidemark.settings import Settings
from tidemark.stack.dagster_proc import (
    DAGSTER_YAML,
    _child_env,
    _earlier,
    dagster_home,
    reload_code_location,
    start_dagster,
)
from tidemark.stack.supervisor import Supervisor


def test_taken_port_is_named(tmp_path, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        monkeypatch.setenv("TIDEMARK_DAGSTER_PORT", str(port))
        with pytest.raises(DagsterStartError, match=f"Port {port} .*TIDEMARK_DAGSTER_PORT"):
            start_dagster(Supervisor(env={}), Settings(home=tmp_path, port=55432))


def test_dagster_home_keeps_an_edited_yaml(tmp_path) -> None:
    home = dagster_home(Settings(home=tmp_path, port=55432))
    text = (home / "dagster.yaml").read_text()
    assert f"base_dir: {home / 'storage'}" in text
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster_home(Settings(home=tmp_path, port=55432))
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_correction_runs_take_at_most_one_run_slot(tmp_path) -> None:
    # The run queue of the instance `tidemark up` writes: with a correction running, a queued
    # user run starts at once while a second correction waits (the daemon's own choice of the
    # runs to dequeue, on that instance: its private _get_runs_to_dequeue, since launching
    # needs a code location).
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.test_utils import create_run_for_test
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    from orchestration.defs.keys import CORRECTION_TAG

    home = dagster_home(Settings(home=tmp_path, port=55432))
    queue = yaml.safe_load((home / "dagster.yaml").read_text())["run_queue"]
    assert queue == {"max_concurrent_runs": 2,
                     "tag_concurrency_limits": [{"key": CORRECTION_TAG, "limit": 1}],
                     "max_user_code_failure_retries": 5, "user_code_failure_retry_delay": 30}
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(
        RegisteredCodeLocationOrigin("orchestration.definitions"), "__repository__"),
        "daily_marts")
    with DagsterInstance.from_config(str(home)) as instance:
        def run(status: DagsterRunStatus, tags: dict[str, str]) -> str:
            return create_run_for_test(instance, job_name="daily_marts", status=status,
                                       tags=tags, remote_job_origin=origin).run_id

        run(DagsterRunStatus.STARTED, {CORRECTION_TAG: "fct_daily_store_revenue"})
        run(DagsterRunStatus.QUEUED, {CORRECTION_TAG: "fct_daily_delivery_sla"})
        user = run(DagsterRunStatus.QUEUED, {})
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        chosen = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(),
                                             fixed_iteration_time=None)
        assert [r.run_id for r in chosen] == [user]


def test_dagster_home_purges_old_sensor_ticks(tmp_path) -> None:
    # Dagster keeps every sensor tick that recorded something unless told otherwise
    from dagster import DagsterInstance
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    home = dagster_home(Settings(home=tmp_path, port=55432))
    with DagsterInstance.from_config(str(home)) as instance:
        sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        schedule = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
    assert sensor[TickStatus.SUCCESS] == 30 and sensor[TickStatus.SKIPPED] == 7
    assert schedule[TickStatus.SUCCESS] == 90


def test_dagster_home_shows_no_sign_up_dialog(tmp_path) -> None:
    # a new user's first look at the UI is the asset catalog, not Dagster's newsletter dialog
    from dagster import DagsterInstance

    home = dagster_home(Settings(home=tmp_path, port=55432))
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False


@pytest.mark.slow
def test_webserver_and_daemon_serve_the_code_location(tmp_path, monkeypatch) -> None:
    import os

    port = free_port()
    monkeypatch.setenv("TIDEMARK_DAGSTER_PORT", str(port))
    monkeypatch.delenv("TIDEMARK_DBT_TARGET_PATH", raising=False)  # prepared in the home
    monkeypatch.delenv("TIDEMARK_PARTITIONS_START", raising=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TIDEMARK_DBT_TARGET_PATH", "TIDEMARK_PARTITIONS_START")}
    env["TIDEMARK_HOME"] = str(tmp_path)
    supervisor = Supervisor(env=env)
    try:
        url = start_dagster(supervisor, Settings(home=tmp_path, port=55432), wait_s=120)
        assert url == f"http://127.0.0.1:{port}"
        assert supervisor.env["DAGSTER_HOME"] == str(tmp_path / "dagster")
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        nodes: list = []
        deadline = time.monotonic() + 90
        while not nodes and time.monotonic() < deadline:  # the location loads in background
            request = urllib.request.Request(f"{url}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                nodes = json.load(response)["data"]["assetNodes"]
            time.sleep(1)
        log = (tmp_path / "logs" / "dagster-webserver.log").read_text(errors="replace")
        assert nodes, log[-3000:]
        paths = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"shop/orders", "live/daily_store_revenue", "marts/fct_daily_store_revenue",
                "serving/daily_store_revenue"} <= paths
        assert [c.process.poll() for c in supervisor.children] == [None, None]
        # No day of data recorded: the UI's partitions start at the 30-day fallback; once
        # `tidemark up` records the first day (stack.partitions.FirstDayWatch) and reloads
        # the code location, they start there, without a restart.
        today = datetime.now(UTC).date()
        assert _first_partition(url) == (today - timedelta(days=30)).isoformat()
        first = (today - timedelta(days=6)).isoformat()
        (tmp_path / "partitions_start").write_text(first + "\n")
        assert reload_code_location(url)
        deadline = time.monotonic() + 90
        while _first_partition(url) != first and time.monotonic() < deadline:
            time.sleep(1)  # the location loads again in background
        assert _first_partition(url) == first
        # The daemon may launch a run between two reads (the 15-minute schedule of the live-view
        # checks, the freshness sensor right after the start): its status moves on (QUEUED ->
        # STARTING) and the checks it evaluates change. Runs compare by job and run id; the
        # UI's answer and the one loaded here must be equal when the UI's answer did not move
        # while the loaded one was read (it is read again after it). The freshness sensor's
        # first run is let end first (its next is 5 minutes away): one round of three status
        # processes then suffices, where its QUEUED -> STARTED -> SUCCESS made 2-3 rounds.
        _wait_for_the_daemons_first_run_to_end(url)
        for _attempt in range(3):
            served = _status_checks(env)
            # main imported Dagster, opened the instance and loaded the code location here:
            # 5-15 s of a 9-25 s status; the running UI answers the same over GraphQL
            assert not served["imported_dagster"] and not served["loaded_definitions"]
            loaded = _status_checks({**env, "TIDEMARK_DAGSTER_PORT": str(free_port())})
            assert loaded["loaded_definitions"]  # no UI answers: the instance and definitions
            after = _status_checks(env)
            if _stable(after["summary"]) == _stable(served["summary"]):
                break
        assert _stable(served["summary"]) == _stable(loaded["summary"])
        assert len(served["summary"]["checks"]) > 100
    finally:
        codes = supervisor.stop_all(grace_s=30)
    assert set(codes) == {"dagster-webserver", "dagster-daemon"}
    assert (tmp_path / "dagster" / "storage").is_dir()


def _wait_for_the_daemons_first_run_to_end(url: str, timeout_s: float = 120) -> None:
    """Until the UI shows a run and every run has ended (or ``timeout_s`` passed: the caller
    compares again when a run moves between its reads)."""
    query = json.dumps({"query": "{ runsOrError { ... on Runs { results { status } } } }"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{url}/graphql", data=query.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            runs = ((json.load(response).get("data") or {}).get("runsOrError") or {}).get(
                "results") or []
        if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return
        time.sleep(1)


def _first_partition(url: str) -> str | None:
    """The first partition key of the daily mart ``fct_daily_store_revenue`` the UI shows
    (None while the code location loads)."""
    query = json.dumps({"query": '{ assetNodes(assetKeys: [{path: ["marts", '
                                 '"fct_daily_store_revenue"]}]) { partitionKeys } }'}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=query,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        nodes = (json.load(response).get("data") or {}).get("assetNodes") or []
    return nodes[0]["partitionKeys"][0] if nodes and nodes[0]["partitionKeys"] else None


def _stable(summary: dict) -> dict:
    """``summary`` with each latest run reduced to its run id (its status and times move on
    while a run starts)."""
    runs = {job: run["run_id"] for job, run in (summary.get("latest_runs") or {}).items()}
    return {**summary, "latest_runs": runs}


def _status_checks(env: dict[str, str]) -> dict:
    """``tidemark status``'s Dagster layer in a fresh process: its summary, and whether it
    imported Dagster and the code location (dagster-dbt and the dbt manifest) for it."""
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from tidemark.settings import load_settings\n"
            "from tidemark.stack.dagster_status import dagster_summary\n"
            "summary = dagster_summary(load_settings())\n"
            "print(json.dumps({'summary': summary,"
            " 'imported_dagster': 'dagster' in sys.modules,"
            " 'loaded_definitions': 'orchestration.definitions' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_runs_a_stopped_up_left_executing_or_cancelling_end_at_the_next_start(tmp_path) -> None:
    # Two runs stuck in CANCELING (a stop that outwaited their cancel) filled the run queue's
    # two slots: every later run stayed QUEUED, schedules and backfills included.
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

    from tidemark.stack.dagster_proc import prepare_dagster_home
    from tidemark.stack.dbt import environment

    settings = Settings(home=tmp_path, port=55432)
    home = dagster_home(settings)
    states = {"cancelling": DagsterRunStatus.CANCELING, "started": DagsterRunStatus.STARTED,
              "starting": DagsterRunStatus.STARTING, "new": DagsterRunStatus.NOT_STARTED,
              "done": DagsterRunStatus.SUCCESS}
    with environment({"DAGSTER_HOME": str(home)}), DagsterInstance.get() as instance:
        for name, status in states.items():
            instance.add_run(DagsterRun(job_name=f"job_{name}", run_id=f"run-{name}",
                                        status=status))
    prepare_dagster_home(settings)  # what `tidemark up` does before Dagster starts
    with environment({"DAGSTER_HOME": str(home)}), DagsterInstance.get() as instance:
        after = {name: instance.get_run_by_id(f"run-{name}").status for name in states}
    assert after == {"cancelling": DagsterRunStatus.CANCELED,
                     "started": DagsterRunStatus.FAILURE, "starting": DagsterRunStatus.FAILURE,
                     "new": DagsterRunStatus.NOT_STARTED, "done": DagsterRunStatus.SUCCESS}


def test_a_second_up_on_the_same_home_is_refused(tmp_path) -> None:
    import subprocess
    import sys

    from tidemark.errors import AlreadyRunningError
    from tidemark.stack.display import STATUS_FILE
    from tidemark.stack.up import refuse_second_up

    settings = Settings(home=tmp_path, port=55432)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tidemark"])
    try:
        (tmp_path / STATUS_FILE).write_text(json.dumps({"pid": other.pid, "state": "ready"}))
        with pytest.raises(AlreadyRunningError, match=f"already running .*pid {other.pid}"):
            refuse_second_up(settings)
    finally:
        other.kill()
        other.wait()
    refuse_second_up(settings)  # its process is gone: a stale status file does not block


def test_a_slow_code_server_is_waited_for_not_failed(tmp_path) -> None:
    # At load 18 on 2 cores the code location took over 60 s to import: the daemon failed the
    # sensors' runs at dequeue ("Failed to start", their checks "not evaluated") and gave up
    # on its code server after 180 s. The instance `tidemark up` writes retries the dequeue
    # and waits 600 s for a code server; the children wait 300 s for an answer.
    from dagster import DagsterInstance

    home = dagster_home(Settings(home=tmp_path, port=55432))
    with DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert (queue.max_user_code_failure_retries, queue.user_code_failure_retry_delay) == (
            5, 30)
        assert instance.code_server_process_startup_timeout == 600
    supervisor = Supervisor(env={})
    _child_env(supervisor, Settings(home=tmp_path, port=55432))
    assert supervisor.env["DAGSTER_GRPC_TIMEOUT_SECONDS"] == "300"


def test_dagster_home_upgrades_each_untouched_earlier_yaml(tmp_path) -> None:
    # The texts earlier versions wrote (Dagster's own SQLite storage class, before the
    # correction limit, before the slow code server's settings), not edited since, become
    # today's: the storage's files stay where they were (test_dagster_storage.py).
    for n, earlier in enumerate(sorted(_earlier(DAGSTER_YAML))):
        home = tmp_path / str(n) / "dagster"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text(earlier.format(storage=home / "storage"))
        dagster_home(Settings(home=tmp_path / str(n), port=55432))
        text = (home / "dagster.yaml").read_text()
        assert "tag_concurrency_limits" in text and "max_user_code_failure_retries: 5" in text
        assert "class: SharedEngineSqliteStorage" in text and "  sqlite:" not in text
