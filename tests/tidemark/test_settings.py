"""Settings from the environment: defaults, validation, redaction."""

from __future__ import annotations

import os
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
    assert settings.reader_dsn() == (f"postgresql://tidemark_reader@127.0.0.1:{DEFAULT_PORT}"
                                     "/tidemark?sslmode=disable"  # no TLS on loopback
                                     f"&password=&passfile={tmp_path}/.tidemark/pgpass")
    assert f":{DEFAULT_PORT}/shop?sslmode=disable&" in settings.source_dsn()


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


def test_the_read_only_url_of_an_own_landing_server_is_the_reader_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On main it was the landing URL's own (writing, often superuser) role, masked, printed as
    # "SQL (read-only)" by `tidemark up` and as the reader URL by `tidemark db url`.
    monkeypatch.setenv("TIDEMARK_LANDING_URL",
                       "postgresql://admin:pw@lake.example:6432/landing?sslmode=require"
                       "&password=pw2&user=admin")
    assert load_settings().reader_dsn() == (
        "postgresql://tidemark_reader@lake.example:6432/landing?sslmode=require")


@pytest.mark.parametrize(("name", "value"), [
    ("TIDEMARK_SOURCE_URL", "mysql://root:hunter2@host/db"),
    # a key=value string is refused too; on main its password was echoed in the message
    ("TIDEMARK_LANDING_URL", "host=lake.example user=app password=hunter2"),
    ("TIDEMARK_LANDING_URL", "host=lake.example user=app password=a b hunter2"),
    # libpq cannot read it and its message quotes the token; on main it loaded, and then
    # `tidemark status` printed 'invalid percent-encoded token: "%zzhunter2"'
    ("TIDEMARK_LANDING_URL", "postgresql://app@lake.example/t?password=%zzhunter2"),
    ("TIDEMARK_LANDING_URL", "postgresql://app:x/hunter2@lake.example/t"),  # '/' unencoded
])
def test_malformed_external_url_is_refused_without_printing_the_password(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)
    assert "hunter2" not in str(info.value)


def test_redact_masks_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://u@h/d?sslmode=disable&password=Q1&x=1",
     "postgresql://u@h/d?sslmode=disable&password=***&x=1"),
    ("postgresql://u:pw@h/d?password=Q1", "postgresql://u:***@h/d?password=***"),
    ("host=h password=Q1 dbname=d", "host=h password=*** dbname=d"),
    ("host=h password = 'Q1 \\' Q1' dbname=d", "host=h password = *** dbname=d"),
    ("host=h password=Q1 Q1tail dbname=d", "host=h password=*** dbname=d"),  # malformed: all
])
def test_redact_masks_a_password_in_every_form_libpq_takes(given: str, shown: str) -> None:
    assert redact(given) == shown  # on main: the query and key=value forms came back unmasked


def test_a_password_in_the_url_query_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tidemark.cli.main import app

    monkeypatch.setenv("TIDEMARK_SOURCE_URL", "postgresql://app@db.example/shop?password=Q1zz")
    monkeypatch.setenv("TIDEMARK_LANDING_URL", "postgresql://app@lake.example/t?password=Q2zz")
    result = CliRunner().invoke(app, ["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert "lake.example" in result.output
    assert "Q1zz" not in result.output and "Q2zz" not in result.output
    for which in ("reader", "landing", "source"):  # on main `tidemark db url` printed Q2zz
        shown = CliRunner().invoke(app, ["db", "url", "--database", which]).output
        assert "Q1zz" not in shown and "Q2zz" not in shown and "example" in shown


def test_every_setting_is_typed_and_named_when_wrong(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TIDEMARK_")]:
        monkeypatch.delenv(name)  # e.g. set by a session fixture of another test package
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.setenv("TIDEMARK_CORRECTION_DAYS", "5")
    monkeypatch.setenv("TIDEMARK_INGEST_LAG_WARN_S", "90")
    monkeypatch.setenv("TIDEMARK_INGEST_LAG_ERROR_S", "30")
    monkeypatch.setenv("TIDEMARK_SLOT_WAL_WARN_GB", "0.5")
    monkeypatch.setenv("PORT", "80")  # another program's variable is not ours
    settings = load_settings()
    assert settings.correction_days == 5 and settings.port == DEFAULT_PORT
    assert settings.lag_thresholds == (30.0, 30.0)  # warn never above error
    assert settings.slot_wal_warn_gb == 0.5
    assert settings.dbt_target_dir == tmp_path / "dbt" / "target"
    for name, value in (("TIDEMARK_BATCH_CRON", "nightly"), ("TIDEMARK_CORRECTION_DAYS", "-1"),
                        ("TIDEMARK_LIVE_TARGET", "duckdb"),
                        ("TIDEMARK_PARTITIONS_START", "yesterday"),
                        ("TIDEMARK_SLOT_WAL_WARN_GB", "0"), ("TIDEMARK_SLOT_WAL_WARN_GB", "5GB")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=name):
            load_settings()
        monkeypatch.delenv(name)


def test_partitions_start_from_the_setting_else_the_recorded_first_day(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    monkeypatch.delenv("TIDEMARK_PARTITIONS_START", raising=False)
    assert load_settings().first_partition_day() is None
    (tmp_path / "partitions_start").write_text("2026-03-04\n")
    assert str(load_settings().first_partition_day()) == "2026-03-04"
    monkeypatch.setenv("TIDEMARK_PARTITIONS_START", "2026-01-02")
    assert str(load_settings().first_partition_day()) == "2026-01-02"


def test_the_correction_retry_policy_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """TIDEMARK_CORRECTION_ATTEMPTS / _BACKOFF_S (round 37): the correction sensor's limits,
    a bad value refused with its name and what it must be."""
    from tidemark.reconciliation.days import retry_policy

    monkeypatch.delenv("TIDEMARK_CORRECTION_ATTEMPTS", raising=False)
    monkeypatch.delenv("TIDEMARK_CORRECTION_BACKOFF_S", raising=False)
    policy = retry_policy()
    assert (policy.attempts, policy.backoff_s) == (3, 120.0)
    assert [policy.wait(n).total_seconds() for n in (1, 2)] == [120, 240]
    monkeypatch.setenv("TIDEMARK_CORRECTION_ATTEMPTS", "5")
    monkeypatch.setenv("TIDEMARK_CORRECTION_BACKOFF_S", "30")
    assert retry_policy().attempts == 5 and retry_policy().wait(3).total_seconds() == 120
    for name, value, must in (("TIDEMARK_CORRECTION_ATTEMPTS", "0", "greater than or equal to 1"),
                              ("TIDEMARK_CORRECTION_ATTEMPTS", "three", "valid integer"),
                              ("TIDEMARK_CORRECTION_BACKOFF_S", "-5", "greater than or equal"),
                              ("TIDEMARK_CORRECTION_BACKOFF_S", "2m", "valid number")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as info:
            retry_policy()
        assert name in str(info.value) and must in str(info.value)
        assert "README's Configuration section" in str(info.value)
        monkeypatch.delenv(name)
