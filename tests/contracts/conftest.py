"""Fixtures of the contracts tests: the shipped contracts, one valid row per demo table, and a
helper that writes (broken) contract files into a temporary contracts root."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import ContractSet, load_contracts
from contracts.loader import PACKAGE_ROOT

NOW = datetime(2026, 5, 4, 12, 30, 15, 250000, tzinfo=UTC)
EVENT_ID = uuid.UUID("8f0e2d1c-3b4a-4c5d-9e6f-7a8b9c0d1e2f")
CART_ID = "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10"


@pytest.fixture(scope="session")
def shipped() -> ContractSet:
    """The contracts shipped in the package (contracts/shop/**.yml)."""
    return load_contracts()


@pytest.fixture
def valid_rows() -> dict[str, dict[str, Any]]:
    """One valid row per demo table, as Python values (what psycopg returns).

    The rows reference each other (order 7 of customer 3 at store 1, ...), so they can be
    inserted into the real demo schema in this order.
    """
    return {
        "stores": {"store_id": 1, "store_name": "Harbor Amsterdam", "city": "Amsterdam",
                   "region": "north", "opened_at": NOW - timedelta(days=900), "is_active": True},
        "customers": {"customer_id": 3, "customer_name": "Anna de Jong",
                      "email": "anna.dejong@example.com", "city": "Amsterdam",
                      "signed_up_at": NOW - timedelta(days=30), "updated_at": NOW},
        "products": {"product_id": 11, "product_name": "Sourdough", "category": "bakery",
                     "unit_price": Decimal("3.49"), "tags": ["organic", "gluten-free"],
                     "is_active": True},
        "orders": {"order_id": 7, "store_id": 1, "customer_id": 3, "status": "paid",
                   "placed_at": NOW - timedelta(minutes=20), "updated_at": NOW,
                   "total_amount": Decimal("6.98"), "delivery_notes": None},
        "order_items": {"order_id": 7, "line_number": 1, "product_id": 11, "quantity": 2,
                        "unit_price": Decimal("3.49")},
        "payments": {"payment_id": 21, "order_id": 7, "payment_kind": "charge",
                     "method": "card", "card_fingerprint": "fp_9c2e41", "amount": Decimal("6.98"),
                     "status": "captured", "created_at": NOW - timedelta(minutes=19),
                     "updated_at": NOW},
        "deliveries": {"delivery_id": 31, "order_id": 7, "store_id": 1, "courier_id": 5,
                       "status": "dispatched", "promised_at": NOW + timedelta(minutes=40),
                       "dispatched_at": NOW - timedelta(minutes=2), "delivered_at": None,
                       "updated_at": NOW},
        "app_events": {"outbox_id": 1001, "event_id": EVENT_ID, "event_type": "cart_item_added",
                       "event_time": NOW - timedelta(seconds=2), "received_at": NOW,
                       "customer_id": 3, "session_id": uuid.UUID(int=42),
                       "payload": {"cart_id": CART_ID, "product_id": 11, "quantity": 2}},
    }


@pytest.fixture
def contract_root(tmp_path: Path) -> Callable[..., Path]:
    """Return ``write(relpath, content)``: put one file into a fresh contracts root.

    ``content`` is YAML text, or a dict dumped as YAML; ``relpath`` like ``shop/orders.yml``.
    The returned path is the root to pass to ``load_contracts``.
    """
    root = tmp_path / "contracts"

    def write(relpath: str, content: str | dict[str, Any]) -> Path:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return root

    return write


@pytest.fixture
def shipped_yaml() -> Callable[[str], dict[str, Any]]:
    """Return ``read(relpath)``: a shipped contract file parsed as a dict, ready to be broken."""

    def read(relpath: str) -> dict[str, Any]:
        return yaml.safe_load((PACKAGE_ROOT / relpath).read_text())

    return read
