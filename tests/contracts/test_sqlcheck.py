"""The SQL pre-check of a contract selects every row ``validate_row`` rejects (the oracle), on
generated rows with edge values (NaN, infinities, bounds, NULLs, non-ASCII text, odd JSON), and
on the demo's history selects exactly its malformed events."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from contracts import ContractSet, load_contracts, validate_row
from contracts.sqlcheck import family, suspect_predicate, translate_pattern
from tidemark.demo.schema import DEMO_TABLES, apply_schema
from tidemark.demo.seed import seed_history

POOLS: dict[str, list[Any]] = {
    "int": [None, "0", "-1", "1", "2", "2147483647", "2147483648", "-9223372036854775808",
            "50", "51"],
    "numeric": [None, "NaN", "Infinity", "-Infinity", "0", "0.01", "0.005", "-0.01",
                "9999999999.99", "10000000000", "1.500", "12.345"],
    "float": [None, "NaN", "Infinity", "-0", "1e308", "0.1", "-1"],
    "text": [None, "", "placed", "paid", "PAID", "card", "wallet", "refund", "north", "a b",
             "ünïcode", "x@y.z", "x@y", "tab\there", "line\nbreak", "fruit", "Fruit",
             "dairy_and_eggs", "sku-1", "SKU-1", "٣", "𝟘@x.y"],
    "boolean": [None, "true", "false"],
    "timestamptz": [None, "infinity", "-infinity", "0001-01-01 00:00:00+00",
                    "9999-12-31 23:59:59+00", "2026-05-04 12:00:00+00", "1999-01-01 00:00+05"],
    "date": [None, "infinity", "2026-05-04", "0001-01-01"],
    "uuid": [None, "8f0e2d1c-3b4a-4c5d-9e6f-7a8b9c0d1e2f"],
}
EVENT_TYPES = ["session_started", "cart_item_added", "checkout_started", "nope", None]
PAYLOADS = [
    None, "null", "[]", '"text"', "{}",
    '{"platform": "ios", "app_version": "4.1.0"}',
    '{"platform": "ios", "app_version": "4.1"}',
    '{"platform": "IOS", "app_version": "4.1.0"}',
    '{"platform": "web", "app_version": "5.0.0-beta.1"}',
    '{"platform": "web", "app_version": "٤.١.٠"}',
    '{"platform": "web", "app_version": "4.1.0", "extra": 1}',
    '{"platform": null, "app_version": "4.1.0"}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 1, "quantity": 1}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 1, "quantity": 50}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 1, "quantity": 51}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 1.0, "quantity": 2}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 0, "quantity": 2}',
    '{"cart_id": "2B7C1F7E-9A55-4F63-8D0E-3C1B9E4D2A10", "product_id": 3, "quantity": 2}',
    '{"cart_id": "not-a-uuid", "product_id": 3, "quantity": 2}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": "3", "quantity": 2}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "quantity": 2}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 1, "cart_value": 0}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 1, "cart_value": -0.01}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 0, "cart_value": 1e2}',
    '{"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 2, "cart_value": true}',
]


def _types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid ="
        " %s::regclass and attnum > 0 and not attisdropped", (table,))}


def _suspects(conn: psycopg.Connection, table: str, contracts: ContractSet,
              name: str) -> tuple[set[int], bool]:
    types = _types(conn, table)
    types.pop("_rid", None)
    pred = suspect_predicate(contracts.table("shop", name), types, contracts)
    rows = conn.execute(sql.SQL("select _rid from {} where {}").format(
        sql.Identifier(table), pred.text), pred.params).fetchall()
    return {r[0] for r in rows}, pred.exact


def _violating(conn: psycopg.Connection, table: str, contracts: ContractSet,
               name: str) -> set[int]:
    cols = [c for c in _types(conn, table) if c != "_rid"]
    query = sql.SQL("select _rid, {} from {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
        sql.Identifier(table))
    contract = contracts.table("shop", name)
    return {r[0] for r in conn.execute(query)
            if validate_row(contract, dict(zip(cols, r[1:], strict=True)), contracts)}


@pytest.fixture(scope="module")
def demo(module_db: str) -> str:
    apply_schema(module_db)
    seed_history(module_db, days=1, orders_per_day=200, seed=5)
    return module_db


def test_valid_history_has_no_suspects(demo: str) -> None:
    contracts = load_contracts()
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        for table in DEMO_TABLES:
            conn.execute(sql.SQL("create temp table {} as select row_number() over () as _rid,"
                                 " * from {}").format(sql.Identifier(f"v_{table}"),
                                                      sql.Identifier(table)))
            suspects, exact = _suspects(conn, f"v_{table}", contracts, table)
            assert exact, table
            # The history is valid except the outbox's deliberately malformed events: exactly
            # those are selected, no valid row is.
            assert suspects == _violating(conn, f"v_{table}", contracts, table), table


@pytest.mark.parametrize("table", DEMO_TABLES)
def test_every_violating_row_is_selected(demo: str, table: str) -> None:
    contracts = load_contracts()
    rng = random.Random(hash(table) % 1000)
    with psycopg.connect(demo, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        work = f"g_{table}"
        conn.execute(sql.SQL("create temp table {} as select * from {} limit 0").format(
            sql.Identifier(work), sql.Identifier(table)))
        conn.execute(sql.SQL("alter table {} add column _rid serial").format(sql.Identifier(work)))
        types = _types(conn, work)
        cols = [c for c in types if c != "_rid"]
        base = conn.execute(sql.SQL("select {} from {} limit 50").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols),
            sql.Identifier(table))).fetchall()
        made = 0
        for _ in range(1500):
            row = dict(zip(cols, rng.choice(base), strict=True))
            for col in rng.sample(cols, k=rng.choice((1, 1, 2, 3))):
                fam = family(types[col])
                if col == "payload":
                    row[col] = rng.choice(PAYLOADS)
                elif col == "event_type":
                    row[col] = rng.choice(EVENT_TYPES)
                elif fam in POOLS:
                    row[col] = rng.choice(POOLS[fam])
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("insert into {} ({}) values ({})").format(
                        sql.Identifier(work), sql.SQL(", ").join(map(sql.Identifier, cols)),
                        sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(types[c]))
                                           for c in cols)), [row[c] for c in cols])
                made += 1
            except psycopg.errors.DataError:
                continue
        assert made > 500
        violating = _violating(conn, work, contracts, table)
        suspects, _ = _suspects(conn, work, contracts, table)
        assert len(violating) > 100
        assert violating <= suspects, f"missed: {sorted(violating - suspects)[:10]}"


@pytest.mark.parametrize("pattern, translated", [
    (r"[a-z][a-z_]*", "^(?=[ -~]*$)(?:[a-z][a-z_]*)$"),
    (r"[^@\s]+@[^@\s]+\.[^@\s]+", r"^(?=[ -~]*$)(?:[^@\s]+@[^@\s]+\.[^@\s]+)$"),
    (r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?",
     r"^(?=[ -~]*$)(?:\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?)$"),
    (r"(?i)abc", None), (r"a\b", None), (r"(a)\1", None), (r"[\S]", None), (r"a(?=b)", None),
    (r"[[:alpha:]]", None), (r"a*+", None),
])
def test_pattern_translation(pattern: str, translated: str | None) -> None:
    assert translate_pattern(pattern) == translated


def test_unknown_types_fall_back_to_python(demo: str) -> None:
    contracts = load_contracts()
    orders = contracts.table("shop", "orders")
    types = {c: "text" for c in orders.columns}
    pred = suspect_predicate(orders, types, contracts)
    assert not pred.exact
    assert json.dumps([str(p) for p in pred.params])  # parameters are plain values


CART_IDS = [
    "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "2B7C1F7E-9A55-4F63-8D0E-3C1B9E4D2A10",
    "2b7C1f7E-9a55-4F63-8d0e-3C1b9E4d2A10", "00000000-0000-0000-0000-000000000000",
    "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d-a10",  # a fifth hyphen where a digit belongs
    "2b7c1f7e-9a55-4f63-8d0e--c1b9e4d2a10", "2b7c1f7g-9a55-4f63-8d0e-3c1b9e4d2a10",
    "2b7c1f7e9a554f638d0e3c1b9e4d2a10", "{2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10}",
    "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a1", "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a100",
    " b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "2b7c1f7e_9a55-4f63-8d0e-3c1b9e4d2a10",
    "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a1٣", "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2aＡ",
    "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2aİ", "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a%",
    "", "not-a-uuid",
]


def _event_table(conn: psycopg.Connection, table: str, event_type: str
                 ) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    """An empty copy of app_events (plus ``_rid``): its types, its columns and one stored row of
    ``event_type`` as text, to vary."""
    conn.execute("set timezone = 'UTC'")
    conn.execute(sql.SQL("create temp table {} as select * from app_events limit 0").format(
        sql.Identifier(table)))
    conn.execute(sql.SQL("alter table {} add column _rid serial").format(sql.Identifier(table)))
    types = _types(conn, table)
    cols = [c for c in types if c != "_rid"]
    base = dict(zip(cols, conn.execute(sql.SQL(
        "select {} from app_events where event_type = %s limit 1").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols)),
        (event_type,)).fetchone(), strict=True))
    return types, cols, base


def test_uuid_field_check_is_exact(demo: str) -> None:
    """The payload uuid check (LIKE shape + one-class expression + no fifth hyphen) selects
    exactly the cart ids the validator rejects: every odd one, no valid one in any case."""
    contracts = load_contracts()
    with psycopg.connect(demo, autocommit=True) as conn:
        types, cols, base = _event_table(conn, "u_events", "cart_item_added")
        for cart_id in CART_IDS:
            row = {**base, "payload": json.dumps({"cart_id": cart_id, "product_id": 3,
                                                  "quantity": 2})}
            conn.execute(sql.SQL("insert into u_events ({}) values ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(types[c])) for c in cols)),
                [row[c] for c in cols])
        violating = _violating(conn, "u_events", contracts, "app_events")
        suspects, exact = _suspects(conn, "u_events", contracts, "app_events")
        assert exact
        assert violating == set(range(5, len(CART_IDS) + 1))  # the four valid ids come first
        assert suspects == violating


OPTIONAL_EVENT = """version: 1
description: Every presence and null combination of a payload field.
payload:
  platform: {type: string, required: true, nullable: true}
  app_version: {type: string, required: false}
  build: {type: integer, required: false, nullable: true}
  beta: {type: boolean}
"""
OPTIONAL_VALUES: dict[str, list[Any]] = {
    "platform": ["ios", None, 3, True], "app_version": ["4.1.0", None, 4.1],
    "build": [7, None, 7.5, "7"], "beta": [True, None, "true", 0]}


def test_payload_presence_and_null_checks_are_exact(demo: str, tmp_path: Path) -> None:
    """The one type test per payload field (presence, JSON null and kind) selects exactly the
    payloads the validator rejects, for required/optional and nullable/not fields alike."""
    from contracts.loader import PACKAGE_ROOT

    shutil.copytree(PACKAGE_ROOT / "shop", tmp_path / "shop")
    (tmp_path / "shop" / "events" / "session_started.yml").write_text(OPTIONAL_EVENT)
    contracts = load_contracts(tmp_path)
    missing = object()
    payloads = [{k: v for k, v in zip(OPTIONAL_VALUES, combo, strict=True) if v is not missing}
                for combo in itertools.product(*([*vs, missing] for vs in
                                                 OPTIONAL_VALUES.values()))]
    with psycopg.connect(demo, autocommit=True) as conn:
        types, cols, base = _event_table(conn, "o_events", "session_started")
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("insert into o_events ({}) values ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(types[c])) for c in cols)),
                [[json.dumps(p) if c == "payload" else base[c] for c in cols] for p in payloads])
        violating = _violating(conn, "o_events", contracts, "app_events")
        suspects, exact = _suspects(conn, "o_events", contracts, "app_events")
    assert exact
    assert 0 < len(violating) < len(payloads)
    assert suspects == violating


def test_payload_checks_ignore_columns_named_like_their_subquery(demo: str) -> None:
    """The payload terms read each field from a subquery (``v0``, ``t0``, ``k0``, ``extra``,
    ``e``, ``s``); table columns of those names, holding values that would pass or fail the
    terms, change nothing: the suspects are still exactly the violating rows."""
    contracts = load_contracts()
    with psycopg.connect(demo, autocommit=True) as conn:
        types, cols, base = _event_table(conn, "n_events", "cart_item_added")
        conn.execute("alter table n_events add column v0 jsonb default '\"x\"',"
                     " add column t0 text default 'not-a-uuid', add column k0 text"
                     " default 'number', add column extra boolean default true,"
                     " add column e text default 'e', add column s text default 's'")
        for cart_id in CART_IDS:
            for quantity in (2, 51):
                row = {**base, "payload": json.dumps({"cart_id": cart_id, "product_id": 3,
                                                      "quantity": quantity})}
                conn.execute(sql.SQL("insert into n_events ({}) values ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, cols)),
                    sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(types[c]))
                                       for c in cols)), [row[c] for c in cols])
        events = conn.execute("select _rid, payload from n_events").fetchall()
        violating = _violating(conn, "n_events", contracts, "app_events")
        suspects, exact = _suspects(conn, "n_events", contracts, "app_events")
    assert exact
    assert 0 < len(violating) < len(events)
    assert suspects == violating
