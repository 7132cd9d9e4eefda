"""Fixtures of the dbt project tests: one landed database per session, dbt parsed once.

``landed`` seeds a demo source database with the real history seeder
(``tidemark.demo.seed.seed_history``; no malformed events, so every source row lands),
lands it with the real ingestion (``ingestion.catch_up``: snapshot, then stream until caught
up), and parses the dbt project against the landing database. Tests build what they need and
compare the marts with independent computations over the SOURCE tables (``independent.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from contracts import load_contracts
from ingestion import catch_up
from ingestion.names import slot_name
from tests.dbt_project.dbt_runner import DbtProject
from tests.support import create_database
from tidemark.demo.seed import seed_history
from tidemark.stack.embedded import EmbeddedServer

DAYS = 5
ORDERS_PER_DAY = 300


@dataclass
class Landed:
    """A seeded source, its landing database and the dbt project bound to it.

    Attributes:
        source_url: superuser URL of the database the independent computations read.
        source_schema: schema of the source tables there (``public``).
        landing_url: superuser URL of the landing database dbt builds in.
        dbt: the parsed dbt project.
        sync: land the source's latest changes (``catch_up`` again).
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
    source_url = create_database(pg, "dbt_source")
    seed_history(source_url, days=DAYS, orders_per_day=ORDERS_PER_DAY, seed=7, end=end,
                 malformed_share=0.0)

    contracts = load_contracts()

    def sync() -> None:
        catch_up(source_url, landing_url, source="shop", contracts=contracts)

    sync()
    with psycopg.connect(source_url) as conn:
        days = [row[0] for row in conn.execute(sql.SQL(
            "select distinct (placed_at at time zone 'UTC')::date from {} order by 1").format(
            sql.Identifier("public", "orders"))).fetchall()]
    project = DbtProject(landing_url, tmp_path_factory.mktemp("dbt"))
    yield Landed(source_url, "public", landing_url, project, sync, days)
    with psycopg.connect(source_url, autocommit=True) as conn:  # slots are server-wide
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                     "where slot_name = %s and database = current_database()",
                     (slot_name("shop"),))
