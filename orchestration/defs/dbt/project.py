"""Where the dbt project and its manifest live, preparing the manifest, cleaning ``target/``.

The manifest is built explicitly (``dbt parse``) by ``tidemark up`` before Dagster starts, and by
the tests once per session; loading the definitions only reads it. Its directory is
``TIDEMARK_DBT_TARGET_PATH``, else ``$TIDEMARK_HOME/dbt/target``. Each dbt invocation of a run
writes to ``<target>/runs/<op>-<run>-<uuid>``; :func:`clean_invocations` keeps the newest few.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestration.defs.errors import DefinitionsError

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"
KEEP_INVOCATIONS = 20


def dbt_target_dir() -> Path:
    """The dbt target directory holding ``manifest.json`` (absolute)."""
    raw = os.environ.get("TIDEMARK_DBT_TARGET_PATH", "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    from tidemark.settings import load_settings

    return load_settings().home / "dbt" / "target"


def manifest_path() -> Path:
    """Path of the prepared ``manifest.json``."""
    return dbt_target_dir() / "manifest.json"


def tidemark_dbt_project():  # -> dagster_dbt.DbtProject (imported lazily for load time)
    """The ``DbtProject`` of ``dbt_project/`` with its target under :func:`dbt_target_dir`."""
    from dagster_dbt import DbtProject

    return DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR,
                      target_path=dbt_target_dir())


def prepare_manifest(project=None) -> Path:
    """Run ``dbt parse`` into the target directory and return the manifest path.

    dbt needs no database for parsing; the profile's defaults are enough.

    Raises:
        DefinitionsError: dbt could not parse the project.
    """
    project = project or tidemark_dbt_project()
    Path(project.target_path).mkdir(parents=True, exist_ok=True)
    try:
        project.preparer.prepare(project)
    except Exception as exc:  # dbt's own error types vary by version
        raise DefinitionsError(f"dbt parse of {DBT_PROJECT_DIR} failed: {exc}. Run "
                               f"`dbt parse --project-dir dbt_project --profiles-dir dbt_project`"
                               f" to see dbt's message.") from exc
    if not project.manifest_path.exists():
        raise DefinitionsError(f"dbt parse wrote no manifest at {project.manifest_path}.")
    return project.manifest_path


def require_manifest(project) -> Path:
    """The manifest path of ``project``, with a clear error when it was never prepared.

    Raises:
        DefinitionsError: no ``manifest.json`` there.
    """
    project.prepare_if_dev()  # only under `dagster dev`
    path = Path(project.manifest_path)
    if not path.exists():
        raise DefinitionsError(
            f"No dbt manifest at {path}: the Dagster definitions need one. `tidemark up` "
            f"prepares it; otherwise run `python -m orchestration.defs.dbt.project` (dbt parse "
            f"into {path.parent}) or set TIDEMARK_DBT_TARGET_PATH to a prepared target dir.")
    return path


def invocation_dir(op_name: str, run_id: str) -> Path:
    """A fresh directory for one dbt invocation of a run (under ``<target>/runs``)."""
    import uuid

    return dbt_target_dir() / "runs" / f"{op_name}-{run_id[:8]}-{uuid.uuid4().hex[:7]}"


def clean_invocations(keep: int = KEEP_INVOCATIONS) -> list[Path]:
    """Delete all but the ``keep`` newest invocation directories; return the deleted ones."""
    runs = dbt_target_dir() / "runs"
    if not runs.is_dir():
        return []
    dirs = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                  reverse=True)
    removed = dirs[keep:]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


if __name__ == "__main__":
    print(prepare_manifest())
