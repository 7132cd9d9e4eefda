"""Settings from the environment: defaults, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.errors import SettingsError
from tidemark.settings import DEFAULT_PORT, load_settings, redact


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TIDEMARK_HOME", "TIDEMARK_PG_PORT", "TIDEMARK_SOURCE_URL",
                 "TIDEMARK_LANDING_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.home == tmp_path / ".tidemark"
    assert settings.port == DEFAULT_PORT
    assert settings.uses_embedded
    assert settings.reader_dsn() == f"postgresql://tidemark_reader@127.0.0.1:{DEFAULT_PORT}/tidemark"
    assert settings.source_dsn().endswith(f":{DEFAULT_PORT}/shop")


@pytest.mark.parametrize("port", ["abc", "80", "70000"])
def test_bad_port_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("TIDEMARK_PG_PORT", port)
    with pytest.raises(SettingsError, match="TIDEMARK_PG_PORT"):
        load_settings()


def test_external_urls_replace_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_SOURCE_URL", "postgresql://app:s3cret@db.example:5432/shop")
    monkeypatch.setenv("TIDEMARK_LANDING_URL", "postgresql://app@lake.example/landing")
    settings = load_settings()
    assert not settings.uses_embedded
    assert settings.source_dsn() == "postgresql://app:s3cret@db.example:5432/shop"
    assert "s3cret" not in settings.reader_dsn()


def test_malformed_external_url_is_refused_without_printing_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDEMARK_SOURCE_URL", "mysql://root:hunter2@host/db")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "TIDEMARK_SOURCE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_redact_masks_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
