"""to_dbt_source_yaml: the generated dbt sources are well-formed — they pass dbt's own JSON schema
for property files, and a real ``dbt parse`` turns them into source and test nodes with the
contracts' freshness, loaded-at fields and tests, without warnings."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbt.jsonschemas.jsonschemas import CustomDraft7Validator, resources_schema

from contracts import ContractNotFoundError, ContractSet, to_dbt_source_yaml
from contracts.dbt import dbt_period


@pytest.fixture(scope="module")
def generated(shipped: ContractSet) -> dict[str, Any]:
    return to_dbt_source_yaml(shipped, "shop")


def tables_of(generated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in generated["sources"][0]["tables"]}


def test_shape_and_mapping(generated: dict[str, Any], shipped: ContractSet) -> None:
    assert generated["version"] == 2
    [source] = generated["sources"]
    assert (source["name"], source["schema"]) == ("shop", "shop")
    tables = tables_of(generated)
    assert set(tables) == {t.name for t in shipped.tables("shop")}
    orders = tables["orders"]
    assert orders["config"]["loaded_at_field"] == "updated_at"
    assert orders["config"]["freshness"] == {"warn_after": {"count": 15, "period": "minute"},
                                             "error_after": {"count": 1, "period": "hour"}}
    assert orders["config"]["meta"]["contract"] == {
        "version": 1, "primary_key": ["order_id"], "event_time": "placed_at",
        "idempotency_key": None, "compatibility": "backward", "allowed_lateness_seconds": 7200}
    columns = {c["name"]: c for c in orders["columns"]}
    assert list(columns) == list(shipped.table("shop", "orders").columns)
    assert columns["order_id"]["data_tests"] == ["not_null", "unique"]
    assert columns["order_id"]["config"] == {"meta": {"contract": {"min": 1}}}
    assert columns["status"]["data_tests"] == [
        "not_null", {"accepted_values": {"arguments": {
            "values": ["placed", "paid", "delivered", "cancelled"]}}}]
    assert "data_tests" not in columns["delivery_notes"]
    assert columns["total_amount"]["data_type"] == "numeric(12,2)"
    assert tables["app_events"]["config"]["loaded_at_field"] == "received_at"
    assert tables["stores"]["config"]["freshness"] is None
    assert "loaded_at_field" not in tables["stores"]["config"]
    items = {c["name"]: c for c in tables["order_items"]["columns"]}
    assert "unique" not in items["order_id"]["data_tests"]  # composite key: no unique test
    event_type = {c["name"]: c for c in tables["app_events"]["columns"]}["event_type"]
    assert event_type["data_tests"][1]["accepted_values"]["arguments"]["values"] == [
        "session_started", "cart_item_added", "checkout_started"]


def test_passes_dbts_property_file_schema(generated: dict[str, Any]) -> None:
    """dbt-core ships this schema of property files but applies it only for some adapters (not
    postgres), so it is applied here directly: any key dbt would call deprecated fails."""
    document = yaml.safe_load(yaml.safe_dump(generated, sort_keys=False))
    errors = [f"{list(e.path)}: {e.message}"
              for e in CustomDraft7Validator(resources_schema()).iter_errors(document)]
    assert errors == []


def test_dbt_period() -> None:
    assert dbt_period(timedelta(days=2)) == {"count": 2, "period": "day"}
    assert dbt_period(timedelta(hours=6)) == {"count": 6, "period": "hour"}
    assert dbt_period(timedelta(minutes=90)) == {"count": 90, "period": "minute"}
    with pytest.raises(ValueError, match="whole minutes"):
        dbt_period(timedelta(seconds=30))


def test_unknown_source(shipped: ContractSet) -> None:
    with pytest.raises(ContractNotFoundError, match="crm"):
        to_dbt_source_yaml(shipped, "crm")


def test_dbt_parse_accepts_the_sources(generated: dict[str, Any], tmp_path: Path) -> None:
    from dbt.cli.main import dbtRunner

    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(yaml.safe_dump({
        "name": "contracts_check", "version": "1.0", "config-version": 2,
        "profile": "contracts_check", "model-paths": ["models"]}))
    # dbt parse reads the profile but does not connect.
    (project / "profiles.yml").write_text(yaml.safe_dump({"contracts_check": {
        "target": "dev", "outputs": {"dev": {
            "type": "postgres", "host": "127.0.0.1", "port": 5432, "user": "nobody",
            "password": "unused", "dbname": "nowhere", "schema": "public", "threads": 1}}}}))
    (project / "models" / "_shop__sources.yml").write_text(yaml.safe_dump(generated,
                                                                          sort_keys=False))
    warnings: list[str] = []
    seen: list[str] = []

    def collect(event: Any) -> None:
        seen.append(event.info.name)
        if event.info.level in ("warn", "error"):
            warnings.append(f"{event.info.name}: {event.info.msg}")

    result = dbtRunner(callbacks=[collect]).invoke([
        "parse", "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(project / "target"), "--log-path", str(project / "logs"),
        "--no-partial-parse", "--quiet"])
    assert result.success, result.exception
    assert seen and warnings == []
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    sources = {s["name"]: s for s in manifest["sources"].values()}
    assert set(sources) == set(tables_of(generated))
    orders = sources["orders"]
    assert orders["schema"] == "shop"
    assert orders["loaded_at_field"] == "updated_at"
    assert orders["freshness"]["warn_after"] == {"count": 15, "period": "minute"}
    assert orders["freshness"]["error_after"] == {"count": 1, "period": "hour"}
    assert orders["meta"]["contract"]["version"] == 1
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    expected = sum(len(c.get("data_tests", [])) for t in tables_of(generated).values()
                   for c in t["columns"])
    assert len(tests) == expected
    names = {n["test_metadata"]["name"] for n in tests}
    assert names == {"not_null", "unique", "accepted_values"}
