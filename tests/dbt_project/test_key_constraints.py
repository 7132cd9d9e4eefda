"""A key the landing's primary key guarantees is checked in the catalog, not over the rows.

The mirrors' primary keys make their key columns unique and not null, and every staging view is
a projection of one mirror: the ``unique`` / ``not_null`` (and a composite key's
``unique_combination_of_columns``) tests of those keys could never fail, and each read every
row of its table (4.1 s for ``stg_shop__app_events.outbox_id`` at 10 times the demo's history).
``primary_key_constraint`` (tests/generic/primary_key_constraint.sql) replaces them: it fails
when the mirror's key is dropped or differs, or when the view reads another relation. The
same for the change columns every changelog declares NOT NULL: ``not_null_constraint``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.dbt_project.conftest import Landed
from tests.dbt_project.dbt_runner import DBT_PROJECT

KEY_TEST = "primary_key_constraint"


def _key_tests(landed: Landed) -> dict[str, dict]:
    """Every primary_key_constraint test node: unique id -> node."""
    return {uid: node for uid, node in landed.dbt.manifest.nodes.items()
            if getattr(node, "test_metadata", None) is not None
            and node.test_metadata.name == KEY_TEST}


def _statuses(landed: Landed, *select: str) -> dict[str, str]:
    """Run the tests selected; return test name -> status."""
    result = landed.dbt.invoke("test", "-s", *select, check=False)
    return {r.node.name: str(r.status) for r in result.result.results}


@pytest.fixture(scope="module")
def staged(landed: Landed) -> Landed:
    """The landed project with its staging and intermediate views built."""
    landed.dbt.invoke("run", "-s", "path:models/staging", "path:models/intermediate")
    return landed


@pytest.fixture
def stores_key(staged: Landed) -> Iterator[psycopg.Connection]:
    """A connection to landing; shop.stores' primary key is put back afterwards."""
    with psycopg.connect(staged.landing_url, autocommit=True) as conn:
        (name,) = conn.execute("select conname from pg_constraint where conrelid = "
                               "'shop.stores'::regclass and contype = 'p'").fetchone()
        try:
            yield conn
        finally:
            conn.execute(sql.SQL("alter table shop.stores drop constraint if exists {}").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("alter table shop.stores add constraint {} primary key "
                                 "(store_id)").format(sql.Identifier(name)))


def test_every_keyed_mirror_and_its_staging_view_check_the_key(landed: Landed) -> None:
    tested = {node.attached_node or node.depends_on.nodes[0]
              for node in _key_tests(landed).values()}
    mirrors = {uid for uid in landed.dbt.manifest.sources
               if uid.startswith("source.tidemark.shop.")}
    staging = {f"model.tidemark.stg_shop__{uid.rsplit('.', 1)[1]}" for uid in mirrors}
    staging &= set(landed.dbt.manifest.nodes)
    assert mirrors | staging <= tested


def test_the_key_checks_pass_on_the_landed_data(staged: Landed) -> None:
    statuses = _statuses(staged, f"test_name:{KEY_TEST}")
    assert len(statuses) == len(_key_tests(staged))
    assert set(statuses.values()) == {"pass"}


def test_a_dropped_mirror_key_fails_the_checks_of_mirror_and_view(
        staged: Landed, stores_key: psycopg.Connection) -> None:
    select = ("source:shop.stores", "stg_shop__stores")
    assert set(_statuses(staged, *select).values()) == {"pass"}
    stores_key.execute("alter table shop.stores drop constraint stores_pkey")
    failed = {name for name, status in _statuses(staged, *select).items() if status == "fail"}
    assert failed == {"source_primary_key_constraint_shop_stores_store_id",
                      "primary_key_constraint_stg_shop__stores_store_id__source_shop_stores_"}


def test_a_key_on_other_columns_fails_the_check(staged: Landed,
                                                stores_key: psycopg.Connection) -> None:
    stores_key.execute("alter table shop.stores drop constraint stores_pkey")
    stores_key.execute("alter table shop.stores add constraint stores_pkey "
                       "primary key (store_id, store_name)")
    statuses = _statuses(staged, "source:shop.stores")
    assert statuses["source_primary_key_constraint_shop_stores_store_id"] == "fail"


def test_a_staging_view_that_reads_another_table_fails_its_check_and_those_over_it(
        staged: Landed) -> None:
    with psycopg.connect(staged.landing_url, autocommit=True) as conn:
        (definition,) = conn.execute(
            "select pg_get_viewdef('staging.stg_shop__deliveries')").fetchone()
        conn.execute(sql.SQL(
            "create or replace view staging.stg_shop__deliveries as select v.* from ({}) as v,"
            " lateral (select from shop.orders as o where o.order_id = v.order_id limit 1)"
            " as any_order").format(sql.SQL(definition.strip().rstrip(";"))))
    try:
        staged.dbt.invoke("run", "-s", "int_deliveries_timed")
        statuses = _statuses(staged, "stg_shop__deliveries,test_name:" + KEY_TEST,
                             "int_deliveries_timed,test_name:" + KEY_TEST)
        assert statuses == {
            "primary_key_constraint_stg_shop__deliveries_delivery_id__source_shop_deliveries_":
                "fail",
            "primary_key_constraint_int_deliveries_timed_delivery_id__source_shop_deliveries_":
                "fail"}
    finally:
        staged.dbt.invoke("run", "-s", "stg_shop__deliveries")


def test_the_views_that_rely_on_the_key_are_projections_of_their_mirror(
        landed: Landed) -> None:
    # What the catalog cannot see: a join or union inside the one view, a set-returning function.
    nodes = landed.dbt.manifest.nodes
    for node in _key_tests(landed).values():
        if not node.attached_node:
            continue
        (mirror,) = [uid for uid in node.depends_on.nodes if uid.startswith("source.")]
        model = nodes[node.attached_node]
        while True:
            text = re.sub(r"--[^\n]*", "", (DBT_PROJECT / model.original_file_path).read_text())
            assert not re.search(r"\b(join|union|distinct|unnest|generate_series|lateral)\b",
                                 text, re.IGNORECASE), model.name
            (upstream,) = model.depends_on.nodes
            if upstream == mirror:
                break
            model = nodes[upstream]


def test_the_changelogs_not_null_change_columns_are_checked_in_the_catalog(staged: Landed
                                                                           ) -> None:
    statuses = _statuses(staged, "source:shop_cdc.shop__stores,test_name:not_null_constraint")
    assert sorted(statuses) == [f"source_not_null_constraint_shop_cdc_shop__stores_{column}"
                                for column in ("_commit_lsn", "_ingested_at", "_lsn", "_op")]
    assert set(statuses.values()) == {"pass"}
    with psycopg.connect(staged.landing_url, autocommit=True) as conn:
        conn.execute("alter table cdc.shop__stores alter column _ingested_at drop not null")
        try:
            statuses = _statuses(staged, "source:shop_cdc.shop__stores,"
                                         "test_name:not_null_constraint")
        finally:
            conn.execute("alter table cdc.shop__stores alter column _ingested_at set not null")
    assert statuses.pop("source_not_null_constraint_shop_cdc_shop__stores__ingested_at") == "fail"
    assert set(statuses.values()) == {"pass"}
