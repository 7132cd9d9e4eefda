"""The Dagster workspace of the app image loads: the manifest prepared as the Dockerfile does it,
docker/workspace.yaml, and the environment the compose file gives the Dagster services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import DEV_ENV, DOCKER, REPO, interpolate


def compose_env(services: dict[str, dict[str, Any]], service: str) -> dict[str, str]:
    """A service's environment as the container sees it (interpolated with docker/dev.env)."""
    return {k: interpolate(str(v), DEV_ENV) for k, v in services[service]["environment"].items()}


def test_workspace_loads_with_the_compose_environment(
        services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    target = tmp_path / "dbt-target"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "DAGSTER_"))}
    # As the Dockerfile: `RUN python -m orchestration.defs.dbt.project` (target path set).
    prepared = subprocess.run(
        [sys.executable, "-m", "orchestration.defs.dbt.project"], cwd=REPO, capture_output=True,
        text=True, timeout=600, check=False,
        env={**base, "TIDEMARK_DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(tmp_path)})
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert (target / "manifest.json").is_file()

    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]
    assert location["working_directory"] == "/app"  # the image's tree; here: the repository
    location["working_directory"] = str(REPO)
    local = tmp_path / "workspace.yaml"
    local.write_text(yaml.safe_dump(workspace))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**base, **compose_env(services, "dagster-daemon"),
           "TIDEMARK_DBT_TARGET_PATH": str(target), "DAGSTER_HOME": str(home),
           "PYTHONPATH": str(REPO)}
    # Loading must not connect anywhere: the compose hosts (landing, source...) do not resolve here.
    validated = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
         str(local)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        check=False)
    output = validated.stdout + validated.stderr
    assert validated.returncode == 0, output[-3000:]
    assert "tidemark" in output
