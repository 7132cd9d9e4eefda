"""``tidemark up`` on a dbt project that does not parse: it starts, builds what needs no dbt, and
says where dbt failed; ``tidemark status`` names the file, the line and dbt's message.

On main the start stopped at ``dbt parse`` (exit 2, PostgreSQL stopped): one model with a Jinja
typo kept ingestion and the live views down too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.support import embedded_url, free_port
from tests.tidemark.test_up import TIDEMARK, UP_S, _start_up

REPO = Path(__file__).resolve().parents[2]
STORES = Path("models/staging/stg_shop__stores.sql")


@pytest.mark.slow
def test_up_starts_without_dbt_and_status_says_where_it_fails(tmp_path: Path,
                                                              monkeypatch) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(REPO / "dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    model = project / STORES
    model.write_text(model.read_text().replace("{{ source('shop', 'stores') }}",
                                               "{{ source('shop', 'stores') }"))
    monkeypatch.setenv("TIDEMARK_DBT_PROJECT_DIR", str(project))
    for name in ("TIDEMARK_DBT_TARGET_PATH", "TIDEMARK_PARTITIONS_START"):  # other tests' set
        monkeypatch.delenv(name, raising=False)  # their manifest: a user's home has none
    home, port = tmp_path / "home", free_port()
    proc, out = _start_up(home, port, "--duration", "2", "--rate", "0")
    try:
        code = proc.wait(UP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.read_text()
    assert code == 0, log
    assert "dbt parse FAILED at models/staging/stg_shop__stores.sql line 4: unexpected '}'" \
        in log, log
    assert "Dagster starts without dbt assets" in log
    assert "no dbt model (the project does not parse)" in log and "Tidemark is up" in log
    assert "Traceback" not in log

    env = {**os.environ, "TIDEMARK_HOME": str(home), "TIDEMARK_PG_PORT": str(port)}
    subprocess.run([TIDEMARK, "db", "start"], env=env, check=True, capture_output=True)
    try:
        with psycopg.connect(embedded_url(home, port, "tidemark")) as conn:
            assert conn.execute("select count(*) from live.daily_store_revenue"
                                ).fetchone()[0] > 0, "the live views were built"
        status = subprocess.run([TIDEMARK, "status", "--json"], env=env, capture_output=True,
                                text=True, timeout=300, check=False)
    finally:
        subprocess.run([TIDEMARK, "db", "stop"], env=env, check=False, capture_output=True)
    dbt = json.loads(status.stdout)["dbt"]
    assert dbt["parses"] is False, dbt
    assert dbt["failure"]["where"] == "models/staging/stg_shop__stores.sql line 4"
    assert "unexpected '}'" in dbt["failure"]["message"]
    assert "Dagster has no dbt assets" in dbt["advice"]
