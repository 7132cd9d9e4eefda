"""docker-compose.yml, checked by parsing it (no Docker engine here): services, pinned images,
ports, healthchecks, start order, environment, secrets, and that every `tidemark` command it runs
exists in the real CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from streaming_views import load_views
from tests.deploy.conftest import DEV_ENV, DOCKER, INTERPOLATION, REPO, interpolate
from tidemark.cli.main import app as cli_app
from tidemark.reconciliation.tags import CORRECTION_SLOTS, CORRECTION_TAG
from tidemark.stack.dagster_proc import DAGSTER_YAML

APP_SERVICES = ("demo-schema", "ingest", "views-deploy", "dagster-webserver", "dagster-daemon",
                "loadgen")
EXPECTED = {"source", "landing", "materialize", "materialize-init", *APP_SERVICES}


def container_ports(service: dict[str, Any]) -> dict[int, str]:
    """``{container port: host binding}`` of a service's short-syntax ports."""
    out = {}
    for spec in service.get("ports", []):
        *host, container = str(spec).split(":")
        out[int(container)] = ":".join(host)
    return out


def urls(service: dict[str, Any]) -> dict[str, str]:
    """PostgreSQL URLs of a service's environment, interpolated with docker/dev.env."""
    env = service.get("environment", {})
    return {k: interpolate(str(v), DEV_ENV) for k, v in env.items()
            if str(v).startswith("postgresql://")}


def script_text(folder: str) -> str:
    """All init SQL of one container, concatenated."""
    return "\n".join(p.read_text() for p in sorted((DOCKER / folder).glob("*.sql")))


def test_every_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == EXPECTED
    assert services["loadgen"]["profiles"] == ["load"]
    assert all("profiles" not in s for name, s in services.items() if name != "loadgen")


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and "/" not in tag, f"{name}: {image!r} is not pinned"
    assert re.fullmatch(r"postgres:\d+\.\d+", services["source"]["image"])
    assert services["landing"]["image"] == services["source"]["image"]
    assert re.fullmatch(r"materialize/materialized:v\d+\.\d+\.\d+",
                        services["materialize"]["image"])
    app_images = {services[s]["image"] for s in APP_SERVICES}
    assert len(app_images) == 1
    for name in APP_SERVICES:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_source_runs_with_logical_replication(services: dict[str, dict[str, Any]]) -> None:
    command = services["source"]["command"]
    settings = dict(command[i + 1].split("=", 1) for i, word in enumerate(command)
                    if word == "-c")
    assert command[0] == "postgres"
    assert settings["wal_level"] == "logical"
    assert int(settings["max_replication_slots"]) >= 4  # ingestion + Materialize + resyncs
    assert int(settings["max_wal_senders"]) >= 4
    env = services["source"]["environment"]
    assert env["POSTGRES_DB"] == "shop"
    assert services["landing"]["environment"]["POSTGRES_DB"] == "tidemark"


def test_ports(services: dict[str, dict[str, Any]]) -> None:
    assert 5432 in container_ports(services["source"])
    assert 5432 in container_ports(services["landing"])
    assert {6875, 6876, 6878} <= set(container_ports(services["materialize"]))
    assert 3000 in container_ports(services["dagster-webserver"])
    for name, service in services.items():
        for port, host in container_ports(service).items():
            assert host.startswith("127.0.0.1:"), f"{name}:{port} is published on every interface"


def test_databases_and_materialize_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, database in (("source", "shop"), ("landing", "tidemark")):
        test = services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "pg_isready"]
        # Over TCP: the entrypoint's init-time server listens on the socket only.
        assert test[test.index("-h") + 1] == "127.0.0.1"
        assert test[test.index("-d") + 1] == database
    mz = services["materialize"]["healthcheck"]
    assert mz["test"][0] == "CMD" and "curl" in mz["test"]
    assert any(w.endswith("6878/api/readyz") for w in mz["test"])
    assert "start_period" in mz
    assert "server_info" in " ".join(services["dagster-webserver"]["healthcheck"]["test"])


@pytest.mark.parametrize(("service", "needs"), [
    ("ingest", {"source": "service_healthy", "landing": "service_healthy",
                "demo-schema": "service_completed_successfully"}),
    ("views-deploy", {"materialize": "service_healthy",
                      "materialize-init": "service_completed_successfully",
                      "demo-schema": "service_completed_successfully"}),
    ("materialize-init", {"materialize": "service_healthy"}),
    ("demo-schema", {"source": "service_healthy", "landing": "service_healthy"}),
    ("dagster-webserver", {"landing": "service_healthy", "source": "service_healthy"}),
    ("dagster-daemon", {"landing": "service_healthy", "source": "service_healthy"}),
    ("loadgen", {"demo-schema": "service_completed_successfully"}),
])
def test_start_order(services: dict[str, dict[str, Any]], service: str,
                     needs: dict[str, str]) -> None:
    depends = services[service]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == needs


def test_one_shot_services_do_not_restart(services: dict[str, dict[str, Any]]) -> None:
    for name in ("materialize-init", "demo-schema", "views-deploy"):
        assert services[name]["restart"] == "no"
    for name in ("source", "landing", "materialize", "ingest", "dagster-webserver",
                 "dagster-daemon"):
        assert services[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize(("service", "variables"), [
    ("ingest", {"TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL"}),
    ("demo-schema", {"TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL"}),
    ("loadgen", {"TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL"}),
    ("views-deploy", {"TIDEMARK_MATERIALIZE_URL", "TIDEMARK_MZ_SOURCE_URL",
                      "TIDEMARK_MZ_SOURCE_PASSWORD"}),
    ("dagster-webserver", {"TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL",
                           "TIDEMARK_MATERIALIZE_URL", "TIDEMARK_LIVE_TARGET",
                           "TIDEMARK_DBT_HOST", "TIDEMARK_DBT_USER", "TIDEMARK_DBT_PASSWORD",
                           "TIDEMARK_DBT_DBNAME", "DAGSTER_HOME", "DAGSTER_POSTGRES_HOST",
                           "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                           "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"}),
])
def test_app_services_get_their_settings(services: dict[str, dict[str, Any]], service: str,
                                         variables: set[str]) -> None:
    env = services[service]["environment"]
    assert variables <= set(env)
    assert all(str(env[v]).strip() for v in variables)


def test_dagster_services_share_one_configuration(services: dict[str, dict[str, Any]]) -> None:
    web, daemon = services["dagster-webserver"], services["dagster-daemon"]
    assert web["environment"] == daemon["environment"]
    assert web["environment"]["TIDEMARK_LIVE_TARGET"] == "materialize"
    assert web["volumes"] == daemon["volumes"]
    workspace = web["command"][web["command"].index("-w") + 1]
    assert workspace == daemon["command"][daemon["command"].index("-w") + 1]
    assert workspace == "/app/docker/workspace.yaml"
    assert web["command"][0] == "dagster-webserver" and daemon["command"][:2] == [
        "dagster-daemon", "run"]


def test_connection_urls_point_at_services_and_init_roles(
        services: dict[str, dict[str, Any]]) -> None:
    roles = {"source": script_text("source"), "landing": script_text("landing")}
    seen = 0
    for name, service in services.items():
        for var, url in urls(service).items():
            parts = urlsplit(url)
            assert parts.hostname in services, f"{name}.{var}: unknown host {parts.hostname}"
            target = services[parts.hostname]
            assert parts.port in container_ports(target) or parts.port == 5432, (name, var)
            if parts.hostname in roles:
                assert f"'{parts.username}'" in roles[parts.hostname], (
                    f"{name}.{var}: role {parts.username} is not created by "
                    f"docker/{parts.hostname}/")
                dbname = target["environment"]["POSTGRES_DB"]
                assert parts.path == f"/{dbname}", (name, var)
            seen += 1
    assert seen >= 10
    # Each process connects as the least-privileged role it needs, never as the superuser.
    assert urlsplit(urls(services["ingest"])["TIDEMARK_SOURCE_URL"]).username == \
        "tidemark_ingest"
    assert urlsplit(urls(services["ingest"])["TIDEMARK_LANDING_URL"]).username == \
        "tidemark_app"
    assert urlsplit(urls(services["views-deploy"])["TIDEMARK_MZ_SOURCE_URL"]
                    ).username == "tidemark_materialize"
    assert urlsplit(urls(services["loadgen"])["TIDEMARK_SOURCE_URL"]).username == "shop_app"
    assert all(urlsplit(u).username != "postgres"
               for s in services.values() for u in urls(s).values())


def test_secrets_come_from_the_environment() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    data = yaml.safe_load(text)
    for name, service in data["services"].items():
        for var, value in service.get("environment", {}).items():
            value = str(value)
            if "PASSWORD" in var:
                match = INTERPOLATION.fullmatch(value)
                assert match and match.group(2) == ":?", f"{name}.{var} must be ${{VAR:?...}}"
            if value.startswith("postgresql://"):
                userinfo = value.split("://", 1)[1].rsplit("@", 1)
                if len(userinfo) == 2 and ":" in userinfo[0]:
                    password = userinfo[0].split(":", 1)[1]
                    match = INTERPOLATION.fullmatch(password)
                    assert match and match.group(2) == ":?", f"{name}.{var}: literal password"
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    required = {m.group(1) for m in INTERPOLATION.finditer(code) if m.group(2) == ":?"}
    # `--env-file docker/dev.env` satisfies every required variable, with dev-only values.
    assert required == set(DEV_ENV)
    assert all(v.startswith("dev-only-") for v in DEV_ENV.values())


def test_mounted_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    named = set(yaml.safe_load((REPO / "docker-compose.yml").read_text())["volumes"])
    mounts = 0
    for name, service in services.items():
        for spec in service.get("volumes", []):
            host = spec.split(":")[0]
            if host.startswith("."):
                assert (REPO / host).is_dir(), f"{name}: {host} does not exist"
                assert list((REPO / host).glob("*.sql")), f"{name}: no SQL in {host}"
            else:
                assert host in named, f"{name}: volume {host} is not declared"
            mounts += 1
    assert mounts >= 6
    init = services["materialize-init"]["command"]
    script = init[init.index("-f") + 1]
    assert (DOCKER / "materialize" / Path(script).name).is_file()


def test_materialize_clusters_of_the_views_are_created() -> None:
    clusters = {v.cluster for v in load_views()}
    sql = (DOCKER / "materialize" / "10-clusters.sql").read_text()
    created = set(re.findall(r"CREATE CLUSTER (\w+)", sql))
    assert clusters - {"quickstart"} <= created


def test_materialize_emulator_settings(services: dict[str, dict[str, Any]]) -> None:
    env = services["materialize"]["environment"]
    assert env["MZ_EAT_MY_DATA"] == "1" and env["MZ_NO_TELEMETRY"] == "1"
    url = urlsplit(urls(services["views-deploy"])["TIDEMARK_MATERIALIZE_URL"])
    assert (url.hostname, url.port, url.username, url.path) == (
        "materialize", 6875, "materialize", "/materialize")


def _command_words(command: list[str]) -> tuple[list[str], list[str]]:
    words = list(command[1:])
    path = []
    while words and not words[0].startswith("-"):
        path.append(words.pop(0))
    return path, [w for w in words if w.startswith("--")]


def test_every_tidemark_command_exists_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    root = typer.main.get_command(cli_app)
    checked = 0
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "tidemark":
            continue
        path, options = _command_words(command)
        node = root
        for word in path:
            assert hasattr(node, "commands"), f"{name}: {' '.join(path)}: {word} has no commands"
            assert word in node.commands, f"{name}: `tidemark {' '.join(path)}`: no {word!r}"
            node = node.commands[word]
        assert not hasattr(node, "commands"), f"{name}: `tidemark {' '.join(path)}` is a group"
        known = {opt for param in node.params for opt in param.opts}
        assert set(options) <= known, f"{name}: unknown options {set(options) - known}"
        checked += 1
    assert checked == 4  # demo schema, ingest run, views deploy, demo load


def test_dagster_instance_config_uses_postgres_from_the_environment(
        services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    env_vars = {field: spec["env"] for field, spec in db.items()}
    assert env_vars == {"hostname": "DAGSTER_POSTGRES_HOST", "port": "DAGSTER_POSTGRES_PORT",
                        "username": "DAGSTER_POSTGRES_USER",
                        "password": "DAGSTER_POSTGRES_PASSWORD", "db_name": "DAGSTER_POSTGRES_DB"}
    env = services["dagster-daemon"]["environment"]
    assert set(env_vars.values()) <= set(env)
    assert env["DAGSTER_POSTGRES_HOST"] in services
    assert "'dagster'" in script_text(env["DAGSTER_POSTGRES_HOST"])
    queue = config["run_coordinator"]["config"]
    # the same tag and limit as the sensor's runs and `tidemark up`'s dagster.yaml (one source)
    assert queue["tag_concurrency_limits"] == [{"key": CORRECTION_TAG,
                                                "limit": CORRECTION_SLOTS}]
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]
    assert (location["module_name"], location["attribute"]) == ("orchestration.definitions",
                                                                "defs")


def test_the_correction_limit_is_the_same_in_both_stacks(tmp_path: Path) -> None:
    # docker/dagster.yaml is a static file: it must name the tag the sensor sets on correction
    # runs (orchestration.defs.keys.CORRECTION_TAG) with the limit `tidemark up` writes
    from orchestration.defs.keys import CORRECTION_TAG as sensor_tag

    docker = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    up = yaml.safe_load(DAGSTER_YAML.format(storage=tmp_path))
    limits = docker["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == up["run_queue"]["tag_concurrency_limits"]
    assert limits == [{"key": sensor_tag, "limit": CORRECTION_SLOTS}]
    assert sensor_tag == CORRECTION_TAG
    # and both retry a run whose code server does not answer yet
    retries = ("max_user_code_failure_retries", "user_code_failure_retry_delay")
    assert [docker["run_coordinator"]["config"][k] for k in retries] == [
        up["run_queue"][k] for k in retries] == [5, 30]
