"""The dbt that dagster-dbt starts: the environment's ``dbt``, without the parent's secrets.

dagster-dbt 0.29 gives its dbt child a copy of ``os.environ`` and takes no environment of its
own. Its ``dbt_executable`` is therefore ``dbt-child`` (beside this module,
:func:`~tidemark.stack.dbt.dbt_child_executable`), which runs ``python -m
tidemark.stack.dbtchild ARGS``. That replaces itself (``exec``) with the environment's ``dbt``
under :func:`~tidemark.stack.childenv.child_environment`: the dbt process starts without
``PGPASSWORD``, the sources' URLs and passwords, so neither a model's ``env_var()`` nor its
``/proc/<pid>/environ`` holds them, and the Dagster process's ``os.environ`` is never changed.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from tidemark.stack.childenv import child_environment, dbt_executable


def main(args: list[str] | None = None) -> NoReturn:
    """``exec`` the environment's ``dbt`` with ``args`` (default: this command's arguments)."""
    dbt = dbt_executable()
    os.execvpe(dbt, [dbt, *(sys.argv[1:] if args is None else args)],
               child_environment(os.environ, {}))


if __name__ == "__main__":
    main()
