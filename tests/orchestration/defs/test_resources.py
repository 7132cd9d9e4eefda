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
