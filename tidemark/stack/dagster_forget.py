"""A removed source's assets out of the Dagster instance of ``tidemark up``.

Dagster's catalog lists every asset key its storage holds events of, defined or not. After
``tidemark source remove`` (and the source's contracts deleted), the UI kept listing the
source's tables (``appb / customers``...) with no definition and no status, until someone
wiped them by hand in the UI (explore51). Removing a source now wipes them: their
observations, materializations and check results go; every other asset is untouched.
"""

from __future__ import annotations

from typing import Any

from tidemark.settings import Settings
from tidemark.stack.dbt import environment


def source_asset_keys(instance: Any, source: str) -> list[Any]:
    """The keys the instance holds of ``source``'s tables: ``<source>/<table>``
    (:func:`orchestration.defs.keys.table_key`)."""
    return [key for key in instance.all_asset_keys()
            if len(key.path) == 2 and key.path[0] == source]


def forget_source_assets(settings: Settings, source: str) -> list[str]:
    """Wipe ``source``'s table assets from the Dagster instance, if there is one.

    Returns:
        The wiped keys as the UI writes them (``appb/customers``), sorted; empty when
        ``tidemark up`` never ran in this home or held nothing of the source.
    """
    home = settings.dagster_home
    if not (home / "dagster.yaml").is_file():
        return []
    from dagster import DagsterInstance

    with environment({"DAGSTER_HOME": str(home)}):
        instance = DagsterInstance.get()
        try:
            keys = source_asset_keys(instance, source)
            if keys:
                instance.wipe_assets(keys)
        finally:
            instance.dispose()
    return sorted(key.to_user_string() for key in keys)
