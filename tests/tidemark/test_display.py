"""tidemark up's progress: phases on screen and in up-progress.json for tidemark status."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
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


def test_a_phase_stays_on_one_line_with_its_counts_whole_on_80_columns(tmp_path: Path) -> None:
    # On an 80-column terminal the 10x landing bar read "5,0… 0:0…" spread over three lines.
    clock = [0.0]
    for width in (80, 120):
        out = io.StringIO()
        display = UpDisplay(tmp_path, Console(file=out, width=width, force_terminal=True,
                                              color_system=None))
        display.bars.get_time = lambda: clock[0]
        display.begin("database", "PostgreSQL")
        display.begin("landing", "Landing (snapshot, catch-up)", total=6_603_670, unit="rows")
        task = display.tasks["landing"]
        clock[0] = 1.0
        display.bars.update(task, completed=1_000_000, detail="shop: app_events, order_items")
        clock[0] = 2.0
        display.bars.update(task, completed=5_029_116)
        display.console.print(display.bars.make_tasks_table(display.bars.tasks))
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        assert len(lines) == 2, out.getvalue()
        landing = lines[1]
        assert "5,029,116/6,603,670 rows  4,029,116/s" in landing, landing
        assert re.search(r" \d:\d\d:\d\d \d:\d\d:\d\d ", landing), landing  # ETA, elapsed whole


def test_status_ages_a_running_phase_that_reports_nothing(tmp_path: Path) -> None:
    # At 10x the landing phase built indexes for two minutes without a report: `tidemark
    # status` kept showing the seconds of its last report.
    display = UpDisplay(tmp_path, Console(file=io.StringIO(), width=120))
    with display:
        display.begin("landing", "Landing (snapshot, catch-up)", total=10, unit="rows")
        time.sleep(1.2)
        phase = read_status(tmp_path)["phases"][0]
        assert phase["state"] == "running" and phase["seconds"] >= 1.0, phase
        display.end("landing", "Landed.")
        done = read_status(tmp_path)["phases"][0]["seconds"]
        time.sleep(0.3)
        assert read_status(tmp_path)["phases"][0]["seconds"] == done  # a finished phase stays


def test_the_banner_keeps_each_url_on_one_line(tmp_path: Path) -> None:
    # The embedded URLs name the home's pgpass file: Rich wrapped the psql URL at the console's
    # width (80 in a pipe), and a copied line or a script reading it got half a URL.
    out = io.StringIO()
    url = ("'postgresql://tidemark_reader@127.0.0.1:55432/tidemark?sslmode=disable&password="
           f"&passfile={tmp_path}/{'deep/' * 12}pgpass'")
    with UpDisplay(tmp_path, Console(file=out, width=80)) as display:
        display.ready(f"Tidemark is up.\n  SQL (read-only):  psql {url}")
    assert f"  SQL (read-only):  psql {url}\n" in out.getvalue()


def test_status_says_when_tidemark_up_was_killed(tmp_path: Path, capsys) -> None:
    # After kill -9 of `tidemark up`, `tidemark status` said nothing about it at all (neither
    # running nor stopped), while its children and database could still be running.
    from tidemark.cli.status import _show_up

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "up-progress.json").write_text(json.dumps(
        {"pid": dead.pid, "state": "ready", "ready_at": "2026-12-05T00:11:48+00:00",
         "phases": []}))
    _show_up(read_status(tmp_path))
    out = " ".join(capsys.readouterr().out.split())
    assert f"tidemark up (pid {dead.pid}) is not running" in out, out
    assert "ready since 2026-12-05T00:11:48+00:00" in out and "`tidemark up` starts" in out


def test_a_phase_line_in_a_log_file_is_never_cut_in_two(tmp_path: Path) -> None:
    # `tidemark up > up.log` (no terminal: Rich's width is 80) wrapped the phase lines, e.g.
    # "Seeded 7 days of demo history: ... (31,842 rows/s). [5.0" / "s]", and the progress
    # lines "... (live/store_revenue_per_minute)" / "after 83 s": a grep found half a line.
    out = io.StringIO()
    with UpDisplay(tmp_path, Console(file=out, width=80)) as display:
        display.begin("seed", "Seeding the demo history", total=10, unit="rows")
        display.end("seed", "Seeded 7 days of demo history: 14,000 orders, 158,002 rows "
                            "(31,842 rows/s).")
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"Seeded 7 days .*\(31,842 rows/s\)\. \[\d+\.\d s\]", line)
               for line in lines), lines
