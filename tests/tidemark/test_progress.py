"""Snapshot progress as a user sees it (issue 10, "Build": rows, tables, rows/s and ETA shown by
`tidemark ingest run`, `tidemark up` and `tidemark ingest status`), each from a real snapshot or
a real progress table on the embedded server: the bar `ingest run` draws on a terminal (a pty),
the landing bar of `tidemark up` fed by the catch-up op's callback, and the line `ingest status`
prints while a snapshot runs. Before audit51 only the pieces were tested (the ETA's arithmetic,
`ingest status --json`, the up display with invented numbers), not what reaches the screen."""

from __future__ import annotations

import io
import itertools
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from tests.support import create_database
from tidemark.stack.embedded import EmbeddedServer

_n = itertools.count(1)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass
class Dbs:
    """A user's database, a landing database and Tidemark's environment for them."""

    src: str
    land: str
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def dbs(pg: EmbeddedServer, tmp_path: Path) -> Iterator[Dbs]:
    n = next(_n)
    names = (f"prog_src_{n}", f"prog_land_{n}")
    src, land = (create_database(pg, name) for name in names)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("create table orders (id int primary key, note text)")
        conn.execute("insert into orders select g, md5(g::text) from generate_series(1, 20000) g")
        conn.execute("analyze orders")  # the estimate an ETA needs
    env = {**os.environ, "TIDEMARK_SOURCE_URL": src, "TIDEMARK_LANDING_URL": land,
           "TIDEMARK_HOME": str(tmp_path / "home"), "COLUMNS": "200", "TERM": "xterm"}
    yield Dbs(src, land, env)
    with psycopg.connect(src, autocommit=True) as conn:
        for (slot,) in conn.execute("select slot_name from pg_replication_slots where database"
                                    " = current_database()").fetchall():
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    with psycopg.connect(pg.admin_url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(name)))


def _read_until(fd: int, pattern: re.Pattern, timeout: float) -> tuple[str, re.Match | None]:
    """What a terminal shows (escape codes taken out) until ``pattern`` appears or ``timeout``."""
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the process ended and closed the terminal
            break
        if not chunk:
            break
        seen += ANSI.sub("", chunk.decode(errors="replace"))
        if (match := pattern.search(seen)) is not None:
            return seen, match
    return seen, None


def test_ingest_run_on_a_terminal_draws_rows_tables_rate_and_eta(dbs: Dbs) -> None:
    assert dbs.cli("source", "add", "mydb", "--url", dbs.src).returncode == 0
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tidemark.cli.main", "ingest", "run"],
                            env=dbs.env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    bar = re.compile(r"snapshot mydb\W.*?20,000(/[\d,]+)? rows +1/1 tables +[\d,]+ rows/s +"
                     r"ETA (\d+:\d\d)")
    try:
        seen, match = _read_until(master, bar, 180)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        os.close(master)
    assert match is not None, f"no snapshot bar on the terminal:\n{seen[-3000:]}"
    assert code == 0, seen[-3000:]


def test_tidemark_up_landing_bar_counts_the_snapshots_rows_against_its_estimate(
        dbs: Dbs, tmp_path: Path) -> None:
    """The catch-up op's callback (what `tidemark up` runs, through Dagster) reports the rows
    with the source's estimate as the total: the up display then shows rows, rows/s and an
    ETA (without a total, rich shows no ETA). Rendering the rate of many reports is
    test_display's."""
    import dagster as dg

    from ingestion import catch_up
    from orchestration.defs.ingestion.jobs import snapshot_progress
    from tidemark import progress
    from tidemark.stack.display import UpDisplay

    out = io.StringIO()
    display = UpDisplay(tmp_path, Console(file=out, width=200, force_terminal=True,
                                          color_system=None))
    seen: list[progress.Progress] = []
    with display, progress.listening(seen.append), progress.listening(display.on_progress):
        display.begin("landing", "Landing (snapshot, catch-up)", unit="rows")
        catch_up(dbs.src, dbs.land, "mydb", timeout_s=120,
                 on_progress=snapshot_progress(dg.build_op_context(), "mydb"))
        shown = display.bars.make_tasks_table(display.bars.tasks)
        display.console.print(shown)
    landing = [p for p in seen if p.phase == "landing"]
    assert landing and landing[-1].done == 20000, landing
    assert all(p.total is not None and p.total >= 19000 for p in landing), landing
    assert "mydb: " in landing[0].detail
    line = next(line for line in out.getvalue().splitlines() if "Landing" in line)
    # rows of the estimate, then the rate (rich shows it from the second report on: this small
    # snapshot copies in one), the ETA and the time elapsed
    assert re.search(r"20,000/2\d,\d{3} rows +([\d,]+/s +)?\d:\d\d:\d\d \d:\d\d:\d\d", line), line


def test_ingest_status_shows_a_running_snapshots_rows_tables_rate_and_eta(dbs: Dbs) -> None:
    from ingestion.progress import ProgressTracker

    assert dbs.cli("source", "add", "mydb", "--url", dbs.src).returncode == 0
    tracker = ProgressTracker(dbs.land, "mydb", 1 << 40, [("orders", 10_000), ("items", 500)],
                              interval_s=0.0)
    try:
        tracker.start("orders")
        tracker.add("orders", 1000)
        time.sleep(1.0)
        tracker.add("orders", 1000)
        out = dbs.cli("ingest", "status", "--source", "mydb")
        assert out.returncode == 0, out.stderr
        assert re.search(r"snapshot running: 0/2 tables, 2,000 of ~10,500 rows, [\d,]+ rows/s, "
                         r"copy ETA \d+ s", out.stdout), out.stdout
        snap = json.loads(dbs.cli("ingest", "status", "--source", "mydb", "--json").stdout
                          )["snapshot"]
        assert snap["eta_s"] is not None and snap["eta_s"] > 0 and snap["rows_per_s"] > 0, snap
    finally:
        tracker.close(done=False)
