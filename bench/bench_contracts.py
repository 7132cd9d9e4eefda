"""Benchmark: contracts.validate_row throughput against pydantic v2 (Rust core) doing the same
checks, measured in the same run.

For ``orders`` (Python values as psycopg returns them, and the textual CDC form) and
``app_events`` (textual form, JSON payload checked against its event contract), it validates the
same rows with ``validate_row`` and with an equivalent pydantic model (lax mode, so it accepts
the textual forms too) and prints rows/s and the ratio ours/pydantic. Ingestion's budget is about
50,000 rows/s. The last line is JSON.

    python bench/bench_contracts.py [--rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, Json, TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, not an old install
from contracts import load_contracts, validate_row

BIGINT = Annotated[int, Field(ge=1, le=2**63 - 1)]
INT = Annotated[int, Field(ge=1, le=2**31 - 1)]


class Order(BaseModel):
    """pydantic twin of contracts/shop/orders.yml."""

    order_id: BIGINT
    store_id: INT
    customer_id: BIGINT
    status: Literal["placed", "paid", "delivered", "cancelled"]
    placed_at: AwareDatetime
    updated_at: AwareDatetime
    total_amount: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
    delivery_notes: str | None


class CartItemAdded(BaseModel, extra="forbid"):
    cart_id: uuid.UUID
    product_id: Annotated[int, Field(ge=1)]
    quantity: Annotated[int, Field(ge=1, le=50)]


class SessionStarted(BaseModel, extra="forbid"):
    platform: Literal["ios", "android", "web"]
    app_version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")]


class CheckoutStarted(BaseModel, extra="forbid"):
    cart_id: uuid.UUID
    item_count: Annotated[int, Field(ge=1)]
    cart_value: Annotated[float, Field(ge=0)]


PAYLOADS = {"cart_item_added": CartItemAdded, "session_started": SessionStarted,
            "checkout_started": CheckoutStarted}


class AppEvent(BaseModel):
    """pydantic twin of contracts/shop/app_events.yml (payload checked separately)."""

    outbox_id: BIGINT
    event_id: uuid.UUID
    event_type: Literal["session_started", "cart_item_added", "checkout_started"]
    event_time: AwareDatetime
    received_at: AwareDatetime
    customer_id: BIGINT | None
    session_id: uuid.UUID | None
    payload: Json[dict[str, Any]]


def order_rows(n: int) -> list[dict[str, Any]]:
    base = datetime(2026, 5, 4, tzinfo=UTC)
    statuses = ("placed", "paid", "delivered", "cancelled")
    return [{"order_id": i + 1, "store_id": i % 40 + 1, "customer_id": i % 5000 + 1,
             "status": statuses[i % 4], "placed_at": base + timedelta(seconds=i),
             "updated_at": base + timedelta(seconds=i + 60),
             "total_amount": Decimal(i % 10000) / 100,
             "delivery_notes": None if i % 3 else "Ring twice"} for i in range(n)]


def as_text(row: dict[str, Any]) -> dict[str, str | None]:
    return {k: None if v is None else v.isoformat(sep=" ") if isinstance(v, datetime) else str(v)
            for k, v in row.items()}


def event_rows(n: int) -> list[dict[str, str | None]]:
    base = datetime(2026, 5, 4, tzinfo=UTC)
    rows = []
    for i in range(n):
        kind = ("session_started", "cart_item_added", "checkout_started")[i % 3]
        cart = str(uuid.UUID(int=i // 3 + 1))
        payload = ({"platform": "ios", "app_version": f"4.{i % 10}.{i % 20}"} if i % 3 == 0 else
                   {"cart_id": cart, "product_id": i % 300 + 1, "quantity": i % 5 + 1}
                   if i % 3 == 1 else {"cart_id": cart, "item_count": 3, "cart_value": 12.5})
        rows.append({"outbox_id": str(i + 1), "event_id": str(uuid.UUID(int=i + 10**6)),
                     "event_type": kind, "event_time": (base + timedelta(seconds=i)).isoformat(),
                     "received_at": (base + timedelta(seconds=i + 1)).isoformat(),
                     "customer_id": str(i % 5000 + 1), "session_id": None,
                     "payload": json.dumps(payload)})
    return rows


def rate(fn: Callable[[dict[str, Any]], Any], rows: list[dict[str, Any]], repeat: int) -> float:
    """Best rows/s over ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for row in rows:
            fn(row)
        best = min(best, time.perf_counter() - start)
    return len(rows) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    contracts = load_contracts()
    orders = contracts.table("shop", "orders")
    events = contracts.table("shop", "app_events")
    order_adapter = TypeAdapter(Order)
    event_adapter = TypeAdapter(AppEvent)

    def pydantic_event(row: dict[str, Any]) -> None:
        parsed = event_adapter.validate_python(row)
        PAYLOADS[parsed.event_type].model_validate(parsed.payload)

    python_rows = order_rows(args.rows)
    text_rows = [as_text(r) for r in python_rows]
    outbox_rows = event_rows(args.rows)
    for row in (python_rows[0], text_rows[0], outbox_rows[0], outbox_rows[1], outbox_rows[2]):
        assert validate_row(orders if "order_id" in row else events, row) == [], row
    cases = [
        ("orders, python values", orders, python_rows, order_adapter.validate_python),
        ("orders, textual", orders, text_rows, order_adapter.validate_python),
        ("app_events + payload, textual", events, outbox_rows, pydantic_event),
    ]
    results = []
    print(f"{args.rows} rows per case, best of {args.repeat}")
    for name, contract, rows, baseline in cases:
        ours = rate(lambda row, c=contract: validate_row(c, row), rows, args.repeat)
        theirs = rate(baseline, rows, args.repeat)
        results.append({"case": name, "rows_per_s": round(ours),
                        "pydantic_rows_per_s": round(theirs), "ratio": round(ours / theirs, 2)})
        print(f"{name:32} validate_row {ours:>10,.0f} rows/s   pydantic {theirs:>10,.0f} rows/s"
              f"   ratio {ours / theirs:.2f}")
    print(json.dumps({"benchmark": "contracts.validate_row", "rows": args.rows,
                      "min_rows_per_s": min(r["rows_per_s"] for r in results),
                      "cases": results}))


if __name__ == "__main__":
    main()
