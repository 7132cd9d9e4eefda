"""The workload generator alone (no database): a deterministic, well-formed operation sequence."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tidemark.demo import generator_sql as q
from tidemark.demo.generator import WEIGHTS, ShopState, Workload


def shop_state() -> ShopState:
    return ShopState(
        stores_by_city={"Amsterdam": [1, 3], "Utrecht": [2]},
        customers=[(c, "Amsterdam" if c % 2 else "Utrecht") for c in range(1, 201)],
        products=[(p, 100 + 7 * p) for p in range(1, 51)],
        next_ids={"order": 1000, "payment": 5000, "delivery": 9000})


def run(seed: int, n: int, **shares: float) -> list:
    shares = {"late_share": 0.1, "duplicate_share": 0.02, "malformed_share": 0.02, **shares}
    workload = Workload(shop_state(), seed, **shares)
    return [workload.next_operation() for _ in range(n)]


def test_same_seed_same_sequence_other_seed_other_sequence() -> None:
    def flat(ops: list) -> list:
        return [(op.kind, op.changes, [(s, repr(p)) for s, p in op.statements]) for op in ops]

    assert flat(run(7, 3000)) == flat(run(7, 3000))
    assert flat(run(7, 3000)) != flat(run(8, 3000))


def test_every_kind_of_operation_happens() -> None:
    kinds = Counter(op.kind for op in run(1, 20000))
    assert set(kinds) == set(WEIGHTS)
    # the life of an order: each order is paid (or cancelled), dispatched and delivered
    assert kinds["checkout"] * 0.8 < kinds["pay"] < kinds["checkout"] * 1.2


def test_changes_and_counters_follow_the_statements() -> None:
    for op in run(3, 5000):
        rows = 0
        for sql, params in op.statements:
            rows += len(params[1]) if sql == q.INSERT_ITEMS else 1
        assert op.changes == rows
        assert op.counts["events"] == sum(
            s in (q.INSERT_EVENT, q.REEMIT_EVENT) for s, _ in op.statements)
        assert op.counts["deletes"] == sum(
            s in (q.DELETE_LINE, q.DELETE_DELIVERY) for s, _ in op.statements)


def test_orders_move_only_forward_and_refunds_stay_within_charges() -> None:
    placed, charged, refunded, status = set(), Counter(), Counter(), {}
    order_of_payment = {}
    allowed = {None: {"placed"}, "placed": {"paid", "cancelled"},
               "paid": {"delivered", "cancelled"}}
    for op in run(4, 20000):
        for sql, params in op.statements:
            if sql == q.INSERT_ORDER:
                assert params[0] not in placed
                placed.add(params[0])
                status[params[0]] = "placed"
            elif sql == q.SET_ORDER_STATUS:
                new, order_id = params
                assert new in allowed[status[order_id]], (order_id, status[order_id], new)
                status[order_id] = new
            elif sql == q.INSERT_PAYMENT:
                payment_id, order_id, kind, method, fingerprint, cents, pay_status = params
                assert order_id in placed and cents > 0
                assert (method == "card") == (fingerprint is not None)
                order_of_payment[payment_id] = order_id
                if kind == "refund":
                    refunded[order_id] += cents
                    assert refunded[order_id] <= charged[order_id]
                elif pay_status != "failed":
                    charged[order_id] += cents
    assert len(placed) > 1000 and sum(refunded.values()) > 0
    assert set(status.values()) >= {"delivered", "cancelled"}


def test_duplicates_reemit_an_earlier_event_in_a_later_transaction() -> None:
    emitted_at = {}
    reemitted = 0
    for i, op in enumerate(run(5, 20000, duplicate_share=0.2)):
        for sql, params in op.statements:
            if sql == q.INSERT_EVENT:
                emitted_at[params[0]] = i
            elif sql == q.REEMIT_EVENT:
                assert emitted_at[params[0]] < i
                reemitted += 1
    assert reemitted / len(emitted_at) == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("shares", [
    {"late_share": 0.3, "duplicate_share": 0.0, "malformed_share": 0.1},
    {"late_share": 0.0, "duplicate_share": 0.0, "malformed_share": 0.0},
])
def test_late_and_malformed_events_follow_the_shares(shares: dict) -> None:
    late = malformed = events = 0
    for op in run(6, 20000, **shares):
        for sql, params in op.statements:
            if sql != q.INSERT_EVENT:
                continue
            events += 1
            lag, payload = params[2], json.loads(params[5])
            late += lag >= 120
            malformed += not is_well_formed(params[1], payload)
    assert late / events == pytest.approx(shares["late_share"], abs=0.02)
    assert malformed / events == pytest.approx(shares["malformed_share"], abs=0.02)


def is_well_formed(event_type: str, payload: dict) -> bool:
    """The payload contracts of the three outbox event types."""
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if event_type == "session_started":
        return (payload.get("platform") in ("ios", "android", "web")
                and isinstance(payload.get("app_version"), str))
    if event_type == "cart_item_added":
        return (isinstance(payload.get("cart_id"), str) and is_int(payload.get("product_id"))
                and payload["product_id"] > 0 and is_int(payload.get("quantity"))
                and 1 <= payload["quantity"] <= 50)
    if event_type == "checkout_started":
        return (isinstance(payload.get("cart_id"), str) and is_int(payload.get("item_count"))
                and payload["item_count"] >= 1
                and isinstance(payload.get("cart_value"), int | float)
                and payload["cart_value"] >= 0)
    return False
