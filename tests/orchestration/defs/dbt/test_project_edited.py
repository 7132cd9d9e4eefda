"""A dbt project edited while the code location runs (real ``dbt build``, real Dagster run).

A user registers their own database while ``tidemark up`` builds, and follows the README:
``tidemark contracts init mydb`` writes ``_mydb__sources.yml`` into the project, or they save a
first staging model. Every dbt invocation parses the project's files again, so the build of
definitions loaded before the edit selected nodes that are not among its assets and checks:
on main dagster-dbt failed the whole step on the first one (``KeyError:
'test.tidemark.source_accepted_values_mydb_cdc_...'``), and ``tidemark up`` stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.orchestration.defs.dbt.test_broken_project import shipped  # noqa: F401 (fixture)
from tests.orchestration.defs.test_entry_points import REPO, fresh_env

RUN = """
import json, os, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import dagster as dg
from orchestration.definitions import build_defs
from orchestration.defs.dbt.assets import dbt_unpartitioned
from orchestration.defs.resources import TidemarkResource

source, landing = os.environ["G_SOURCE_URL"], os.environ["G_LANDING_URL"]
defs = build_defs(TidemarkResource(source_url=source, source_ingest_url=source,
                                   landing_url=landing, landing_app_url=landing,
                                   live_target="embedded"))
project = Path(os.environ["TIDEMARK_DBT_PROJECT_DIR"])
(project / "models" / "staging" / "stg_shop__store_names.sql").write_text(
    "select store_id, store_name as label from {{ source('shop', 'stores') }}\\n")
job = defs.get_implicit_global_asset_job_def().get_subset(  # the whole step, as `tidemark up`
    asset_selection=set(dbt_unpartitioned.keys),
    asset_check_selection=set(dbt_unpartitioned.check_keys))
with dg.instance_for_test() as instance:
    result = job.execute_in_process(instance=instance, raise_on_error=False)
failures = []
for event in result.all_events:
    if event.event_type_value == "STEP_FAILURE":
        error = event.event_specific_data.error
        while error.cause is not None:  # dagster's wrapper, then what the step raised
            error = error.cause
        failures.append(error.message.strip())
built = sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
print(json.dumps({"success": result.success, "failures": failures, "built": built}))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the demo landed, the project parsed twice and one whole dbt build
def test_a_model_saved_after_the_definitions_loaded_waits_for_the_next_load(
        orch, shipped, tmp_path: Path) -> None:  # noqa: F811 (fixture)
    source, manifest = shipped
    project = tmp_path / "dbt_project"
    shutil.copytree(source, project)
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(manifest, target / "manifest.json")  # parsed before the edit
    env = fresh_env(tmp_path / "home", TIDEMARK_DBT_PROJECT_DIR=str(project),
                    TIDEMARK_DBT_TARGET_PATH=str(target), G_SOURCE_URL=orch.source_url,
                    G_LANDING_URL=orch.landing_url)
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", RUN], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1500, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    assert ran["failures"] == [] and ran["success"], ran["failures"]
    assert "staging/stg_shop__orders" in ran["built"]
    assert "staging/stg_shop__store_names" not in ran["built"]  # not an asset of this load
    assert orch.sql("select to_regclass('staging.stg_shop__store_names')") == [(None,)]
