"""Fixtures of the deploy tests: the repository's compose file, Dockerfile and container config,
and a fresh PostgreSQL cluster standing in for a new source or landing container."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import start_test_server
from tidemark.stack.embedded import EmbeddedServer, server_binary

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

# The development secrets the compose file is run with (docker/dev.env), as the containers see them.
DEV_ENV: dict[str, str] = dict(
    line.split("=", 1) for line in (DOCKER / "dev.env").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#"))


INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """``value`` with ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` substituted from
    ``env``, as Docker Compose does (a missing required variable raises KeyError)."""
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if kind in (":-", "-"):
            return env.get(name) or rest
        return env[name]
    return INTERPOLATION.sub(one, value)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed (YAML anchors and merge keys resolved)."""
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    return compose["services"]


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A brand-new PostgreSQL cluster (no Tidemark roles), like a container's first start."""
    server = start_test_server(tmp_path_factory.mktemp("deploy-fresh"), roles=False)
    yield server
    server.stop()


def run_psql_file(server: EmbeddedServer, database: str, script: Path,
                  env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with psql as the superuser, the way docker-entrypoint-initdb.d does.

    Args:
        server: the server to run it on.
        database: the database ($POSTGRES_DB of the container).
        script: the SQL file.
        env: extra environment (the container's passwords).

    Returns:
        The finished psql process (check ``returncode``).
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TIDEMARK_"))}
    return subprocess.run(
        [str(server_binary("psql")), "--no-psqlrc", "-v", "ON_ERROR_STOP=1",
         server.admin_url(database), "-f", str(script)],
        env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)
