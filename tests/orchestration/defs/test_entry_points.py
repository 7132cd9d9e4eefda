"""The standard entry points on a fresh clone: no manifest prepared, no database running.

``dagster definitions validate -m orchestration.definitions`` prepares the dbt manifest itself
(``dbt parse``, no database) and loads every definition; a view file dropped into the views
directory is an asset with its check at the next load, with its upstream tables from the
analyzer; ``tidemark`` reports a bad setting by name, without a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
VIEW = """-- Orders per store and day, added by a user.
select o.store_id, (o.placed_at at time zone 'UTC')::date as order_date, count(*) as orders
from shop.orders as o
join shop.stores as s on s.store_id = o.store_id
group by o.store_id, (o.placed_at at time zone 'UTC')::date
"""


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no Tidemark or Dagster variables but ``extra``; nothing listens
    on the PostgreSQL port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "DAGSTER_"))}
    env.update(TIDEMARK_HOME=str(home), TIDEMARK_PG_PORT="1025", **extra)
    return env


@pytest.mark.slow
def test_validate_on_a_fresh_clone_prepares_the_manifest(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    result = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-m",
                             "orchestration.definitions"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "home" / "dbt" / "target" / "manifest.json").exists()


@pytest.mark.slow
def test_a_view_file_added_is_an_asset_with_its_check(tmp_path: Path, orch) -> None:
    views = tmp_path / "views"
    shutil.copytree(REPO / "streaming_views" / "views", views)
    (views / "orders_by_store.sql").write_text(VIEW)
    env = fresh_env(tmp_path / "home", TIDEMARK_VIEWS_DIR=str(views),
                    TIDEMARK_DBT_TARGET_PATH=os.environ["TIDEMARK_DBT_TARGET_PATH"])
    code = ("import json, dagster as dg, orchestration.definitions as d; "
            "g = d.defs().resolve_asset_graph(); k = dg.AssetKey(['live', 'orders_by_store']); "
            "print(json.dumps({'deps': sorted(p.to_user_string() for p in g.get(k).parent_keys),"
            " 'checks': sorted(c.name for c in g.asset_check_keys if c.asset_key == k)}))")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"deps": ["shop/orders", "shop/stores"],
                     "checks": ["freshness_slo", "matches_query"]}


def test_a_bad_setting_is_named_without_a_traceback(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home", TIDEMARK_DAGSTER_PORT="eighty")
    result = subprocess.run([str(BIN / "tidemark"), "status"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "TIDEMARK_DAGSTER_PORT" in result.stderr and "Traceback" not in result.stderr
