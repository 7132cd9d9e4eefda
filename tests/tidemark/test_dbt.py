"""Pointing dbt at a landing database, and running it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port
from tidemark.stack.dbt import (
    DbtRunError,
    dbt_child_executable,
    dbt_connection_env,
    dbt_env,
    dbt_executable,
    environment,
    installed_executable,
    path_with_scripts,
    run_dbt,
)

SCRIPTS = str(Path(sys.executable).parent)  # this environment's bin/, where pip put dbt


def test_connection_env_from_url() -> None:
    env = dbt_connection_env("postgresql://tidemark_app:s%40cret@db.example:6543/landing")
    assert env["TIDEMARK_DBT_HOST"] == "db.example" and env["TIDEMARK_DBT_PORT"] == "6543"
    assert env["TIDEMARK_DBT_PASSWORD"] == "s@cret" and env["TIDEMARK_DBT_DBNAME"] == "landing"
    assert env["TIDEMARK_DBT_USER"] == "tidemark_app" and env["TIDEMARK_DBT_SSLMODE"] == ""
    tls = dbt_connection_env("postgresql://u@db.example/landing?sslmode=verify-full")
    assert tls["TIDEMARK_DBT_SSLMODE"] == "verify-full"
    assert tls["TIDEMARK_DBT_DBNAME"] == "landing"
    # libpq takes the password from the query too; on main dbt got none and failed to log in
    query = dbt_connection_env("postgresql://u@db.example/landing?password=p%40ss&sslmode=require")
    assert query["TIDEMARK_DBT_PASSWORD"] == "p@ss" and query["TIDEMARK_DBT_SSLMODE"] == "require"


def test_connection_env_keeps_the_urls_tls_files() -> None:
    """``verify-full`` with the URL's own CA: before, dbt got the mode without the file and
    libpq looked for ~/.postgresql/root.crt (``root certificate file ... does not exist``)."""
    env = dbt_connection_env("postgresql://u@db.example/landing?sslmode=verify-full"
                             "&sslrootcert=/etc/tidemark/ca.crt&sslcert=/c.crt&sslkey=/c.key")
    assert env["TIDEMARK_DBT_SSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/etc/tidemark/ca.crt"
    assert (env["PGSSLCERT"], env["PGSSLKEY"]) == ("/c.crt", "/c.key")
    assert "PGSSLROOTCERT" not in dbt_connection_env("postgresql://u@db.example/landing")


def test_env_sends_target_and_logs_to_the_work_dir(tmp_path: Path) -> None:
    env = dbt_env("postgresql://u@h/d", tmp_path, target="ci")
    assert env["TIDEMARK_DBT_TARGET"] == "ci"
    assert env["DBT_TARGET_PATH"] == str(tmp_path / "target")
    assert env["DBT_LOG_PATH"] == str(tmp_path / "logs")


def test_environment_restores_previous_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_DBT_HOST", "before")
    monkeypatch.delenv("TIDEMARK_DBT_DBNAME", raising=False)
    with environment({"TIDEMARK_DBT_HOST": "inside", "TIDEMARK_DBT_DBNAME": "x"}):
        assert os.environ["TIDEMARK_DBT_HOST"] == "inside"
    assert os.environ["TIDEMARK_DBT_HOST"] == "before"
    assert "TIDEMARK_DBT_DBNAME" not in os.environ


def test_failed_dbt_run_quotes_its_output(tmp_path: Path) -> None:
    unreachable = f"postgresql://tidemark_app@127.0.0.1:{free_port()}/tidemark"
    with pytest.raises(DbtRunError) as info:
        run_dbt(["debug"], unreachable, tmp_path)
    assert "dbt debug failed" in str(info.value)
    assert str(tmp_path / "dbt.log") in str(info.value)


def test_path_with_scripts_puts_the_environments_scripts_first() -> None:
    path = path_with_scripts("/usr/bin:/bin")
    assert path.split(os.pathsep) == [SCRIPTS, "/usr/bin", "/bin"]
    assert path_with_scripts(path) == path
    assert path_with_scripts("") == SCRIPTS


def test_the_environments_dbt_is_found_without_it_on_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert installed_executable("dbt") == dbt_executable() == os.path.join(SCRIPTS, "dbt")
    assert installed_executable("no-such-tool-for-tidemark") is None


def test_definitions_load_when_the_environment_is_not_activated(tmp_path: Path) -> None:
    """`.venv/bin/tidemark up` without activating the venv: dagster-dbt's resource and its
    manifest parse ran `dbt` from PATH and stopped with "The dbt executable 'dbt' was not
    found on PATH" (seen on a fresh clone)."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "TIDEMARK_HOME": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = ("from orchestration.definitions import defs; "
            "print(defs().resources['dbt'].dbt_executable)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == dbt_child_executable()


SECRETS = {"PGPASSWORD": "pg-secret", "TIDEMARK_SOURCE_SHOP_PASSWORD": "source-secret",
           "TIDEMARK_SOURCE_URL": "postgresql://admin@src/shop",
           "BI_URL": "postgresql://bi:url-secret@h/db"}


def test_dbt_child_gets_no_secret_of_the_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # dbt ran with the whole environment of `tidemark up` / Dagster: a model, macro or package
    # could read PGPASSWORD, the sources' passwords and any URL holding one (env_var()).
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: envcheck\nversion: '1.0'\nconfig-version: 2\nprofile: tidemark\n")
    (project / "profiles.yml").write_text(
        (Path(__file__).parents[2] / "dbt_project" / "profiles.yml").read_text())
    names = [*SECRETS, "TIDEMARK_DBT_PASSWORD", "KEPT"]
    meta = ", ".join(f"'{n}': env_var('{n}', 'absent')" for n in names)
    (project / "models" / "shown.sql").write_text(
        f"{{{{ config(meta={{{meta}}}) }}}}\nselect 1 as n\n")
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("KEPT", "ordinary")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    run_dbt(["parse"], "postgresql://tidemark_dbt:dbt-pw@127.0.0.1:1/x", tmp_path)
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    shown = manifest["nodes"]["model.envcheck.shown"]["config"]["meta"]
    assert shown == {**dict.fromkeys(SECRETS, "absent"), "TIDEMARK_DBT_PASSWORD": "dbt-pw",
                     "KEPT": "ordinary"}


def _python_wrapper(path: Path) -> Path:
    """``path``: an executable that runs this interpreter (a stand-in for an environment's
    ``bin/python``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


def _run_dbt_child(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty-bin"  # PATH holds no python: not the one of this environment
    empty.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items()
            if k not in ("TIDEMARK_PYTHON", "VIRTUAL_ENV", "PATH")}
    return subprocess.run([script, "--version"], capture_output=True, text=True, cwd=tmp_path,
                          env={**keep, "PATH": str(empty), **env}, timeout=120, check=False)


def test_dbt_child_finds_the_environments_python_without_tidemark_python(
        tmp_path: Path) -> None:
    # dbt-child ran `python3` when TIDEMARK_PYTHON was unset (a DbtCliResource used outside
    # TidemarkResource.dbt_cli): the first python3 on PATH, often one without Tidemark
    # ("No module named tidemark") or without dbt.
    venv = tmp_path / "venv"
    _python_wrapper(venv / "bin" / "python")
    done = _run_dbt_child(dbt_child_executable(), tmp_path, VIRTUAL_ENV=str(venv))
    assert done.returncode == 0, done.stderr
    assert "Core" in done.stdout + done.stderr  # dbt --version ran
    # installed (not editable): the interpreter of the prefix it is installed under
    prefix = tmp_path / "prefix"
    stack = prefix / "lib" / "python3.11" / "site-packages" / "tidemark" / "stack"
    stack.mkdir(parents=True)
    script = stack / "dbt-child"
    script.write_bytes(Path(dbt_child_executable()).read_bytes())
    script.chmod(0o755)
    _python_wrapper(prefix / "bin" / "python")
    done = _run_dbt_child(str(script), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Core" in done.stdout + done.stderr


def test_dbt_child_without_a_usable_python_says_what_to_set(tmp_path: Path) -> None:
    done = _run_dbt_child(dbt_child_executable(), tmp_path)
    assert done.returncode == 127
    assert "no Python that imports Tidemark" in done.stderr
    assert "Set TIDEMARK_PYTHON" in done.stderr
    done = _run_dbt_child(dbt_child_executable(), tmp_path,
                          TIDEMARK_PYTHON=str(tmp_path / "nope" / "python"))
    assert done.returncode == 127
    assert "is not an executable" in done.stderr
