"""Fixtures of the Dagster code location tests: a real stack, real dbt, real Dagster runs.

``orch`` (session): its own embedded PostgreSQL (the replication slot name ``tidemark_shop`` is
server-wide, so these tests do not share the server with other parts' ``shop`` sources), a demo
source seeded with a few days of ~100 orders, landed with ``ingestion.catch_up``, the dbt
manifest prepared once into a temporary target dir, the definitions bound to these databases
and a temporary Dagster instance. ``built`` (session): live views deployed and the nightly batch
run once over the closed seeded days.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from contracts import load_contracts
from tests.support import create_contracted_tables, create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer

# Between 00:00 and ~02:00 UTC yesterday is not closed yet (orders may land 2 h late), so the
# closed days are DAYS - 1 then, DAYS otherwise; the tests take up to four distinct closed days
# (built_days[-4]): with DAYS = 4 the suite failed every night from 00:00 to 02:00 UTC.
DAYS = 5
ORDERS_PER_DAY = 100


@dataclass
class Orch:
    """The test stack and the definitions bound to it."""

    source_url: str
    landing_url: str
    resource: Any
    defs: Any
    instance: Any
    days: list[date]
    built_days: list[date] = field(default_factory=list)
    """The closed days ``built`` ran the nightly batch over (fixed then: a day that closes later,
    at 02:00 UTC, is closed but not built)."""

    @property
    def closed_days(self) -> list[date]:
        """Seeded days closed by the watermarks (``tidemark.reconciliation.finality``).

        Not "the days before today": orders may arrive 2 h late, so between 00:00 and ~02:00
        UTC yesterday is still open and the last closed day is the day before.
        """
        from orchestration.defs.dbt.project import manifest_path
        from tidemark.reconciliation.finality import read_finality

        final = read_finality(self.landing_url, manifest_path())["fct_daily_store_revenue"]
        return [d for d in self.days if final.is_closed(d)]

    def catch_up(self) -> None:
        """Land the source's latest changes."""
        from ingestion import catch_up

        catch_up(self.source_url, self.landing_url, "shop", contracts=load_contracts())

    def job(self, name: str):
        """A job of the definitions."""
        return self.defs.resolve_job_def(name)

    def run_checks(self, keys: list, raise_on_error: bool = True, instance: Any = None):
        """Execute only the given asset checks, in process (in ``instance``, by default the
        stack's); return the result."""
        job = self.defs.get_implicit_global_asset_job_def().get_subset(
            asset_selection=set(), asset_check_selection=set(keys))
        return job.execute_in_process(instance=instance or self.instance,
                                      raise_on_error=raise_on_error)

    def run_assets(self, wanted, raise_on_error: bool = True, tags: dict | None = None):
        """Execute the assets whose key satisfies ``wanted(key)`` (with their checks)."""
        job = self.defs.get_implicit_global_asset_job_def()
        keys = {k for k in job.asset_layer.executable_asset_keys if wanted(k)}
        return job.get_subset(asset_selection=keys).execute_in_process(
            instance=self.instance, raise_on_error=raise_on_error, tags=tags)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Run a statement on landing (superuser) and return its rows (if any)."""
        with psycopg.connect(self.landing_url, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


def check_results(result, name: str | None = None) -> dict:
    """``{(asset path, check name): AssetCheckEvaluation}`` of a run (optionally one check)."""
    out = {}
    for event in result.get_asset_check_evaluations():
        if name is None or event.check_name == name:
            out[(event.asset_key.to_user_string(), event.check_name)] = event
    return out


@pytest.fixture(scope="session")
def orch_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server of its own: these tests keep the shop replication slot for the session."""
    server = start_test_server(tmp_path_factory.mktemp("orch-home"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orch(orch_pg: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orch]:
    """The seeded, landed stack with the definitions bound to it (see the module docstring)."""
    import dagster as dg

    from tidemark.demo.seed import seed_history

    target = tmp_path_factory.mktemp("dbt-target")
    os.environ["TIDEMARK_DBT_TARGET_PATH"] = str(target)
    source_url = create_database(orch_pg, "orch_source")
    landing_url = create_database(orch_pg, "orch_landing")
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    seed_history(source_url, days=DAYS, orders_per_day=ORDERS_PER_DAY, seed=11, end=end)
    create_contracted_tables(source_url, load_contracts())  # a user's own tables, empty
    # Partitions start at the first day of data, as `tidemark up` records it.
    os.environ["TIDEMARK_PARTITIONS_START"] = (end - timedelta(days=DAYS)).date().isoformat()
    from orchestration.defs.dbt.project import prepare_manifest

    prepare_manifest()
    from orchestration.definitions import build_defs
    from orchestration.defs.resources import TidemarkResource

    resource = TidemarkResource(source_url=source_url, source_ingest_url=source_url,
                                landing_url=landing_url, landing_app_url=landing_url,
                                live_target="embedded")
    with psycopg.connect(source_url) as conn:
        days = [r[0] for r in conn.execute(
            "select distinct (placed_at at time zone 'UTC')::date from public.orders order by 1")]
    with dg.instance_for_test() as instance:
        stack = Orch(source_url, landing_url, resource, build_defs(resource), instance, days)
        stack.catch_up()
        yield stack


@pytest.fixture(scope="session")
def built(orch: Orch) -> Orch:
    """Live views deployed and the nightly batch run over the closed seeded days."""
    from orchestration.defs.dbt.partitions import range_tags

    orch.built_days = orch.closed_days
    assert len(orch.built_days) >= 4, f"the tests need 4 closed days: {orch.built_days}"
    orch.run_assets(lambda k: k.path[0] == "live")
    first, last = orch.built_days[0], orch.built_days[-1]
    orch.job("nightly_batch").execute_in_process(
        instance=orch.instance, tags=range_tags(first.isoformat(), last.isoformat()))
    return orch


def yesterday() -> date:
    """Yesterday (UTC)."""
    return datetime.now(UTC).date() - timedelta(days=1)
