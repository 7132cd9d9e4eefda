"""`tidemark up`'s Dagster: webserver and daemon start as supervised children, answer, stop."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from tests.support import free_port
from tidemark.errors import DagsterStartError
from tidemark.settings import Settings
from tidemark.stack.dagster_proc import dagster_home, start_dagster
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


@pytest.mark.slow
def test_webserver_and_daemon_serve_the_code_location(tmp_path, monkeypatch) -> None:
    import os

    port = free_port()
    monkeypatch.setenv("TIDEMARK_DAGSTER_PORT", str(port))
    monkeypatch.delenv("TIDEMARK_DBT_TARGET_PATH", raising=False)  # prepared in the home
    env = {k: v for k, v in os.environ.items() if k != "TIDEMARK_DBT_TARGET_PATH"}
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
    finally:
        codes = supervisor.stop_all(grace_s=30)
    assert set(codes) == {"dagster-webserver", "dagster-daemon"}
    assert (tmp_path / "dagster" / "storage").is_dir()
