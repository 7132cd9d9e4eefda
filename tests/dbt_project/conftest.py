"""Fixtures of the dbt project tests: one landed database per session, dbt parsed once.

``landed`` seeds a demo source database with the real history seeder, lands it with the real
ingestion (``ingestion.catch_up``: snapshot, then stream until caught up), and parses the dbt
project against the landing database. Tests build what they need and compare the marts with
independent SQL/Python computations over the SOURCE tables (``independent.py``).

Until ingestion and the seeder are importable, the fixture falls back to
``landing_fixture.build_landing_fixture`` (a landing-shaped database filled in SQL) and the
source is the landing mirror itself; ``LANDED_WITH_REAL_PARTS`` says which one ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from orchestration.stack.embedded import EmbeddedServer
from tests.dbt_project.dbt_runner import DbtProject
from tests.support import create_database

DAYS = 5
ORDERS_PER_DAY = 300

try:  # the real parts (issue 2 ingestion, issue 1 demo seeder)
    from ingestion import catch_up
    from orchestration.demo.seed import seed_history

    LANDED_WITH_REAL_PARTS = True
except ImportError:  # pragma: no cover - only while those parts are not committed
    LANDED_WITH_REAL_PARTS = False


@dataclass
class Landed:
    """A seeded source, its landing database and the dbt project bound to it.

    Attributes:
        source_url: superuser URL of the database the independent computations read.
        source_schema: schema of the source tables there (``public``, or ``shop`` for the
            fallback fixture where the mirror is the source).
        landing_url: superuser URL of the landing database dbt builds in.
        dbt: the parsed dbt project.
        sync: land the source's latest changes (a no-op for the fallback fixture).
        days: the UTC days that hold orders, oldest first.
    """

    source_url: str
    source_schema: str
    landing_url: str
    dbt: DbtProject
    sync: Callable[[], None]
    days: list


@pytest.fixture(scope="session")
def landed(pg: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landed]:
    """The session's landed demo data and dbt project (see the module docstring)."""
    landing_url = create_database(pg, "dbt_landing")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if LANDED_WITH_REAL_PARTS:
        source_url = create_database(pg, "dbt_source")
        seed_history(source_url, days=DAYS, orders_per_day=ORDERS_PER_DAY, seed=7, end=end,
                     malformed_share=0.0)

        def sync() -> None:
            catch_up(source_url, landing_url, source="shop")

        source_schema = "public"
    else:
        from tests.dbt_project.landing_fixture import build_landing_fixture

        first_day = (end.date().toordinal() - DAYS + 1)
        build_landing_fixture(landing_url, datetime.fromordinal(first_day).date().isoformat(),
                              DAYS, ORDERS_PER_DAY)
        source_url, source_schema = landing_url, "shop"

        def sync() -> None:
            return None

    sync()
    with psycopg.connect(source_url) as conn:
        days = [row[0] for row in conn.execute(
            f"select distinct (placed_at at time zone 'UTC')::date from {source_schema}.orders "
            "order by 1").fetchall()]
    project = DbtProject(landing_url, tmp_path_factory.mktemp("dbt"))
    yield Landed(source_url, source_schema, landing_url, project, sync, days)
