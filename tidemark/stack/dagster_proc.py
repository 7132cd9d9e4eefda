"""Dagster for ``tidemark up``: webserver and daemon as supervised children.

:func:`start_dagster` sets ``DAGSTER_HOME`` to ``$TIDEMARK_HOME/dagster`` (SQLite storage there,
so runs, schedules and sensor cursors survive a restart), prepares the dbt manifest once
(``dbt parse``), and starts ``dagster-webserver`` and ``dagster-daemon`` on the code location
``orchestration.definitions``. The UI listens on 127.0.0.1 at ``TIDEMARK_DAGSTER_PORT``
(default 3000).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tidemark.errors import DagsterStartError
from tidemark.settings import Settings
from tidemark.stack.dbt import environment
from tidemark.stack.supervisor import Supervisor

DEFAULT_PORT = 3000
CODE_LOCATION = "orchestration.definitions"
DAGSTER_YAML = """\
# Written by `tidemark up`; edit freely, it is not overwritten.
storage:
  sqlite:
    base_dir: {storage}
run_queue:
  max_concurrent_runs: 2
telemetry:
  enabled: false
"""


def dagster_port() -> int:
    """``TIDEMARK_DAGSTER_PORT`` (default 3000).

    Raises:
        DagsterStartError: not a port number.
    """
    raw = os.environ.get("TIDEMARK_DAGSTER_PORT", "").strip() or str(DEFAULT_PORT)
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise DagsterStartError(f"TIDEMARK_DAGSTER_PORT must be a TCP port (1024-65535); "
                                f"got {raw!r}.")
    return int(raw)


def check_port_free(port: int) -> None:
    """Raise a clear error if something listens on 127.0.0.1:``port`` already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: connections of a previous run left in TIME_WAIT do not make the port
        # "taken"; a process listening on it still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DagsterStartError(
                f"Port {port} on 127.0.0.1 is taken, so the Dagster UI cannot start there. Stop "
                f"what uses it or set TIDEMARK_DAGSTER_PORT to a free port.") from None


def dagster_home(settings: Settings) -> Path:
    """``$TIDEMARK_HOME/dagster`` with a ``dagster.yaml`` (written once if missing)."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML.format(storage=home / "storage"), encoding="utf-8")
    return home


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DagsterStartError(f"{name} is not installed in this environment; run "
                                f"`pip install -e .` (it comes with dagster-webserver).")
    return found


def start_dagster(supervisor: Supervisor, settings: Settings, wait_s: float = 90.0) -> str:
    """Start the Dagster webserver and daemon as children of ``supervisor``.

    Args:
        supervisor: the ``tidemark up`` supervisor (its ``env`` is the children's environment).
        settings: the stack settings (``home`` holds Dagster's state and the dbt manifest).
        wait_s: wait this long for the UI to answer (0: do not wait).

    Returns:
        The UI URL, e.g. ``http://127.0.0.1:3000``.

    Raises:
        DagsterStartError: the port is taken, the manifest cannot be built, or a process died
            while starting (its log is named).
    """
    from orchestration.defs.dbt.project import prepare_manifest, tidemark_dbt_project

    port = dagster_port()
    check_port_free(port)
    home = dagster_home(settings)
    target = settings.home / "dbt" / "target"
    supervisor.env["DAGSTER_HOME"] = str(home)
    supervisor.env.setdefault("TIDEMARK_DBT_TARGET_PATH", str(target))
    with environment({"TIDEMARK_DBT_TARGET_PATH": supervisor.env["TIDEMARK_DBT_TARGET_PATH"]}):
        prepare_manifest(tidemark_dbt_project())
    create_storage(home)
    logs = settings.log_dir
    web = supervisor.start("dagster-webserver", [
        _executable("dagster-webserver"), "-m", CODE_LOCATION, "-h", "127.0.0.1",
        "-p", str(port)], logs / "dagster-webserver.log")
    daemon = supervisor.start("dagster-daemon", [
        _executable("dagster-daemon"), "run", "-m", CODE_LOCATION], logs / "dagster-daemon.log")
    url = f"http://127.0.0.1:{port}"
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        while not _answers(url):
            for child in (web, daemon):
                if child.process is not None and child.process.poll() is not None:
                    raise DagsterStartError(f"{child.name} exited with "
                                            f"{child.process.returncode} while starting; see "
                                            f"{child.log}.")
            if time.monotonic() > deadline:
                raise DagsterStartError(f"The Dagster UI did not answer on {url} within "
                                        f"{wait_s:.0f} s; see {web.log}.")
            time.sleep(0.5)
    return url


def create_storage(home: Path) -> None:
    """Create (or migrate) Dagster's storage in ``home`` once, before any Dagster process starts.

    The webserver and the daemon would otherwise both create a fresh SQLite storage at the same
    moment and can trip over each other (a table created twice, two migration heads).
    """
    from dagster import DagsterInstance

    with environment({"DAGSTER_HOME": str(home)}):
        instance = DagsterInstance.get()
        instance.dispose()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
