"""How dbt resources become Dagster assets: keys, groups, freshness policies."""


from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

from orchestration.defs.dbt.freshness import mart_freshness_policy
from orchestration.defs.dbt.partitions import DAILY_TAG

CHANGELOG_SCHEMA = "cdc"


class TidemarkTranslator(DagsterDbtTranslator):
    """Keys ``<schema>/<model>``, sources onto the ingestion assets, freshness on daily marts,
    dbt tests (source tests included) as asset checks."""

    def __init__(self, warning: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        """``warning`` (and ``metadata``): shown on every model while the project does not parse
        (:meth:`~orchestration.defs.dbt.state.DbtState.warning`)."""
        self.warning = warning
        self.extra_metadata = dict(metadata or {})
        # A table's mirror (source `shop`) and changelog (source `shop_cdc`) are one ingestion
        # asset: two dbt sources on one key.
        super().__init__(settings=DagsterDbtTranslatorSettings(
            enable_asset_checks=True, enable_source_tests_as_checks=True,
            enable_duplicate_source_asset_keys=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        """``<source>/<table>`` for dbt sources (the ingestion assets: a mirror ``<source>.<table>``
        or a changelog ``cdc.<source>__<table>``), else ``<schema>/<name>``."""
        if dbt_resource_props["resource_type"] == "source":
            name = dbt_resource_props["name"]
            if dbt_resource_props.get("schema") == CHANGELOG_SCHEMA and "__" in name:
                return dg.AssetKey(name.split("__", 1))
            return dg.AssetKey([dbt_resource_props["source_name"], name])
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """Groups by layer: staging, intermediate, marts."""
        if dbt_resource_props["resource_type"] == "source":
            return "ingestion"
        return dbt_resource_props.get("schema")

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str,
                       project: Any) -> dg.AssetSpec:
        """dagster-dbt's spec plus the mart freshness policy on daily models, and the parse
        failure's warning while the project does not parse."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if self.warning and props["resource_type"] != "source":
            spec = spec.replace_attributes(
                description=f"⚠ {self.warning}\n\n{spec.description or ''}".rstrip(),
                metadata={**spec.metadata, **self.extra_metadata})
        if props["resource_type"] == "model" and DAILY_TAG in props.get("tags", []):
            spec = spec.replace_attributes(freshness_policy=mart_freshness_policy())
        return spec
