"""Where the dbt project and its manifest live, preparing the manifest, cleaning ``target/``.

The manifest is built with ``dbt parse`` (no database needed): by ``tidemark up`` before Dagster
starts, by the Dockerfile, by the tests once per session, and otherwise whenever the
definitions load without one or with one older than a file of the project (so ``dagster dev -m
orchestration.definitions`` works on a fresh clone, and "Reload definitions" shows a model just
added). Its directory is ``TIDEMARK_DBT_TARGET_PATH``, else ``$TIDEMARK_HOME/dbt/target``. Each
dbt invocation of a run writes to ``<target>/runs/<op>-<run>-<uuid>``;
:func:`clean_invocations` keeps the newest few. A project that does not parse keeps the last
manifest that did (:mod:`orchestration.defs.dbt.state`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestration.defs.dbt.state import (
    changed_after,
    clear_failure,
    load_dbt_state,
    parse_lock,
)
from orchestration.defs.errors import DefinitionsError
from tidemark.settings import load_settings
from tidemark.stack.dbt import environment, path_with_scripts

KEEP_INVOCATIONS = 20


def dbt_project_dir() -> Path:
    """The dbt project (``TIDEMARK_DBT_PROJECT_DIR``, default the shipped ``dbt_project/``)."""
    return load_settings().dbt_project_dir


def dbt_target_dir() -> Path:
    """The dbt target directory holding ``manifest.json`` (absolute)."""
    return load_settings().dbt_target_dir


def manifest_path() -> Path:
    """Path of the prepared ``manifest.json``."""
    return dbt_target_dir() / "manifest.json"


def tidemark_dbt_project():  # -> dagster_dbt.DbtProject (imported lazily for load time)
    """The ``DbtProject`` of ``dbt_project/`` with its target under :func:`dbt_target_dir`."""
    from dagster_dbt import DbtProject

    return DbtProject(project_dir=dbt_project_dir(), profiles_dir=dbt_project_dir(),
                      target_path=dbt_target_dir())


#: Directories of a dbt project that hold what dbt writes or installs, not what it parses.
NOT_PARSED = frozenset({"target", "logs", "dbt_packages", ".venv", ".git"})


def manifest_is_stale(project) -> bool:
    """Whether a file of the dbt project (models, tests, macros, YAML, ``dbt_project.yml``...)
    changed after ``project``'s manifest was written (or there is no manifest)."""
    manifest = Path(project.manifest_path)
    try:
        written = manifest.stat().st_mtime
    except FileNotFoundError:
        return True
    return changed_after(Path(project.project_dir), Path(project.target_path), written)


def run_parse(project) -> Path:
    """``dbt parse`` of ``project`` into its target directory (the caller holds
    :func:`~orchestration.defs.dbt.state.parse_lock`); a success forgets a recorded failure.

    Raises:
        DefinitionsError: dbt could not parse the project (the dbt error is its cause).
    """
    try:  # dagster-dbt's preparer runs `dbt` from PATH
        with environment({"PATH": path_with_scripts(os.environ.get("PATH", ""))}):
            project.preparer.prepare(project)
    except Exception as exc:  # dbt's own error types vary by version
        raise DefinitionsError(
            f"dbt parse of {project.project_dir} failed: {exc}. Run `dbt parse "
            f"--project-dir dbt_project --profiles-dir dbt_project` to see dbt's message."
        ) from exc
    if not project.manifest_path.exists():
        raise DefinitionsError(f"dbt parse wrote no manifest at {project.manifest_path}.")
    clear_failure(Path(project.target_path))
    return project.manifest_path


def prepare_manifest(project=None, only_if_stale: bool = False) -> Path:
    """Run ``dbt parse`` into the target directory and return the manifest path.

    dbt needs no database for parsing; the profile's defaults are enough.

    Args:
        project: the dbt project (default :func:`tidemark_dbt_project`).
        only_if_stale: parse only when :func:`manifest_is_stale` still holds once the parse
            lock is taken (another process may have just parsed).

    Raises:
        DefinitionsError: dbt could not parse the project.
    """
    project = project or tidemark_dbt_project()
    with parse_lock(Path(project.target_path)):
        if only_if_stale and not manifest_is_stale(project):
            return project.manifest_path
        return run_parse(project)


def require_manifest(project) -> Path:
    """The manifest path of ``project``, prepared (``dbt parse``) when there is none yet or a
    file of the project changed since it was written — so a model added or edited shows in the
    UI after "Reload definitions" (or any new load), not only after ``tidemark up`` parsed.

    Raises:
        DefinitionsError: dbt could not parse the project (dbt's message, file and line).
    """
    state = load_dbt_state(project)
    if state.failure is not None:
        raise DefinitionsError(state.failure.explain())
    return Path(project.manifest_path)


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
