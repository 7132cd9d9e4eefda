"""A copy of the repository with a user's own table, models and live view (README "Extending").

:func:`extended_copy` copies the repository (no ``.git``, virtualenvs or caches), lays the
files of ``tests/dbt_project/user_extension/`` over it (a ``*.append`` file is appended to the
file of the same path without the suffix) and regenerates the dbt sources from the contracts,
as the README's steps do. The copy is a working tree of its own: run Python there with
``PYTHONPATH`` set to it (:func:`copy_env`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTENSION = Path(__file__).resolve().parent / "user_extension"
SKIP = shutil.ignore_patterns(".git", ".ci-venv", "*venv", "__pycache__", "*.egg-info",
                              ".pytest_cache", "target", "logs", "dbt_packages", "node_modules")


def copy_env(root: Path) -> dict[str, str]:
    """The environment for a process in the copy: its code first, no stack settings.

    ``TIDEMARK_*`` / ``DBT_*`` of the calling tests (a landing, a target path) are dropped, so
    the copy's tests start their own servers as on a fresh clone; ``TIDEMARK_TEST_PG`` stays.
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TIDEMARK_", "DBT_", "PG")) or key == "TIDEMARK_TEST_PG"}
    env["PYTHONPATH"] = str(root)
    return env


def extended_copy(dest: Path) -> Path:
    """Copy the repository to ``dest`` and add the user extension there.

    Args:
        dest: a directory that does not exist yet.

    Returns:
        ``dest``.
    """
    shutil.copytree(REPO, dest, ignore=SKIP)
    for path in sorted(EXTENSION.rglob("*")):
        relative = path.relative_to(EXTENSION)
        if path.is_dir() or relative == Path("README.md"):
            continue
        if path.suffix == ".append":
            target = dest / relative.with_suffix("")
            target.write_text(target.read_text() + path.read_text())
        else:
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / relative)
    subprocess.run([sys.executable, "dbt_project/scripts/generate_sources.py"], cwd=dest,
                   env=copy_env(dest), check=True, capture_output=True, timeout=300)
    return dest
