"""The ``tidemark`` command line, run as a real process against a real embedded server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.support import embedded_url, free_port
from tidemark.cli.main import app

TIDEMARK = shutil.which("tidemark")


def _all_commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # typer vendors its own click: a group is whatever has sub-commands.
    found = [prefix]
    for name, command in group.commands.items():
        if getattr(command, "commands", None):
            found += _all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_every_command_has_help() -> None:
    commands = _all_commands(typer.main.get_command(app))
    assert ("db", "start") in commands and ("up",) in commands
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def _run(home: Path, port: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TIDEMARK_HOME": str(home), "TIDEMARK_PG_PORT": str(port),
                **(env or {})}
    for name in ("TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run([TIDEMARK, *args], env=full_env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_db_lifecycle_from_the_command_line(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    try:
        started = _run(home, port, "db", "start", "--json")
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert info["embedded"] is True and info["port"] == port
        status = json.loads(_run(home, port, "db", "status", "--json").stdout)
        assert status["running"] is True and status["version"].startswith("18")
        url = _run(home, port, "db", "url").stdout.strip()
        assert url == embedded_url(home, port, "tidemark", "tidemark_reader")
        psql = subprocess.run(["psql", url, "-Atc", "select current_user"], capture_output=True,
                              text=True, check=False) if shutil.which("psql") else None
        if psql is not None:
            assert psql.stdout.strip() == "tidemark_reader"
        # psql's own options pass through, before or after --database, with or without `--`
        for args in (("-Atc", "select 41 + 1"), ("--database", "source", "-At", "-c",
                                                 "select current_database()"),
                     ("--", "-Atc", "select 'x'")):
            ran = _run(home, port, "db", "psql", *args)
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() in ("42", "shop", "x"), ran.stdout
        assert _run(home, port, "db", "start").returncode == 0  # twice is fine
    finally:
        stopped = _run(home, port, "db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert _run(home, port, "db", "status", "--json").returncode == 1


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_port_taken_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = _run(tmp_path / "home", port, "db", "start")
    assert result.returncode == 2
    assert f"Port {port}" in result.stderr and "TIDEMARK_PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(TIDEMARK is None, reason="the tidemark console script is not installed")
def test_unreachable_external_server_names_the_variable(tmp_path: Path) -> None:
    dead = f"postgresql://app:topsecret@127.0.0.1:{free_port()}/shop"
    result = _run(tmp_path / "home", free_port(), "db", "start",
                  env={"TIDEMARK_SOURCE_URL": dead, "TIDEMARK_LANDING_URL": dead})
    assert result.returncode == 2
    assert "TIDEMARK_SOURCE_URL" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("columns", [None, "50"])
def test_piped_tables_cut_nothing(columns: str | None) -> None:
    """`tidemark status | less` or a CI log: Rich laid tables out for 80 columns and cut cells
    with an ellipsis ("fct_daily…", which mart?). Now a pipe gets a wide page, and a narrow
    COLUMNS folds long cells instead of cutting them."""
    mart, long = "fct_daily_store_revenue_and_more", "z" * 90
    code = ("from tidemark.cli.output import emit_table; emit_table('finality', "
            f"['mart', 'held_by', 'note'], [[{mart!r}, 'shop.deliveries', {long!r}]])")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "…" not in out and out.count("z") == 90  # folded over several lines, none cut
    if columns is None:
        assert mart in out and "shop.deliveries" in out


def test_table_cells_show_lists_as_a_person_reads_them() -> None:
    """`tidemark status` printed reconciliation's drifting days as
    `[datetime.date(2026, 12, 2)]` and finality's reconciled_by as `['daily_store_revenue']`."""
    from datetime import date

    from tidemark.cli.output import cell

    assert cell([date(2026, 12, 2), date(2026, 12, 3)]) == "2026-12-02, 2026-12-03"
    assert cell(["daily_store_revenue", "store_cancellation_rate"]) \
        == "daily_store_revenue, store_cancellation_rate"
    assert cell([]) == "-" and cell(None) == "" and cell(3) == "3"


def test_status_shows_the_other_layers_when_a_contract_does_not_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A contract file broken while the stack runs: `tidemark status` used to end in
    "unexpected ContractError ... Please report it";
    now the layer that reads contracts says which file and why, and the others are shown."""
    import contracts.loader
    from tidemark.cli.status import collect
    from tidemark.settings import Settings
    from tidemark.stack.databases import Databases

    folder = tmp_path / "contracts" / "shop"
    folder.mkdir(parents=True)
    (folder / "refunds.yml").write_text("version: 1\ncolumns:\n  reason: {allowed_values: [a\n")
    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", tmp_path / "contracts")
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    summary = collect(Settings(home=tmp_path / "home", port=free_port(), source_url=None,
                               landing_url=None), Databases(url, url, url, url, url, url, None),
                      dagster=False)
    error = summary["watermarks"]["error"]
    assert "contracts/shop/refunds.yml" in error and "invalid YAML" in error, error
    assert "error" in summary["live_views"]  # no database here: said per layer, not raised


def _ragged_lines(output: str) -> list[str]:
    """Lines of the help panels (``│ name  text │``) that end a description early: the next
    line continues the same entry (its name column blank) with a word that would have fitted
    on them. A ``[default: ...]`` line is typer's own, on a line of its own."""
    rows = [line[1:-1] for line in output.splitlines()
            if line.startswith("│") and line.endswith("│")]
    ragged = []
    for line, following in zip(rows, rows[1:], strict=False):
        words = following.split()
        if not words or len(following) - len(following.lstrip()) < 8 \
                or words[0].startswith("["):
            continue  # a new entry (its name within the first columns), or typer's default
        room = len(line) - len(line.rstrip()) - 1  # the panel's right padding is one space
        if room >= len(words[0]) + 1:
            ragged.append(f"│{line}│\n│{following}│")
    return ragged


def test_help_wraps_evenly_at_80_columns() -> None:
    # A command's summary in the command lists kept its docstring's line breaks: at 80
    # columns "build everything through Dagster," then "and print the psql URL..." on the next
    # line, half empty (tidemark --help, tidemark views --help).
    runner = CliRunner()
    ragged = []
    for path in _all_commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        assert max(len(line) for line in result.output.splitlines()) <= 80, path
        ragged += [f"tidemark {' '.join(path)} --help:\n{r}" for r in _ragged_lines(result.output)]
    assert not ragged, "\n".join(ragged)


def test_a_table_too_wide_for_the_terminal_breaks_no_word() -> None:
    # `tidemark status` at 80 columns squeezed every table: headers broken mid-word
    # ("streamin" / "g"), a timestamp over four lines ("2026-12" / "-04" / "15:31:1" / "3").
    columns = ["table", "watermark", "allowed_lateness_s", "delay_s", "state", "idle",
               "late_rows", "late_days"]
    code = ("from tidemark.cli.output import emit_table; emit_table('watermarks', "
            f"{columns!r}, [['app_events', '2026-12-04 15:31:13', 21600.0, 21600.3, 'ok', "
            "False, 0, 0], ['customers', '2026-12-04 20:26:43', 3600.0, 3870.3, 'ok', False, "
            "0, 0]]); emit_table('daily marts', ['mart', 'days'], [['fct_daily_funnel', 70]]); "
            "emit_table('ingestion', ['source', 'streaming', 'lag s', 'lag bytes', 'rows/s', "
            "'applied s ago', 'dead letters', 'paused'], [['shop', True, 0.149, 2295224, 2431.5, "
            "0.146, 23580, '-']])")
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    for line in out.splitlines():  # no table cut at the terminal's edge
        assert line[:1] not in "│┃┏┡└┌├" or line.rstrip()[-1:] in "│┃┓┩┘┐┤", out
    for word in [*columns, "app_events", "customers", "2026-12-04 15:31:13", "21600.3",
                 "streaming", "2295224", "letters"]:
        assert word in out, out
    assert "┃ mart " in out and "fct_daily_funnel" in out  # a narrow table stays a table


def test_status_says_which_days_a_pair_can_compare(
        tmp_path: Path, fresh_db: Callable[[str], str]) -> None:
    """`tidemark status` showed `store_cancellation_rate` with `reconciled_days 0` and no reason
    (its live view keeps 2 days, so only yesterday is compared, and it drifts until its
    correction). The layer now carries each pair's `live_keeps` from the pair file; a broken
    pair file is named in the layer instead of raised."""
    import psycopg

    from tidemark.cli.status import collect
    from tidemark.reconciliation.days import ensure_days_table
    from tidemark.settings import Settings
    from tidemark.stack.databases import Databases

    url = fresh_db("keeps")
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_days_table(conn)
        conn.execute("insert into tidemark.reconciled_days (pair, mart, day, status, groups, "
                     "drifted_groups) values ('store_cancellation_rate', "
                     "'fct_daily_store_revenue', current_date - 1, 'drift', 3, 1), "
                     "('daily_store_revenue', 'fct_daily_store_revenue', current_date - 1, "
                     "'reconciled', 3, 0)")
    settings = Settings(home=tmp_path / "home", port=free_port(), source_url=None,
                        landing_url=None)
    dbs = Databases(url, url, url, url, url, url, None)
    rows = {r["pair"]: r for r in collect(settings, dbs, dagster=False)["reconciliation"]}
    assert rows["store_cancellation_rate"]["live_keeps"] == "2 days"
    assert rows["store_cancellation_rate"]["reconciled_days"] == 0
    assert rows["daily_store_revenue"]["live_keeps"] == "all"
    # a pair with no day recorded yet is listed (it was left out, as if it did not exist)
    assert rows["late_deliveries_daily"]["reconciled_days"] == 0
    assert rows["late_deliveries_daily"]["mart"] == "fct_daily_delivery_sla"

    project = tmp_path / "dbt_project"
    project.mkdir()
    (project / "reconciliation.yml").write_text("version: 1\npairs: [{name: x}]\n")
    broken = Settings(home=tmp_path / "home", port=free_port(), source_url=None,
                      landing_url=None, dbt_project_dir=project)
    error = collect(broken, dbs, dagster=False)["reconciliation"]["error"]
    assert "reconciliation.yml" in error, error


def test_status_shows_only_the_lock_waits_that_last(module_db: str) -> None:
    """`tidemark status` listed every lock wait of the moment: on a healthy stack, the live
    views' clock waiting 0.1 s for ingestion's transaction showed as a "lock waits" table. The
    waits shown are those of a second or more; the others are counted in the title."""
    import threading
    import time

    import psycopg

    from streaming_views.holders import lock_waits
    from tidemark.cli.status import long_waits

    def wait_for_lock(name: str) -> None:
        with psycopg.connect(module_db, application_name=name) as conn:
            conn.execute("set lock_timeout = '20s'")
            conn.execute("lock table status_locked in access share mode")

    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("create table status_locked (id int)")
        with psycopg.connect(module_db) as holder:
            holder.execute("lock table status_locked in access exclusive mode")
            waiters = [threading.Thread(target=wait_for_lock, args=("long",))]
            waiters[0].start()
            time.sleep(1.5)
            waiters.append(threading.Thread(target=wait_for_lock, args=("short",)))
            waiters[1].start()
            while len(waits := lock_waits(conn)) < 2:
                time.sleep(0.01)
            holder.rollback()
        for waiter in waiters:
            waiter.join()
    shown, short = long_waits(waits)
    assert [w["waiting_application"] for w in shown] == ["long"] and short == 1, waits
    assert long_waits({"error": "unreachable"}) == ({"error": "unreachable"}, 0)
