"""Running the dbt project (``dbt_project/``) against the landing database.

``dbt_project/profiles.yml`` reads its connection from ``TIDEMARK_DBT_*`` variables;
:func:`dbt_env` derives them from a landing URL, so every caller (``tidemark up``, Dagster, tests,
benchmarks) points dbt at the same database the same way. That URL is the one of ``tidemark_dbt``
(``Databases.landing_dbt``), and the dbt child process gets none of the other secrets of the
environment (:func:`child_environment`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from tidemark.errors import TidemarkError
from tidemark.settings import Settings, load_settings
from tidemark.stack.childenv import (  # noqa: F401 (re-exported: tidemark.stack.dbt's API)
    KEPT_SECRETS,
    child_environment,
    dbt_executable,
    installed_executable,
    is_secret,
)


class DbtRunError(TidemarkError):
    """A dbt command failed."""


_TLS_FILES = {"sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
              "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR"}
"""The landing URL's TLS files, by the libpq variable that names them to dbt's connections
(the profile has no field for them: ``sslmode=verify-full`` without the URL's ``sslrootcert``
would look for ``~/.postgresql/root.crt`` and fail)."""


def dbt_connection_env(landing_url: str) -> dict[str, str]:
    """The ``TIDEMARK_DBT_*`` variables that point the dbt profile at ``landing_url``.

    Args:
        landing_url: ``postgresql://user[:password]@host:port/dbname[?sslmode=...]`` (libpq
            reads it: a ``?password=`` or ``?user=`` in the query counts as well).

    Returns:
        Connection variables (the password only as the URL gives it, the URL's ``passfile`` as
        ``PGPASSFILE``; the URL's ``sslmode``, else empty: libpq's ``PGSSLMODE`` or default; its
        TLS files as :data:`_TLS_FILES`), telemetry off.
    """
    params = conninfo_to_dict(landing_url)
    # dbt's profile has no passfile: the embedded server's URL names its pgpass file, which
    # libpq in dbt reads from PGPASSFILE (the password never enters the environment)
    passfile = {"PGPASSFILE": params["passfile"]} if params.get("passfile") else {}
    tls = {variable: params[key] for key, variable in _TLS_FILES.items() if params.get(key)}
    return {
        **passfile,
        **tls,
        "TIDEMARK_DBT_SSLMODE": params.get("sslmode") or "",
        "TIDEMARK_DBT_HOST": params.get("host") or "127.0.0.1",
        "TIDEMARK_DBT_PORT": params.get("port") or "5432",
        "TIDEMARK_DBT_USER": params.get("user") or "postgres",
        "TIDEMARK_DBT_PASSWORD": params.get("password") or "",
        "TIDEMARK_DBT_DBNAME": params.get("dbname") or "tidemark",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    }


def dbt_env(landing_url: str, work_dir: Path, target: str = "dev") -> dict[str, str]:
    """:func:`dbt_connection_env` plus the profile target and where dbt writes.

    Args:
        landing_url: the landing database.
        work_dir: where dbt writes ``target/`` and its logs.
        target: the profile's target (``dev`` or ``ci``).
    """
    return {
        **dbt_connection_env(landing_url),
        "TIDEMARK_DBT_TARGET": target,
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
    }


_ENVIRONMENT_LOCK = threading.RLock()
"""Held while :func:`environment` has ``os.environ`` changed: two threads' blocks never
interleave, so each restores exactly what it found."""


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore the previous values.

    Blocks of different threads run one after the other (:data:`_ENVIRONMENT_LOCK`); nested
    blocks of one thread are fine.
    """
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def path_with_scripts(path: str) -> str:
    """``path`` (a PATH value) with this environment's scripts directory first, as activating
    the environment would; unchanged when it is there already."""
    scripts = str(Path(sys.executable).parent)
    if scripts in path.split(os.pathsep):
        return path
    return os.pathsep.join([scripts, path]) if path else scripts


def dbt_child_executable() -> str:
    """The ``dbt_executable`` for dagster-dbt: ``dbt-child`` beside this module, which starts
    the environment's ``dbt`` without the parent's secrets (:mod:`tidemark.stack.dbtchild`)."""
    return str(Path(__file__).with_name("dbt-child"))


def run_dbt(args: list[str], landing_url: str, work_dir: Path,
            vars: dict[str, str] | None = None, log: Path | None = None) -> None:
    """Run one dbt command in a child process (the ``dbt`` of this interpreter's environment).

    Args:
        args: the command and its arguments, e.g. ``["build", "--select", "tag:daily"]``.
        landing_url: the landing database, as dbt's role (``Databases.landing_dbt``).
        work_dir: where dbt writes ``target/`` and logs.
        vars: dbt ``--vars``.
        log: file receiving dbt's output (default: ``work_dir/dbt.log``).

    Raises:
        DbtRunError: dbt exited non-zero; the message quotes the end of its output.
    """
    dbt = dbt_executable()
    project = load_settings().dbt_project_dir
    argv = [dbt, *args, "--project-dir", str(project), "--profiles-dir", str(project),
            "--no-use-colors"]
    if vars:
        argv += ["--vars", json.dumps(vars)]
    log = log or work_dir / "dbt.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=child_environment(os.environ,
                                                    dbt_env(landing_url, work_dir)),
                              check=False).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise DbtRunError(f"dbt {' '.join(args)} failed (exit {code}); last lines of {log}:\n"
                          f"{tail}")


def parse_project(settings: Settings, landing_url: str) -> Path:
    """``dbt parse`` into the settings' dbt target directory, in a child process; no database.

    The profile is pointed at ``landing_url`` as the Dagster runs point it (the same profile
    lets their invocations reuse this parse instead of parsing again).

    Returns:
        The path of ``manifest.json``.

    Raises:
        DbtRunError: dbt could not parse the project (the end of its output is quoted).
    """
    target = settings.dbt_target_dir
    target.mkdir(parents=True, exist_ok=True)
    log = settings.log_dir / "dbt.log"
    run_dbt(["parse", "--target-path", str(target)], landing_url, target.parent, log=log)
    return target / "manifest.json"


def parse_outcome(settings: Settings, started: float, error: DbtRunError | None) -> tuple:
    """Record how ``tidemark up``'s ``dbt parse`` (started at ``started``) ended, for the code
    location (:mod:`orchestration.defs.dbt.state`) and ``tidemark status``.

    Returns:
        (None, "") after a success; else (the :class:`ParseFailure`, what the stack does about
        it, for the user).
    """
    from orchestration.defs.dbt.state import ParseFailure, clear_failure, record_failure

    target = settings.dbt_target_dir
    if error is None:
        clear_failure(target)
        return None, ""
    log = settings.log_dir / "dbt.log"  # the whole message: the error's text is its tail
    output = log.read_text(errors="replace") if log.exists() else str(error)
    output = output[max(output.rfind("Running with dbt="), 0):]  # this parse's, not an older
    failure = ParseFailure.from_output(output, settings.dbt_project_dir, started)
    record_failure(target, failure, started)
    kept = ("Dagster loads the dbt assets of the last manifest that parsed, marked with this "
            "failure" if (target / "manifest.json").exists() else
            "Dagster starts without dbt assets (no manifest has parsed yet)")
    return failure, (f"{kept}; ingestion and live views run as usual. Fix the file, then "
                     "Reload the code location in the UI (Deployment) or run `tidemark up` "
                     "again; `tidemark status` shows dbt's message.")


def day_range_vars(first: date, last: date) -> dict[str, str]:
    """dbt vars selecting the days ``first``..``last`` (inclusive) of the daily marts."""
    return {"min_date": first.isoformat(), "max_date": last.isoformat()}
