"""``tidemark views`` commands against a real database (--dsn)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from typer.testing import CliRunner

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


def test_unsupported_view_is_a_clear_error(module_db: str, tmp_path: Path) -> None:
    views = tmp_path / "bad"
    views.mkdir()
    (views / "bad.sql").write_text("select s.g from k.t s order by s.g\n")
    result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                 module_db])
    assert result.exit_code != 0
    assert "ORDER BY is not supported" in str(result.exception)
    assert "bad.sql:1:" in str(result.exception)
