"""Every dbt command of the README runs as written from the repository root, and ``dbt build``
passes while the demo load writes to the source and ingestion lands it.

The commands are read from the README's code blocks (a command is a line starting with ``dbt ``,
continued by a trailing backslash, comments stripped) and run in a shell-less subprocess with
the landing database in the environment, as a person who exported it would.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dbt_project.conftest import Landed

REPO = Path(__file__).resolve().parents[2]
DBT = str(Path(sys.executable).parent / "dbt")
BROKEN = re.compile(r"(Compilation|Runtime|Database|Parsing) Error|Encountered an error")


def readme_dbt_commands() -> list[str]:
    """The ``dbt ...`` commands of the README's code blocks, one string each."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = iter(block.splitlines())
        for line in lines:
            if not line.startswith("dbt "):
                continue
            while line.rstrip().endswith("\\"):
                line = line.rstrip()[:-1] + " " + next(lines).strip()
            commands.append(re.sub(r"\s+#.*$", "", line).strip())
    return commands


def run(command: str, env: dict[str, str], targets: Path | None = None
        ) -> subprocess.CompletedProcess:
    """Run one README ``dbt`` command from the repository root.

    Args:
        command: the command as the README writes it.
        env: the environment (the landing database's ``TIDEMARK_DBT_*``, ``DBT_TARGET_PATH``).
        targets: when given, a command with ``--vars`` writes ``target/`` to a directory of its
            own under it, one per ``--vars`` value: dbt parses the whole project again whenever
            the vars differ from those of the last parse in its target path (its partial parsing
            keys on them), so alternating values would each cost a full parse (~13-40 s); this
            way a repeated value, and every command without ``--vars``, parses only what changed.
            The commands and their arguments are unchanged.
    """
    argv = shlex.split(command)
    if targets is not None and "--vars" in argv:
        vars_text = argv[argv.index("--vars") + 1]
        digest = hashlib.sha256(vars_text.encode()).hexdigest()[:12]
        env = {**env, "DBT_TARGET_PATH": str(targets / f"vars-{digest}")}
    return subprocess.run([DBT, *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_the_readme_shows_its_dbt_commands() -> None:
    commands = readme_dbt_commands()
    assert len(commands) >= 8
    assert all("--project-dir dbt_project" in c and "--profiles-dir dbt_project" in c
               for c in commands), commands


@pytest.mark.slow
def test_every_readme_dbt_command_runs_from_the_repository_root(landed: Landed,
                                                                tmp_path: Path) -> None:
    env = {**os.environ, **landed.dbt.env}
    for command in readme_dbt_commands():
        result = run(command, env, targets=tmp_path)
        output = result.stdout + result.stderr
        if command.startswith("dbt source freshness"):
            # Exit 1 means a source is stale (a finding about the data), not a broken command.
            assert result.returncode in (0, 1) and not BROKEN.search(output), output[-3000:]
            continue
        assert result.returncode == 0, f"{command}\n{output[-3000:]}"


@pytest.mark.slow
def test_dbt_build_passes_while_the_demo_load_runs(tmp_path: Path) -> None:
    """The README's ``dbt build``, on its own source and landing (the slot name is per server),
    while the demo load writes and ingestion lands its changes."""
    from contracts import load_contracts
    from ingestion import catch_up
    from tests.dbt_project.dbt_runner import DbtProject
    from tests.support import create_contracted_tables, create_database, start_test_server
    from tidemark.demo.load import run_load
    from tidemark.demo.seed import seed_history

    server = start_test_server(tmp_path / "home")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        source, landing = (create_database(server, "busy_source"),
                           create_database(server, "busy_landing"))
        seed_history(source, days=3, orders_per_day=400, seed=3,
                     end=datetime.now(UTC) - timedelta(seconds=30))
        contracts = load_contracts()
        create_contracted_tables(source, contracts)  # a user's own tables, empty
        catch_up(source, landing, "shop", contracts=contracts)
        env = {**os.environ, **DbtProject(landing, tmp_path / "dbt").env}
        first = run("dbt build --project-dir dbt_project --profiles-dir dbt_project", env)
        assert first.returncode == 0, first.stdout[-3000:]

        def land() -> None:
            while not stop.is_set():
                catch_up(source, landing, "shop", contracts=contracts)
                stop.wait(0.5)

        threads = [threading.Thread(target=run_load, args=(source, 300.0, 600.0),
                                    kwargs={"seed": 9, "stop": stop}, daemon=True),
                   threading.Thread(target=land, daemon=True)]
        for thread in threads:
            thread.start()
        stop.wait(3)
        busy = run("dbt build --project-dir dbt_project --profiles-dir dbt_project", env)
        assert busy.returncode == 0, busy.stdout[-4000:]
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        server.stop()
