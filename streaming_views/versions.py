"""Which PostgreSQL versions the embedded live-view engine runs on, and what each one lacks.

The engine's maintenance SQL uses plain ``RETURNING`` (no PostgreSQL 18 ``RETURNING WITH (OLD,
NEW)``), so every supported construct deploys on PostgreSQL 15, 16, 17 and 18 with the same
results (the live-view suite runs on 15 and 18 in CI). What differs by version is checked here:

* below 15: refused at deploy (the engine is tested from 15 on; landing needs MERGE, 15+);
* ``interval`` ``sum``/``avg`` with infinite values: intervals are infinite from 17 on
  (``sums.INFINITE_INTERVALS``), so 15/16 keep the finite rule.
"""

from __future__ import annotations

import psycopg

from streaming_views.errors import DeployError

MIN_ENGINE = 150000  # oldest server_version_num the engine deploys to


def version_text(version_num: int) -> str:
    """``150018`` -> ``"15.18"``."""
    return f"{version_num // 10000}.{version_num % 10000}"


def check_engine_version(conn: psycopg.Connection) -> int:
    """Refuse a server older than :data:`MIN_ENGINE`; return its ``server_version_num``.

    Raises:
        DeployError: the server runs PostgreSQL 14 or older.
    """
    version_num = conn.info.server_version
    if version_num < MIN_ENGINE:
        raise DeployError(
            f"The embedded live-view engine runs on PostgreSQL 15 to 18; this landing server "
            f"runs PostgreSQL {version_text(version_num)}. Deploy to a PostgreSQL 15 or later "
            f"landing database (README, \"Supported PostgreSQL versions\").")
    return version_num

