"""What a dbt child process starts with: the environment's ``dbt``, without the parent's secrets.

Standard library only (and :mod:`tidemark.redact`): ``dbt-child`` runs ``python -m
tidemark.stack.dbtchild`` before each dbt command, and what that imports is paid again by every
invocation — importing :mod:`tidemark.stack.dbt` (psycopg, pydantic, the settings) cost ~0.5 s
of CPU each time. :mod:`tidemark.stack.dbt` re-exports these names.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from tidemark.redact import redact

KEPT_SECRETS = frozenset({"TIDEMARK_DBT_PASSWORD"})
"""The one secret a dbt child keeps: its own role's password, from its URL."""

_SECRET_NAME = re.compile(r"^(PGPASSWORD$|TIDEMARK_SOURCE_|.*PASSWORD$)", re.IGNORECASE)


def is_secret(name: str, value: str) -> bool:
    """Whether the environment variable ``name`` is a secret a dbt child must not get.

    ``PGPASSWORD``, every ``TIDEMARK_SOURCE_*`` (a source's URL and its
    ``TIDEMARK_SOURCE_<NAME>_PASSWORD``), any other ``*PASSWORD`` variable, and any variable whose
    value holds a password (a URL or connection string :func:`~tidemark.redact.redact` masks)
    — but :data:`KEPT_SECRETS`.
    """
    if name in KEPT_SECRETS:
        return False
    if _SECRET_NAME.match(name):
        return True
    try:
        return redact(value).count("***") > value.count("***")
    except ValueError:  # unreadable as a URL (e.g. a bad IPv6 host): may hold user:password@
        return "@" in value


def child_environment(base: dict[str, str] | os._Environ[str], values: dict[str, str]
                      ) -> dict[str, str]:
    """The environment of a dbt child process: ``base`` without its secrets, plus ``values``.

    Args:
        base: the parent's environment (``os.environ``).
        values: what dbt needs (:func:`tidemark.stack.dbt.dbt_env`), kept as they are.
    """
    return {**{k: v for k, v in base.items() if not is_secret(k, v)}, **values}


def installed_executable(name: str) -> str | None:
    """A console script of the environment Tidemark runs in, or None.

    ``pip install`` puts the scripts beside the interpreter (a virtualenv's ``bin/``), which
    need not be on PATH: ``.venv/bin/tidemark up`` runs without activating the environment.
    That one when it exists, else the one on PATH.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def dbt_executable() -> str:
    """The ``dbt`` of the environment Tidemark runs in (:func:`installed_executable`), else
    ``dbt`` (whose absence dbt's callers report)."""
    return installed_executable("dbt") or "dbt"
