"""A full ``dbt build`` over the landed demo data: each mart equals an independent computation."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.dbt_project import independent
from tests.dbt_project.conftest import Landed
from tests.dbt_project.marts import MARTS, assert_rows_equal, read_mart

EXPECTED = {
    "fct_daily_store_revenue": independent.store_revenue,
    "fct_daily_payments": independent.payments,
    "fct_daily_delivery_sla": independent.delivery_sla,
    "fct_daily_funnel": independent.funnel,
}


@pytest.fixture(scope="module")
def built(landed: Landed) -> Landed:
    """A full-refresh ``dbt build`` (models, data tests and unit tests) that must pass."""
    result = landed.dbt.invoke("build", "--full-refresh")
    statuses = {str(r.status) for r in result.result.results}
    assert statuses <= {"success", "pass"}, statuses
    return landed


def test_several_days_were_seeded(built: Landed) -> None:
    assert len(built.days) >= 4


@pytest.mark.parametrize("mart", sorted(EXPECTED))
def test_daily_mart_equals_independent_computation(built: Landed, mart: str) -> None:
    actual = read_mart(built.landing_url, mart)
    # The marts' days are those of their own events, not the orders': deliveries promised and
    # app events can fall a day past the last order day (just after midnight UTC) or before the
    # first; the independent computation covers the same span.
    span = [built.days[0], built.days[-1], *(key[0] for key in actual)]
    first, last = min(span), max(span)
    expected = EXPECTED[mart](built.source_url, built.source_schema, first, last)
    assert len({key[0] for key in actual}) >= 4, "the mart should cover several days"
    assert_rows_equal(actual, expected, mart)


def test_dimensions_equal_independent_computation(built: Landed) -> None:
    assert_rows_equal(read_mart(built.landing_url, "dim_stores"),
                      independent.stores(built.source_url, built.source_schema), "dim_stores")
    assert_rows_equal(read_mart(built.landing_url, "dim_customers"),
                      independent.customers(built.source_url, built.source_schema),
                      "dim_customers")


def test_refunds_and_cancellations_are_present_in_the_data(built: Landed) -> None:
    """The comparison above is meaningful only if the data has refunds and cancellations."""
    with psycopg.connect(built.landing_url) as conn:
        refunds, cancelled = conn.execute(
            "select sum(refund_amount), sum(cancelled_order_count) "
            "from marts.fct_daily_store_revenue"
        ).fetchone()
    assert refunds > 0 and cancelled > 0


def test_layers_build_into_their_exact_schemas(built: Landed) -> None:
    with psycopg.connect(built.landing_url) as conn:
        rows = conn.execute(
            "select table_schema, table_name, table_type from information_schema.tables "
            "where table_schema in ('staging', 'intermediate', 'marts') "
            "or table_schema like %s", ("%\\_staging",)).fetchall()
    by_schema: dict[str, set[str]] = {}
    for schema, name, kind in rows:
        by_schema.setdefault(schema, set()).add(name)
        assert (kind == "VIEW") == (schema != "marts"), (schema, name, kind)
    assert set(by_schema) == {"staging", "intermediate", "marts"}
    assert all(name.startswith("stg_shop__") for name in by_schema["staging"])
    assert {"fct_daily_store_revenue", "dim_customers"} <= by_schema["marts"]


def test_mart_contracts_are_enforced_as_constraints(built: Landed) -> None:
    with psycopg.connect(built.landing_url) as conn:
        keys = dict(conn.execute(
            "select c.conrelid::regclass::text, pg_get_constraintdef(c.oid) from pg_constraint c "
            "join pg_namespace n on n.oid = c.connamespace "
            "where n.nspname = 'marts' and c.contype = 'p'").fetchall())
    assert keys["marts.fct_daily_store_revenue"] == "PRIMARY KEY (order_date, store_id)"
    # every mart whose contract declares a primary key has it: the shipped ones and a user's
    declared = {f"marts.{node.name}" for node in built.dbt.manifest.nodes.values()
                if node.resource_type == "model" and node.schema == "marts"
                and any(c.type == "primary_key" for c in [*node.constraints, *(
                    c for column in node.columns.values() for c in column.constraints)])}
    assert set(keys) == declared and {f"marts.{mart}" for mart in MARTS} <= declared


def test_docs_generate_writes_a_catalog_of_the_marts(built: Landed) -> None:
    built.dbt.invoke("docs", "generate")
    catalog = json.loads((built.dbt.target_path / "catalog.json").read_text())
    assert "model.tidemark.fct_daily_funnel" in catalog["nodes"]
