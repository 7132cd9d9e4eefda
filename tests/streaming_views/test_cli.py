"""``tidemark views`` commands against a real database (--dsn)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from tests.support import await_ended_sessions
from tidemark.cli.main import app

runner = CliRunner()


def test_deploy_list_verify(module_db: str, conn: psycopg.Connection, tmp_path: Path) -> None:
    conn.execute("create schema k; create table k.t (id int primary key, g int)")
    conn.execute("insert into k.t select i, i % 3 from generate_series(1, 30) i")
    views = tmp_path / "views"
    views.mkdir()
    (views / "by_g.sql").write_text("select s.g, count(*) as n from k.t s group by s.g\n")
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["action"] == "created"
    result = runner.invoke(app, ["views", "list", "--dsn", module_db, "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (row["name"], row["target"], row["rows"]) == ("by_g", "embedded", 3)
    assert row["last_change_at"] and row["hash"]
    result = runner.invoke(app, ["views", "verify", "--dsn", module_db])
    assert result.exit_code == 0 and "ok" in result.output
    suffix = conn.execute("select suffix from tidemark.views").fetchone()[0]
    conn.execute(f'delete from tidemark_state."{suffix}" where g = 2')
    result = runner.invoke(app, ["views", "verify", "by_g", "--dsn", module_db, "--json"])
    assert result.exit_code == 1
    [bad] = json.loads(result.output)
    assert bad["missing"] == [[2, 10]] and bad["extra"] == []
    result = runner.invoke(app, ["views", "verify", "by_g", "--dsn", module_db])
    assert result.exit_code == 1 and "query only" in result.output
    # the way forward is printed, and it works (deploy leaves an unchanged file alone)
    assert "tidemark views rebuild by_g" in " ".join(result.output.split())
    result = runner.invoke(app, ["views", "rebuild", "by_g", "--dsn", module_db])
    assert result.exit_code == 0 and "equals its query" in result.output, result.output
    result = runner.invoke(app, ["views", "verify", "by_g", "--dsn", module_db])
    assert result.exit_code == 0, result.output


def test_deploy_says_which_views_stay_deployed_without_a_file(module_db: str,
                                                              tmp_path: Path) -> None:
    """A renamed view file is a new view; the old one used to stay deployed and maintained
    with no word from `tidemark views deploy` (only --prune showed it)."""
    conn = psycopg.connect(module_db, autocommit=True)
    conn.execute("create schema if not exists kk; create table if not exists kk.t "
                 "(id int primary key, g int)")
    views = tmp_path / "renamed"
    views.mkdir()
    (views / "kk_old.sql").write_text("select s.g, count(*) as n from kk.t s group by s.g\n")
    assert runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                               module_db]).exit_code == 0
    (views / "kk_old.sql").rename(views / "kk_new.sql")
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db, "--json"])
    assert result.exit_code == 0, result.output
    actions = {r["name"]: r["action"] for r in json.loads(result.output)}
    assert actions["kk_new"] == "created"
    assert actions["kk_old"] == "kept: no file (--prune drops it)"
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db, "--prune", "--json"])
    assert {r["name"]: r["action"] for r in json.loads(result.output)}["kk_old"] == "dropped"
    conn.close()


def test_unsupported_view_is_a_clear_error(module_db: str, tmp_path: Path) -> None:
    views = tmp_path / "bad"
    views.mkdir()
    (views / "bad.sql").write_text("select s.g from k.t s order by s.g\n")
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db])
    assert result.exit_code != 0
    assert "ORDER BY is not supported" in str(result.exception)
    assert "bad.sql:1:" in str(result.exception)


def _as_in_a_terminal() -> None:
    """In the child: no blocked signal, SIGINT/SIGTERM at their defaults (whatever the test
    process inherited or blocked, e.g. SIGINT ignored under a background CI job)."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _stop(proc) -> None:
    """SIGTERM, as a supervisor stops it; say what the process's signal state was if it stays."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=60)  # bounded: it stops at once on a quiet machine
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError("subscribe did not stop on SIGTERM within 60 s: "
                             + " ".join(line for line in status.splitlines()
                                        if line.startswith(("State", "Sig")))) from None


def test_subscribe_prints_like_materialize(module_db: str, conn: psycopg.Connection,
                                           tmp_path: Path) -> None:
    """The real command in a process of its own: header, snapshot, each commit's rows."""
    import os
    import subprocess
    import sys

    conn.execute("create schema sub; create table sub.t (id int primary key, g int)")
    conn.execute("insert into sub.t values (1, 1)")
    views = tmp_path / "sv"
    views.mkdir()
    (views / "sub_g.sql").write_text("select s.g, count(*) as n from sub.t s group by s.g\n")
    assert runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                               module_db]).exit_code == 0
    tidemark = str(Path(sys.executable).parent / "tidemark")
    proc = subprocess.Popen([tidemark, "views", "subscribe", "sub_g", "--dsn", module_db,
                             "--progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "120"},
                            preexec_fn=_as_in_a_terminal)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].split() == ["mz_timestamp", "mz_progressed", "mz_diff", "g", "n"]
        assert lines[1].split()[1:] == ["false", "1", "1", "1"]  # the snapshot
        assert lines[2].split()[1:] == ["true", "NULL", "NULL", "NULL"]
        conn.execute("insert into sub.t values (2, 1)")
        rows = [proc.stdout.readline().split() for _ in range(3)]
        assert [r[1:] for r in rows] == [["false", "-1", "1", "1"], ["false", "1", "1", "2"],
                                         ["true", "NULL", "NULL", "NULL"]]
        assert int(rows[0][0]) == int(lines[1].split()[0]) + 1  # the next commit
    finally:
        _stop(proc)
    proc = subprocess.Popen([tidemark, "views", "subscribe", "sub_g", "--dsn", module_db,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_as_in_a_terminal)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first == {"mz_timestamp": first["mz_timestamp"], "mz_progressed": False,
                         "mz_diff": 1, "g": 1, "n": 2}
    finally:
        _stop(proc)


def test_subscribe_json_and_unknown_view(module_db: str) -> None:
    result = runner.invoke(app, ["views", "subscribe", "nope", "--dsn", module_db, "--json"])
    assert result.exit_code != 0 and "not deployed" in (result.output + str(result.exception))


def test_prune_refusal_names_the_readers(module_db: str, conn: psycopg.Connection,
                                         tmp_path: Path) -> None:
    conn.execute("create schema pr; create table pr.t (id int primary key, g int)")
    views = tmp_path / "pv"
    views.mkdir()
    (views / "pr_inner.sql").write_text("select s.g, count(*) as n from pr.t s group by s.g\n")
    (views / "pr_outer.sql").write_text("select i.n, count(*) as c from live.pr_inner i "
                                        "group by i.n\n")
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db, "--json"])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)
            if not r["action"].startswith("kept")] == ["pr_inner", "pr_outer"]
    (views / "pr_inner.sql").unlink()
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db, "--prune"])
    assert result.exit_code != 0
    message = result.output + str(result.exception)
    assert "cannot prune live.pr_inner: read by pr_outer" in message and "Traceback" not in message


def test_a_view_the_cli_deploys_stays_deployable_by_dagster(tmp_path: Path,
                                                            monkeypatch) -> None:
    """`tidemark views deploy` without --dsn on the embedded stack deploys as the role Dagster
    deploys with: a `tidemark up` after it used to fail ("permission denied for view ...")
    because the CLI had created the view as the superuser."""
    from streaming_views import deploy
    from streaming_views.status import list_views
    from tests.support import start_test_server
    from tidemark.settings import Settings
    from tidemark.stack.databases import ensure_databases

    server = start_test_server(tmp_path / "home")
    try:
        dbs = ensure_databases(Settings(home=tmp_path / "home", port=server.port,
                                        source_url=None, landing_url=None))
        with psycopg.connect(dbs.landing_app, autocommit=True) as app_conn:
            app_conn.execute("create schema k; create table k.t (id int primary key, g int);"
                             "insert into k.t select i, i % 3 from generate_series(1, 30) i")
        views = tmp_path / "views"
        views.mkdir()
        (views / "by_g.sql").write_text("select s.g, count(*) as n from k.t s group by s.g\n")
        for name in ("TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("TIDEMARK_PG_PORT", str(server.port))
        for args in (["deploy"], ["rebuild", "by_g"]):
            result = runner.invoke(app, ["views", *args, "--views-dir", str(views)]
                                   if args == ["deploy"] else ["views", *args])
            assert result.exit_code == 0, result.output
            # what Dagster's live_views asset then does, as tidemark_app
            assert [r.action for r in deploy(dbs.landing_app, views)] == ["unchanged"]
            assert [(v.name, v.rows) for v in list_views(dbs.landing_app)] == [("by_g", 3)]
        (views / "by_g.sql").write_text("select s.g, sum(s.id) as n from k.t s group by s.g\n")
        assert [r.action for r in deploy(dbs.landing_app, views)] == ["replaced"]
    finally:
        server.stop()


def test_tick_every_keeps_one_session(module_db: str, conn: psycopg.Connection) -> None:
    # `tidemark up` runs `views tick --every 1`: it connected anew for every tick, a backend
    # forked, authenticated and its caches filled each second for as long as the stack runs.
    import signal
    import subprocess
    import sys
    import time

    def sessions() -> int:
        await_ended_sessions(conn)  # ended sessions report their statistics as they exit
        return conn.execute("select sessions from pg_stat_database where datname = "
                            "current_database()").fetchone()[0]

    before = sessions()
    child = subprocess.Popen([sys.executable, "-m", "tidemark.cli.main", "views", "tick",
                              "--every", "0.2", "--dsn", module_db],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # SIGTERM stops it once its handler is in place, which it says (a loaded machine takes
    # seconds to start Python and import tidemark: a signal before that killed it, -15)
    first = child.stdout.readline().decode()
    assert first.startswith("Ticking the live views' clock"), first
    time.sleep(4)  # about 20 ticks
    child.send_signal(signal.SIGTERM)
    out = first + child.communicate(timeout=60)[0].decode()
    assert child.returncode == 0, out
    assert "tick failed" not in out, out
    assert sessions() - before <= 2, out  # the tick's one session (and this test's own)


def test_tick_ends_on_sigterm_while_a_tick_waits_for_a_lock(module_db: str,
                                                           conn: psycopg.Connection) -> None:
    # The clock's SIGTERM handler only set a flag read between ticks: a tick waiting in the
    # server kept `views tick` alive for as long as the wait lasted (seen in CI: the clock
    # outlived a killed `tidemark up` by over 60 s). SIGTERM now cancels the tick.
    import signal
    import subprocess
    import sys
    import time

    from streaming_views.expiry import tick
    from tests.streaming_views.conftest import deploy_text

    conn.execute("create schema tw; create table tw.t (id int primary key, g int)")
    deploy_text(module_db, "tw_by_g", "select t.g, count(*) as n from tw.t t group by t.g")
    tick(module_db)  # the clock's table, made by the first tick
    with psycopg.connect(module_db) as holder:
        holder.execute("lock table tidemark.live_clock in access exclusive mode")
        child = subprocess.Popen([sys.executable, "-m", "tidemark.cli.main", "views", "tick",
                                  "--every", "0.2", "--dsn", module_db],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        first = child.stdout.readline().decode()
        assert first.startswith("Ticking the live views' clock"), first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not conn.execute(
                "select count(*) from pg_locks where not granted and relation ="
                " 'tidemark.live_clock'::regclass").fetchone()[0]:
            time.sleep(0.1)  # the first tick waits for the lock
        child.send_signal(signal.SIGTERM)
        try:
            out = first + child.communicate(timeout=15)[0].decode()
        finally:
            child.kill()
        holder.rollback()
    assert child.returncode is not None and child.returncode != -9, out
    assert "Traceback" not in out, out
