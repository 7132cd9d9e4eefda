"""The tidemark resource: URLs from the stack settings at run time, thresholds, targets."""

from __future__ import annotations

import pytest

from orchestration.defs.errors import DefinitionsError
from orchestration.defs.resources import TidemarkResource
from tests.support import embedded_url
from tidemark.errors import SettingsError


def test_urls_default_to_the_stack_settings(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_PG_PORT", "56789")
    monkeypatch.delenv("TIDEMARK_SOURCE_URL", raising=False)
    monkeypatch.delenv("TIDEMARK_LANDING_URL", raising=False)
    urls = TidemarkResource().urls()  # no connection is made
    assert urls.landing_app == embedded_url(tmp_path, 56789, "tidemark", "tidemark_app")
    assert urls.source_ingest == embedded_url(tmp_path, 56789, "shop", "tidemark_ingest")
    explicit = TidemarkResource(landing_app_url="postgresql://u@h:1/x").urls()
    assert explicit.landing_app == "postgresql://u@h:1/x"
    assert explicit.source == embedded_url(tmp_path, 56789, "shop")


def test_thresholds_and_target(monkeypatch) -> None:
    monkeypatch.setenv("TIDEMARK_INGEST_LAG_WARN_S", "10")
    monkeypatch.setenv("TIDEMARK_INGEST_LAG_ERROR_S", "20")
    assert TidemarkResource().lag_thresholds() == (10.0, 20.0)
    assert TidemarkResource(lag_warn_s=30.0).lag_thresholds() == (20.0, 20.0)
    monkeypatch.setenv("TIDEMARK_INGEST_LAG_ERROR_S", "soon")
    with pytest.raises(SettingsError, match="TIDEMARK_INGEST_LAG_ERROR_S"):
        TidemarkResource().lag_thresholds()
    monkeypatch.delenv("TIDEMARK_INGEST_LAG_ERROR_S")
    monkeypatch.setenv("TIDEMARK_LIVE_TARGET", "duckdb")
    with pytest.raises(SettingsError, match="TIDEMARK_LIVE_TARGET"):
        TidemarkResource().target()
    monkeypatch.delenv("TIDEMARK_LIVE_TARGET")
    with pytest.raises(DefinitionsError, match="embedded or materialize"):
        TidemarkResource(live_target="duckdb").target()
    monkeypatch.delenv("TIDEMARK_MATERIALIZE_URL", raising=False)
    with pytest.raises(DefinitionsError, match="TIDEMARK_MATERIALIZE_URL"):
        TidemarkResource(live_target="materialize").mz_url()


def test_dbt_runs_as_the_dbt_role_without_the_environments_secrets(monkeypatch,
                                                                   tmp_path) -> None:
    # dagster-dbt gives its dbt child a copy of os.environ: on main that held PGPASSWORD,
    # the sources' URLs and passwords, and dbt logged in as tidemark_app. Round 30 took the
    # secrets out of os.environ while the child started: every other thread of the process
    # saw them missing meanwhile. Round 31: dbt-child starts dbt without them, and this
    # process's environment is never without them.
    import os
    import threading
    import time
    from pathlib import Path

    from orchestration.defs.dbt.project import tidemark_dbt_project
    from orchestration.defs.dbt.resource import TidemarkDbtResource
    from tidemark.stack.dbt import dbt_child_executable, dbt_executable

    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_PG_PORT", "56789")
    monkeypatch.delenv("TIDEMARK_LANDING_URL", raising=False)
    monkeypatch.setenv("PGPASSWORD", "pg-secret")
    monkeypatch.setenv("TIDEMARK_SOURCE_CRM_PASSWORD", "source-secret")
    monkeypatch.setenv("TIDEMARK_MATERIALIZE_URL", "postgresql://mz:mz-secret@h:6875/mz")
    missing: list[str] = []
    starting = threading.Event()

    def other_thread() -> None:  # e.g. a sensor or a log handler of the same process
        while starting.is_set():
            if os.environ.get("PGPASSWORD") != "pg-secret":
                missing.append("PGPASSWORD")
            time.sleep(0.0005)

    dbt = TidemarkDbtResource(project_dir=tidemark_dbt_project(),
                              dbt_executable=dbt_child_executable())
    starting.set()
    watcher = threading.Thread(target=other_thread)
    watcher.start()
    try:
        invocation = TidemarkResource().dbt_cli(dbt, ["debug", "--config-dir"],
                                                {"DBT_INDIRECT_SELECTION": "eager"},
                                                target_path=tmp_path / "run",
                                                raise_on_error=False)
    finally:
        starting.clear()
        watcher.join(5)
    assert missing == []
    assert os.environ["TIDEMARK_MATERIALIZE_URL"].startswith("postgresql://mz:")
    assert "TIDEMARK_DBT_USER" not in os.environ
    proc = Path(f"/proc/{invocation.process.pid}")
    deadline = time.monotonic() + 60
    while dbt_executable() not in (proc / "cmdline").read_bytes().decode().split("\0"):
        assert time.monotonic() < deadline, "dbt-child did not exec dbt"
        time.sleep(0.01)  # the shell, then python -m tidemark.stack.dbtchild, then dbt
    raw = (proc / "environ").read_bytes().split(b"\0")  # dbt's environment from its start
    child = dict(v.decode().split("=", 1) for v in raw if b"=" in v)
    invocation.wait()
    assert child["TIDEMARK_DBT_USER"] == "tidemark_dbt"
    assert child["TIDEMARK_DBT_PASSWORD"] == ""  # libpq reads PGPASSFILE
    assert child["DBT_INDIRECT_SELECTION"] == "eager"
    for name in ("PGPASSWORD", "TIDEMARK_SOURCE_CRM_PASSWORD", "TIDEMARK_MATERIALIZE_URL"):
        assert name not in child
    with pytest.raises(DefinitionsError, match="dbt_child_executable"):
        TidemarkResource().dbt_cli(
            TidemarkDbtResource(project_dir=tidemark_dbt_project(),
                                dbt_executable=dbt_executable()), ["debug"])


def test_dbt_url_on_your_own_landing_server(monkeypatch, caplog) -> None:
    monkeypatch.setenv("TIDEMARK_LANDING_URL", "postgresql://owner:pw@landing.example/tidemark")
    monkeypatch.delenv("TIDEMARK_LANDING_DBT_URL", raising=False)
    from tidemark.stack import databases

    monkeypatch.setattr(databases, "_warned", set())  # once per process: this test's turn
    with caplog.at_level("WARNING"):
        urls = TidemarkResource().urls()  # falls back, with a warning, never fails
    assert "TIDEMARK_LANDING_DBT_URL is not set" in caplog.text
    assert urls.landing_dbt.startswith("postgresql://owner:pw@landing.example/tidemark")
    monkeypatch.setenv("TIDEMARK_LANDING_DBT_URL", "postgresql://tidemark_dbt@landing.example/t")
    assert TidemarkResource().urls().landing_dbt.startswith(
        "postgresql://tidemark_dbt@landing.example/t")


def test_observing_sensors_skip_with_a_way_forward_when_the_databases_do_not_answer(
        monkeypatch, tmp_path) -> None:
    import dagster as dg

    from orchestration.defs.ingestion.sensors import dead_letter_alert, ingestion_observer
    from orchestration.defs.live_views.sensors import freshness_observer
    from tests.support import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    resource = TidemarkResource(source_url=url, source_ingest_url=url, landing_url=url,
                                landing_app_url=url)
    for sensor in (ingestion_observer, dead_letter_alert, freshness_observer):
        context = dg.build_sensor_context(resources={"tidemark": resource})
        result = sensor(context)
        assert isinstance(result, dg.SkipReason), (sensor.name, result)
        assert "not reachable" in result.skip_message, result.skip_message
        assert "tidemark up" in result.skip_message, result.skip_message


def test_observe_warns_of_failing_checks_and_keeps_the_cursor_only_with_events(capfd) -> None:
    import dagster as dg

    from orchestration.defs.resources import observe

    failing = dg.AssetCheckEvaluation(asset_key=dg.AssetKey("t"), check_name="c", passed=False,
                                      description="t is 5 minutes behind")
    context = dg.build_sensor_context()
    result = observe(context, lambda: ([failing], '{"t": 1}'), "nothing changed")
    assert isinstance(result, dg.SensorResult)
    assert result.cursor == '{"t": 1}' and result.asset_events == [failing]
    logged = capfd.readouterr()
    assert "WARNING - t is 5 minutes behind" in logged.err + logged.out
    idle = observe(context, lambda: ([], '{"t": 2}'), "nothing changed")
    assert isinstance(idle, dg.SkipReason) and idle.skip_message == "nothing changed"
