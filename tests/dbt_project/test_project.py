"""The shape of the dbt project, read from its parsed manifest and the contracts."""

from __future__ import annotations

import importlib.util
from typing import Any

import yaml

from contracts import load_contracts, to_dbt_source_yaml
from tests.dbt_project.conftest import Landed
from tests.dbt_project.dbt_runner import DBT_PROJECT


def models(landed: Landed) -> dict[str, Any]:
    return {node.name: node for node in landed.dbt.manifest.nodes.values()
            if node.resource_type == "model"}


def test_only_staging_models_read_sources_one_per_mirror_table(landed: Landed) -> None:
    # Every model reading a source is the staging model stg_<source>__<...> of that source; the
    # demo's shop has one per mirror table, each reading only it. A source of the user's own
    # (contracts/mydb/) may have staging models for some of its tables, reading its mirror
    # and changelog (sources mydb and mydb_cdc).
    readers = {name: node for name, node in models(landed).items()
               if any(dep.startswith("source.") for dep in node.depends_on.nodes)}
    contracts = load_contracts()
    for name, node in readers.items():
        deps = [dep.split(".")[2:] for dep in node.depends_on.nodes]
        sources = {source.removesuffix("_cdc") for source, _ in deps}
        assert len(sources) == 1 and name.startswith(f"stg_{min(sources)}__"), (name, deps)
        assert all(dep.startswith("source.") for dep in node.depends_on.nodes), name
        source = min(sources)
        assert {t for s, t in deps if s == source} <= {t.name for t in contracts.tables(source)}
    shop = {name: node for name, node in readers.items() if name.startswith("stg_shop__")}
    read = {dep.rsplit(".", 1)[1] for node in shop.values() for dep in node.depends_on.nodes}
    assert read == {table.name for table in contracts.tables("shop")}
    assert all(len(node.depends_on.nodes) == 1 for node in shop.values())


SHIPPED_DAILY = {"fct_daily_store_revenue", "fct_daily_payments", "fct_daily_delivery_sla",
                 "fct_daily_funnel"}


def test_daily_marts_are_tagged_partitioned_by_their_day_column(landed: Landed) -> None:
    # The daily marts are the models under models/marts/daily/: the shipped four and any a
    # user adds there (README "Extending"); each is partitioned by its day column.
    daily = {name: node for name, node in models(landed).items() if "daily" in node.tags}
    in_folder = {name for name, node in models(landed).items()
                 if node.original_file_path.startswith("models/marts/daily/")}
    assert set(daily) == in_folder and in_folder >= SHIPPED_DAILY
    for name, node in daily.items():
        assert node.config.materialized == "incremental", name
        assert node.config.incremental_strategy == "day_window", name
        day = node.config.meta["day_column"]
        assert day.endswith("_date") and node.columns[day].data_type == "date", name
        assert day in node.constraints[0].columns, name
    others = {name for name, node in models(landed).items() if "daily" not in node.tags}
    assert all("unpartitioned" in models(landed)[name].tags for name in others)


def test_marts_enforce_contracts_and_other_layers_are_views(landed: Landed) -> None:
    for name, node in models(landed).items():
        if name.startswith(("fct_", "dim_")):
            assert node.contract.enforced and node.schema == "marts", name
        else:
            assert node.config.materialized == "view", name
            assert node.schema == ("staging" if name.startswith("stg_") else "intermediate")


def test_metric_logic_has_unit_tests(landed: Landed) -> None:
    unit_tests = landed.dbt.manifest.unit_tests.values()
    tested = {test.model for test in unit_tests}
    assert {"fct_daily_store_revenue", "fct_daily_funnel", "int_app_events_deduplicated",
            "int_order_refunds_aggregated"} <= tested
    landed.dbt.invoke("run", "-s", "path:models/staging", "path:models/intermediate")
    result = landed.dbt.invoke("test", "-s", "test_type:unit")
    assert len(result.result.results) == len(unit_tests) >= 6


def _generator():
    spec = importlib.util.spec_from_file_location(
        "generate_sources", DBT_PROJECT / "scripts" / "generate_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_sources_are_generated_from_the_contracts() -> None:
    generator = _generator()
    assert generator.SOURCES_FILE.read_text() == generator.render(), (
        "run python dbt_project/scripts/generate_sources.py")


def test_sources_carry_what_the_contracts_say() -> None:
    committed = yaml.safe_load(_generator().SOURCES_FILE.read_text())["sources"]
    mirror = {t["name"]: t for t in committed[0]["tables"]}
    contract = to_dbt_source_yaml(load_contracts(), "shop")["sources"][0]
    assert committed[0]["schema"] == contract["schema"] == "shop"
    for table in contract["tables"]:
        ours = mirror[table["name"]]
        column = table["config"].pop("loaded_at_field", None)  # measured on the changelog
        assert (column is None) == ("loaded_at_query" not in ours["config"]), table["name"]
        if column is not None:
            assert f'select "{column}" from "cdc"."shop__{table["name"]}"' in ours["config"].pop(
                "loaded_at_query")
        assert ours["config"] == table["config"]
        columns = {c["name"]: c for c in ours["columns"]}
        assert list(columns) == [c["name"] for c in table["columns"]]
        key = table["config"]["meta"]["contract"]["primary_key"]
        for column in table["columns"]:
            for test in column.get("data_tests", []):
                if column["name"] in key and test in ("unique", "not_null"):
                    continue  # the mirror's primary key: checked in the catalog (below)
                assert test in columns[column["name"]]["data_tests"], (table["name"], test)
        if key:
            assert ours["data_tests"] == [
                {"primary_key_constraint": {"arguments": {"columns": key}}}], table["name"]
    changelog = {t["name"]: t for t in committed[1]["tables"]}
    assert committed[1]["schema"] == "cdc"
    assert set(changelog) == {f"shop__{name}" for name in mirror}
    orders = changelog["shop__orders"]
    assert orders["config"]["loaded_at_query"].startswith(
        'select max("_ingested_at") from (select "_ingested_at" from "cdc"."shop__orders"')
    assert orders["config"]["freshness"] == mirror["orders"]["config"]["freshness"]


def test_source_freshness_runs_against_landing(landed: Landed) -> None:
    landed.sync()
    result = landed.dbt.invoke("source", "freshness", "-s", "source:shop_cdc.shop__orders",
                               check=False)
    assert [str(r.status) for r in result.result.results] == ["pass"]


def _scanned(plan: dict) -> list[tuple[str, str, float]]:
    """(node type, relation, rows returned) of every scan in an EXPLAIN ANALYZE plan."""
    out = [(plan["Node Type"], plan["Relation Name"], plan["Actual Rows"] * plan["Actual Loops"])
           ] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        out += _scanned(child)
    return out


def test_source_freshness_reads_the_newest_transaction_not_the_whole_table(landed: Landed
                                                                          ) -> None:
    # dbt's max(loaded_at_field) read every row of each mirror every 15 minutes (3.4 s for
    # app_events at 100 times the demo's week); the changelog's index gives the newest change.
    import psycopg

    landed.sync()  # the snapshot: the newest transaction of every changelog
    with psycopg.connect(landed.source_url, autocommit=True) as conn:
        conn.execute("update public.orders set updated_at = clock_timestamp() where order_id = "
                     "(select min(order_id) from public.orders)")
    landed.sync()  # one streamed transaction on orders
    committed = yaml.safe_load((DBT_PROJECT / "models" / "staging" / "_shop__sources.yml")
                               .read_text())["sources"]
    queries = {(source["name"], t["name"]): t["config"]["loaded_at_query"]
               for source in committed for t in source["tables"]
               if t["config"].get("freshness")}
    assert {("shop", "orders"), ("shop", "app_events"), ("shop_cdc", "shop__orders")} <= set(
        queries)
    with psycopg.connect(landed.landing_url, autocommit=True) as conn:
        conn.execute("analyze")
        for key, query in queries.items():
            plan = conn.execute(f"explain (analyze, format json) {query}").fetchone()[0]
            scans = _scanned(plan[0]["Plan"])
            if key[1].removeprefix("shop__") in landed.added_tables:
                continue  # empty (a user's table the demo does not fill): a seq scan of nothing
            # the newest changes through the changelog's index, whatever the history
            assert [node for node, _, _ in scans] == ["Index Scan"], (key, scans)
            assert scans[0][2] <= 1000, (key, scans)
        newest = conn.execute(queries[("shop", "orders")]).fetchone()[0]
        assert newest == conn.execute("select max(updated_at) from shop.orders").fetchone()[0]
        # app_events' newest changes are still its snapshot's last rows: a lower bound
        newest = conn.execute(queries[("shop", "app_events")]).fetchone()[0]
        assert newest <= conn.execute("select max(received_at) from shop.app_events"
                                      ).fetchone()[0]
    result = landed.dbt.invoke("source", "freshness", "-s", "source:shop.orders",
                               "-s", "source:shop_cdc.shop__orders", check=False)
    assert [str(r.status) for r in result.result.results] == ["pass", "pass"]


def test_profiles_default_to_the_embedded_stack_and_both_targets_connect(landed: Landed) -> None:
    profile = yaml.safe_load((DBT_PROJECT / "profiles.yml").read_text())["tidemark"]
    assert set(profile["outputs"]) == {"dev", "ci"}
    for output in profile["outputs"].values():
        assert "'127.0.0.1'" in output["host"] and "'55432'" in output["port"]
        assert "'tidemark_dbt'" in output["user"] and "'tidemark'" in output["dbname"]
    for target in ("dev", "ci"):
        result = landed.dbt.invoke("debug", "--target", target, check=False)
        assert result.success, target
