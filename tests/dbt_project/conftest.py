"""Fixtures of the dbt project tests: one landed database per session, dbt parsed once.

``landed`` seeds a demo source database with the real history seeder
(``tidemark.demo.seed.seed_history``; no malformed events, so every source row lands),
lands it with the real ingestion (``ingestion.catch_up``: snapshot, then stream until caught
up), and parses the dbt project against the landing database. Tests build what they need and
compare the marts with independent computations over the SOURCE tables (``independent.py``).

A contracted table the demo does not create (a user's own table, README "Extending") is created
empty in the source from its contract before landing (``tests.support.create_contracted_tables``),
so the user's staging models, marts and live views build over no rows; ``Landed.added_tables``
names those tables, for the checks that need the demo's data. A source of the user's own
(``contracts/mydb/``, README "Your own database") gets a database of its own with its contracted
tables, empty, landed as ``mydb`` the same way, so models reading ``source('mydb', ...)`` build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from contracts import ContractSet, load_contracts
from ingestion import catch_up
from ingestion.names import slot_name
from tests.dbt_project.dbt_runner import DbtProject
from tests.support import create_contracted_tables, create_database
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
        added_tables: contracted tables the demo does not create, created empty (source
            ``shop``).
    """

    source_url: str
    source_schema: str
    landing_url: str
    dbt: DbtProject
    sync: Callable[[], None]
    days: list
    added_tables: list[str]


def added_tables_read(landed: Landed, model: str) -> set[str]:
    """The tables of ``landed.added_tables`` that dbt model ``model`` reads, at any depth.

    Args:
        landed: the landed project.
        model: a model name (``fct_daily_store_revenue``).

    Returns:
        Table names (``refunds``); empty for a model over the demo's tables only.
    """
    nodes = landed.dbt.manifest.nodes
    seen, todo, tables = set(), [f"model.tidemark.{model}"], set()
    while todo:
        unique_id = todo.pop()
        if unique_id in seen:
            continue
        seen.add(unique_id)
        if unique_id.startswith("source."):
            tables.add(unique_id.rsplit(".", 1)[1].removeprefix("shop__"))
        elif unique_id in nodes:
            todo.extend(nodes[unique_id].depends_on.nodes)
    return tables & set(landed.added_tables)


@pytest.fixture(scope="session")
def landed(pg: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landed]:
    """The session's landed demo data and dbt project (see the module docstring)."""
    landing_url = create_database(pg, "dbt_landing")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    source_url = create_database(pg, "dbt_source")
    seed_history(source_url, days=DAYS, orders_per_day=ORDERS_PER_DAY, seed=7, end=end,
                 malformed_share=0.0)

    contracts = load_contracts()
    added = create_contracted_tables(source_url, contracts)

    def sync() -> None:
        catch_up(source_url, landing_url, source="shop", contracts=contracts)

    sync()
    others = {name: _land_empty(pg, name, landing_url, contracts) for name in contracts.sources()
              if name != "shop" and any(t.source == name for t in contracts)}
    with psycopg.connect(source_url) as conn:
        days = [row[0] for row in conn.execute(sql.SQL(
            "select distinct (placed_at at time zone 'UTC')::date from {} order by 1").format(
            sql.Identifier("public", "orders"))).fetchall()]
    project = DbtProject(landing_url, tmp_path_factory.mktemp("dbt"))
    yield Landed(source_url, "public", landing_url, project, sync, days, added)
    for name, url in [("shop", source_url), *others.items()]:
        with psycopg.connect(url, autocommit=True) as conn:  # slots are server-wide
            conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                         "where slot_name = %s and database = current_database()",
                         (slot_name(name),))


def _land_empty(pg: EmbeddedServer, source: str, landing_url: str, contracts: ContractSet
                ) -> str:
    """Create database ``dbt_src_<source>`` with the source's contracted tables, empty, and land it
    as ``source`` (mirror ``<source>.*``, changelog ``cdc.<source>__*``); return its URL."""
    url = create_database(pg, f"dbt_src_{source}")
    create_contracted_tables(url, contracts, source=source)
    catch_up(url, landing_url, source=source, contracts=contracts)
    return url
