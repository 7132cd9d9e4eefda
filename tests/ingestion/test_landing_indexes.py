"""The indexes a contract declares (``indexes:``) on the landing mirror: built with the mirror by
a snapshot, built concurrently on a mirror that exists already (once; an invalid one left by a
failed build is built again), never beside an index that serves the same reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from contracts import load_contracts
from ingestion import catch_up
from ingestion.landing_indexes import IndexKeeper, ensure_declared_indexes, index_name
from tests.ingestion.conftest import Pair
from tidemark.demo.schema import apply_schema

SHOP = Path(__file__).resolve().parents[2] / "contracts" / "shop"


def contracts_for(source: str, root: Path, *, indexes: bool = True) -> object:
    """The demo's contracts for ``source``; without their ``indexes:`` lists if asked."""
    shutil.copytree(SHOP, root / source, dirs_exist_ok=True)
    if not indexes:
        for path in (root / source).glob("*.yml"):
            text = path.read_text()
            path.write_text(text.split("\nindexes:", 1)[0] + "\n")
    return load_contracts(root)


def mirror_indexes(p: Pair, table: str) -> dict[str, tuple[str, bool]]:
    """Index name -> (definition, valid) of a mirror."""
    with psycopg.connect(p.land) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "select c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid from pg_index i"
            " join pg_class c on c.oid = i.indexrelid where i.indrelid = %s::regclass",
            (f"{p.source}.{table}",))}


def seed(p: Pair) -> None:
    apply_schema(p.src)
    p.src_exec(
        "insert into stores values (1, 's', 'c', 'north', now(), true)",
        "insert into customers values (1, 'c', 'c@example.com', 'c', now(), now())",
        "insert into orders select g, 1, 1, 'paid', now() - g * interval '1 hour', now(), 10,"
        " null from generate_series(1, 50) g",
        "insert into payments select g, g % 25 + 1, 'charge', 'wallet', null, 10, 'captured',"
        " now() - g * interval '1 hour', now() from generate_series(1, 50) g")


def test_a_snapshot_builds_the_declared_indexes_with_the_mirror(pair: Pair,
                                                                tmp_path: Path) -> None:
    seed(pair)
    catch_up(pair.src, pair.land, pair.source, contracts=contracts_for(pair.source, tmp_path))
    payments = mirror_indexes(pair, "payments")
    assert payments["payments__created_at_idx"] == (
        f"CREATE INDEX payments__created_at_idx ON {pair.source}.payments USING btree "
        "(created_at)", True)
    assert payments["payments__order_id_idx"][1]
    assert "orders__placed_at_idx" in mirror_indexes(pair, "orders")
    assert "deliveries__promised_at_idx" in mirror_indexes(pair, "deliveries")
    assert "app_events__event_time_idx" in mirror_indexes(pair, "app_events")
    assert len(mirror_indexes(pair, "stores")) == 1  # the primary key only


def test_an_existing_mirror_gets_them_concurrently_once(pair: Pair, tmp_path: Path) -> None:
    seed(pair)
    catch_up(pair.src, pair.land, pair.source,
             contracts=contracts_for(pair.source, tmp_path / "old", indexes=False))
    assert set(mirror_indexes(pair, "payments")) == {"payments_pkey"}
    with psycopg.connect(pair.land, autocommit=True) as conn:
        # a failed concurrent build leaves its index invalid (duplicate order ids: not unique)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"create unique index concurrently payments__order_id_idx"
                         f" on {pair.source}.payments (order_id)")
        # an index of someone else's on orders (placed_at) serves the declared one
        conn.execute(f"create index mine on {pair.source}.orders (placed_at, order_id)")
    assert mirror_indexes(pair, "payments")["payments__order_id_idx"][1] is False
    contracts = contracts_for(pair.source, tmp_path / "new")
    built = ensure_declared_indexes(pair.land, pair.source, contracts)
    assert sorted(built) == [f"{pair.source}.{name}" for name in (
        "app_events__event_time_idx", "deliveries__promised_at_idx",
        "payments__created_at_idx", "payments__order_id_idx")]
    payments = mirror_indexes(pair, "payments")
    assert payments["payments__order_id_idx"] == (
        f"CREATE INDEX payments__order_id_idx ON {pair.source}.payments USING btree (order_id)",
        True)
    assert set(mirror_indexes(pair, "orders")) == {"orders_pkey", "mine"}
    assert ensure_declared_indexes(pair.land, pair.source, contracts) == []


def test_a_catch_up_builds_them_on_an_upgraded_landing_before_it_returns(
        pair: Pair, tmp_path: Path) -> None:
    """A landing of an older version (mirrors without the declared indexes): the catch-up that
    `tidemark up` runs before its dbt build leaves the indexes built, so that first build reads
    one day by index, not every row (main built them only once a stream started, after it)."""
    seed(pair)
    catch_up(pair.src, pair.land, pair.source,
             contracts=contracts_for(pair.source, tmp_path / "old", indexes=False))
    assert set(mirror_indexes(pair, "payments")) == {"payments_pkey"}
    pair.src_exec("insert into payments values (51, 1, 'charge', 'wallet', null, 10,"
                  " 'captured', now(), now())")
    catch_up(pair.src, pair.land, pair.source,
             contracts=contracts_for(pair.source, tmp_path / "new"))
    payments = mirror_indexes(pair, "payments")
    assert payments["payments__created_at_idx"][1] and payments["payments__order_id_idx"][1]
    assert mirror_indexes(pair, "orders")["orders__placed_at_idx"][1]


def test_the_keeper_runs_once_per_contract_set(pair: Pair, tmp_path: Path) -> None:
    seed(pair)
    catch_up(pair.src, pair.land, pair.source,
             contracts=contracts_for(pair.source, tmp_path / "old", indexes=False))
    keeper = IndexKeeper()
    contracts = contracts_for(pair.source, tmp_path / "new")
    keeper.poll(pair.land, pair.source, contracts)
    keeper.join(60)
    assert "payments__created_at_idx" in mirror_indexes(pair, "payments")
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(f"drop index {pair.source}.payments__created_at_idx")
    keeper.poll(pair.land, pair.source, contracts)  # the same set: nothing to do
    keeper.join(60)
    assert "payments__created_at_idx" not in mirror_indexes(pair, "payments")


def test_index_names_fit_postgresql() -> None:
    assert index_name("payments", ["order_id"]) == "payments__order_id_idx"
    assert index_name("orders", ["store_id", "placed_at"]) == "orders__store_id__placed_at_idx"
    long = index_name("t" * 60, ["c" * 60])
    assert len(long.encode()) == 63 and long != index_name("t" * 60, ["c" * 59 + "d"])
