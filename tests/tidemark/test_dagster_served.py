"""``tidemark status`` asks the running Dagster UI for the latest run of each job and the
latest execution of every check in one request (:mod:`tidemark.stack.dagster_served`).

The UI resolves each check's execution one by one: 13-17 s for the demo's ~160 checks on a
loaded machine (bench/RESULTS.md e36). On main that request had the 10 s timeout of the first
one, so the status gave up on the UI that was answering and read the same from the instance
after importing Dagster: 57 s in all at the 10x demo.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tidemark.settings import load_settings
from tidemark.stack.dagster_served import served_summary

SLOW_S = 11.0  # past the first request's 10 s timeout


def _answer(query: str, home: str) -> dict:
    """The UI's answer to the check keys (at once) or to the summary (after ``SLOW_S``)."""
    if "assetNodes" in query:
        return {"instance": {"info": f"storage:\n  base_dir: {home}\n"},
                "assetNodes": [{"assetKey": {"path": ["marts", "m"]}, "assetChecksOrError": {
                    "__typename": "AssetChecks", "checks": [{"name": "c"}]}}]}
    time.sleep(SLOW_S)
    data: dict = {f"r{i}": {"results": []} for i in range(query.count("runsOrError"))}
    data["c0"] = [{"runId": "run-1", "status": "SUCCEEDED", "timestamp": 1.0,
                   "evaluation": {"success": True, "severity": "ERROR", "description": None}}]
    return data


@pytest.fixture()
def slow_ui(tmp_path, monkeypatch) -> Iterator[None]:
    """A Dagster UI stand-in on a free port, serving ``tmp_path``'s Dagster home."""
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    home = str(load_settings().dagster_home)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
            try:
                body = json.dumps({"data": _answer(query, home)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # main's client gave up
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    monkeypatch.setenv("TIDEMARK_DAGSTER_PORT", str(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_status_waits_for_the_ui_that_answered_its_first_request(slow_ui: None) -> None:
    summary = served_summary(load_settings())
    assert summary is not None  # main: None (timed out), then the instance read it again
    assert summary["latest_runs"] == {}
    [check] = summary["checks"]
    assert (check["asset"], check["check"], check["status"], check["passed"]) == (
        "marts/m", "c", "succeeded", True)
