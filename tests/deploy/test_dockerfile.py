"""The app image's Dockerfile and .dockerignore, checked by reading them (no Docker engine here)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from tests.deploy.conftest import REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    """Every ENV KEY=value of the Dockerfile."""
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def test_base_image_is_pinned_python_311_slim() -> None:
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms[0]), froms[0]


def test_installs_the_project_without_dev_dependencies() -> None:
    installs = [shlex.split(rest) for word, rest in instructions()
                if word == "RUN" and "pip install" in rest]
    assert installs == [["pip", "install", ".[deploy]"]]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^deploy = \[\s*\"dagster-postgres==", pyproject, re.M)


def test_copies_exist_and_cover_the_packages() -> None:
    steps = instructions()
    sources = [shlex.split(rest)[:-1] for word, rest in steps if word == "COPY"]
    flat = [s for group in sources for s in group]
    for path in flat:
        assert (REPO / path).exists(), f"COPY {path}: not in the repository"
    for needed in ("pyproject.toml", "contracts", "ingestion", "streaming_views",
                   "orchestration", "dbt_project", "docker"):
        assert needed in flat, f"the image lacks {needed}"
    pip_at = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and "pip install" in r)
    package_copies = [i for i, (w, r) in enumerate(steps) if w == "COPY" and
                      r.split()[0] in ("contracts", "ingestion", "streaming_views",
                                       "orchestration", "tidemark")]
    assert max(package_copies) < pip_at


def test_runs_as_a_non_root_user() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(word == "RUN" and "useradd" in rest and users[-1] in rest
               for word, rest in steps)


def test_environment_matches_the_compose_file() -> None:
    env = env_of(instructions())
    compose: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    daemon = compose["services"]["dagster-daemon"]["environment"]
    assert env["DAGSTER_HOME"] == daemon["DAGSTER_HOME"]
    assert env["TIDEMARK_HOME"] == daemon["TIDEMARK_HOME"]
    assert env["PYTHONPATH"] == "/app"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert f"docker/dagster.yaml {env['DAGSTER_HOME']}/dagster.yaml" in runs
    # The manifest is prepared where the code location looks for it (TIDEMARK_DBT_TARGET_PATH).
    assert "python -m orchestration.defs.dbt.project" in runs
    assert env["TIDEMARK_DBT_TARGET_PATH"].startswith("/app/dbt_project/")
    storage = [v for v in compose["services"]["dagster-daemon"]["volumes"]]
    assert any(v.endswith(f":{env['DAGSTER_HOME']}/storage") for v in storage)


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", ".venv", ".tidemark", "tests", "**/*.env", ".env",
                   "dbt_project/target"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    assert not any(p.startswith("!") for p in patterns)
