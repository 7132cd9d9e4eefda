"""tidemark up's progress: phases on screen and in up-progress.json for tidemark status."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from rich.console import Console

from tidemark import progress
from tidemark.stack.display import WRITE_EVERY_S, UpDisplay, read_status


def test_phases_progress_and_failure_reach_the_status_file(tmp_path: Path) -> None:
    out = io.StringIO()
    display = UpDisplay(tmp_path, Console(file=out, width=120))  # not a terminal: log lines
    with display, progress.listening(display.on_progress):
        display.begin("seed", "Seeding 7 days", total=14000, unit="orders")
        progress.report("seed", 5000, 14000, "orders", "day 2")
        time.sleep(WRITE_EVERY_S)  # the file is rewritten at most twice a second
        progress.report("seed", 6000, 14000, "orders", "day 3")
        status = read_status(tmp_path)
        assert status["running"] and status["state"] == "starting"
        seed = status["phases"][0]
        assert (seed["name"], seed["done"], seed["total"], seed["detail"]) == (
            "seed", 6000, 14000, "day 3")
        display.end("seed", "Seeded 7 days.")
        display.begin("build", "Building (Dagster run)", unit="assets+checks")
        display.fail("The Dagster run 1234 of __ASSET_JOB failed")
    display.stopped()
    status = json.loads((tmp_path / "up-progress.json").read_text())
    assert status["state"] == "failed" and "1234" in status["error"]
    assert [p["state"] for p in status["phases"]] == ["done", "failed"]
    assert not read_status(tmp_path)["running"]
    assert "Seeded 7 days. [" in out.getvalue()


def test_reports_without_a_listener_cost_nothing() -> None:
    progress.report("seed", 1, 2)  # nobody listens: nothing happens
    seen: list = []
    with progress.listening(seen.append):
        progress.report("landing", 10, None, "rows", "shop.orders")
    progress.report("landing", 11)
    assert [(p.phase, p.done, p.detail) for p in seen] == [("landing", 10, "shop.orders")]
