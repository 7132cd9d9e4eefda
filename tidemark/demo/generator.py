"""The OLTP workload of the demo shop as a deterministic sequence of transactions.

:class:`Workload` keeps the state of the shop it needs (open carts, orders by stage, next ids)
in memory and yields one :class:`Operation` — the statements of ONE source transaction — at a
time. The i-th operation depends only on the seed, i and that state, never on timing, so two
runs with the same seed over the same starting database write the same rows (apart from
wall-clock timestamps).

An order's life: the app starts a session, adds items to a cart and checks out (order + items +
``checkout_started`` in one transaction); then it is paid (charge + status + pending delivery),
dispatched, delivered and settled — or cancelled (with a refund and the pending delivery deleted
when already paid), its delivery fails, a line is removed while still placed, or a delivered
order gets a partial refund. Every outbox event is regular, late, duplicated (re-emitted by a
later transaction) or malformed, by the configured shares.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from tidemark.demo import generator_sql as q
from tidemark.demo.catalog import (
    BEYOND_LATENESS_BEFORE_MIDNIGHT_S,
    DELIVERY_NOTES,
    LATE_MAX_S,
    LATE_MIN_S,
    MALFORMATIONS,
    ON_TIME_MAX_S,
    PAYMENT_METHODS,
    PLATFORMS,
)

MAX_CARTS = 300  # older open carts are abandoned
MAX_LINES = 7
REEMIT_WITHIN_OPS = 20  # a duplicated event is re-emitted 1..20 operations later
FAILED_PAYMENT_SHARE = 0.04

# Relative frequency of each kind of operation (infeasible ones fall back to cart activity).
WEIGHTS = {
    "session": 8.0, "add_item": 24.0, "checkout": 8.0, "pay": 9.0, "dispatch": 9.0,
    "deliver": 9.0, "settle": 8.0, "cancel": 1.0, "remove_line": 1.0, "fail_delivery": 0.5,
    "partial_refund": 0.5, "move_customer": 1.0,
}

COUNTERS = ("orders", "late_orders", "status_changes", "payments", "refunds", "deletes", "events",
            "late", "duplicates", "malformed", "customer_updates")


@dataclass
class Line:
    """One order line, with its price in cents."""

    line_number: int
    product_id: int
    quantity: int
    price_cents: int


@dataclass
class Order:
    """An open order the workload keeps moving."""

    order_id: int
    customer_id: int
    lines: list[Line]
    charge_id: int | None = None
    method: str = "card"
    fingerprint: str | None = None
    delivery_id: int | None = None
    refunded: bool = False

    @property
    def total_cents(self) -> int:
        """The order total: the sum of its lines."""
        return sum(line.quantity * line.price_cents for line in self.lines)


@dataclass
class Cart:
    """An open cart of an app session."""

    cart_id: uuid.UUID
    session_id: uuid.UUID
    customer_id: int
    items: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Operation:
    """The statements of one source transaction and what they change.

    Attributes:
        kind: the kind of operation (a key of ``WEIGHTS``).
        statements: ``(sql, params)`` pairs, run between BEGIN and COMMIT.
        changes: rows inserted, updated or deleted.
        counts: per-counter increments (see ``COUNTERS``).
    """

    kind: str
    statements: list[tuple[str, tuple]] = field(default_factory=list)
    changes: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, sql: str, params: tuple, rows: int = 1, **counts: int) -> None:
        """Append a statement changing ``rows`` rows and bump the named counters."""
        self.statements.append((sql, params))
        self.changes += rows
        for name, value in counts.items():
            self.counts[name] += value


@dataclass
class ShopState:
    """What the workload reads from the database before it starts.

    Attributes:
        stores_by_city: store ids per city.
        customers: (customer_id, city) of every customer, ordered by id.
        products: (product_id, price in cents) of the active products, ordered by id.
        next_ids: first free order, payment and delivery id, and (``event``) the first free
            outbox id: where the database stands, which the random sequence continues from.
        open_orders: orders already placed, paid or dispatched, to carry on with, by stage.
    """

    stores_by_city: dict[str, list[int]]
    customers: list[tuple[int, str]]
    products: list[tuple[int, int]]
    next_ids: dict[str, int]
    open_orders: dict[str, list[Order]] = field(default_factory=dict)


class Workload:
    """A deterministic generator of shop transactions.

    Args:
        state: the shop as it is in the database at the start.
        seed: the generator seed.
        late_share: share of outbox events whose event_time is minutes to hours in the past.
        duplicate_share: share of outbox events re-emitted (same event_id) by a later
            transaction.
        malformed_share: share of outbox events whose payload breaks its contract.
    """

    def __init__(self, state: ShopState, seed: int, late_share: float, duplicate_share: float,
                 malformed_share: float) -> None:
        # The sequence depends on the seed AND on where the database stands: a restart with the
        # same seed continues with new ids and new event ids instead of replaying the same
        # random draws (which gave new contents to event ids already used).
        position = "/".join(str(state.next_ids.get(k, 0))
                            for k in ("order", "payment", "delivery", "event"))
        self.rng = random.Random(f"{seed}/{position}")
        self.seed = seed
        self.late_share, self.duplicate_share = late_share, duplicate_share
        self.malformed_share = malformed_share
        self.beyond_lateness_share = 0.0  # orders placed on a closed day (set by run_load)
        self.stores_by_city = state.stores_by_city
        self.all_stores = sorted(s for ids in state.stores_by_city.values() for s in ids)
        self.cities = sorted(state.stores_by_city)
        self.customers = list(state.customers)
        self.products = state.products
        self.prices = dict(state.products)
        self.next_order, self.next_payment = state.next_ids["order"], state.next_ids["payment"]
        self.next_delivery = state.next_ids["delivery"]
        self.carts: list[Cart] = []
        self.stages: dict[str, list[Order]] = {
            stage: list(state.open_orders.get(stage, ()))
            for stage in ("placed", "paid", "dispatched", "delivered")}
        self.reemit: dict[int, list[uuid.UUID]] = defaultdict(list)
        self.index = 0
        self.kinds = list(WEIGHTS)
        self.cumulative = []
        total = 0.0
        for kind in self.kinds:
            total += WEIGHTS[kind]
            self.cumulative.append(total)
        self.handlers = {kind: getattr(self, f"_op_{kind}") for kind in self.kinds}

    # -- the sequence ----------------------------------------------------------------------

    def next_operation(self) -> Operation:
        """The next transaction of the workload."""
        x = self.rng.random() * self.cumulative[-1]
        kind = self.kinds[bisect.bisect_right(self.cumulative, x)]
        op = Operation(kind)
        for event_id in self.reemit.pop(self.index, ()):
            op.add(q.REEMIT_EVENT, (event_id,), events=1, duplicates=1)
        if not self.handlers[kind](op):
            op.kind = "add_item"
            if not self._op_add_item(op):
                op.kind = "session"
                self._op_session(op)
        self.index += 1
        return op

    # -- helpers ---------------------------------------------------------------------------

    def _take(self, items: list) -> object:
        """Remove and return a random element (swap with the last: O(1))."""
        i = self.rng.randrange(len(items))
        items[i], items[-1] = items[-1], items[i]
        return items.pop()

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _customer(self) -> tuple[int, str]:
        return self.customers[int(len(self.customers) * self.rng.random() ** 1.6)]

    def _event(self, op: Operation, event_type: str, customer_id: int, session_id: uuid.UUID,
               payload: dict) -> None:
        """Add an outbox event: regular, late, duplicated or malformed by the shares."""
        x = self.rng.random()
        lag = 0.05 + (ON_TIME_MAX_S - 0.05) * self.rng.random()
        event_id = self._uuid()
        counts = {"events": 1}
        if x < self.late_share:
            lag = LATE_MIN_S * (LATE_MAX_S / LATE_MIN_S) ** self.rng.random()
            counts["late"] = 1
        elif x < self.late_share + self.duplicate_share:
            later = self.index + self.rng.randint(1, REEMIT_WITHIN_OPS)
            self.reemit[later].append(event_id)
        elif x < self.late_share + self.duplicate_share + self.malformed_share:
            fault = self.rng.choice(MALFORMATIONS[event_type])
            payload = {k: v for k, v in payload.items() if k != fault.get("drop")}
            payload.update(fault.get("set", {}))
            counts["malformed"] = 1
        op.add(q.INSERT_EVENT, (event_id, event_type, round(lag, 3), customer_id, session_id,
                                json.dumps(payload)), **counts)

    def _fingerprint(self, customer_id: int) -> str:
        """The card fingerprint of a customer (the same formula as the history seed)."""
        digest = hashlib.md5(f"{self.seed}:card:{customer_id}".encode()).hexdigest()
        return "fp_" + digest[:16]

    def _payment(self, op: Operation, order: Order, kind: str, cents: int, status: str) -> int:
        payment_id = self.next_payment
        self.next_payment += 1
        op.add(q.INSERT_PAYMENT, (payment_id, order.order_id, kind, order.method,
                                  order.fingerprint, cents, status),
               **({"refunds": 1} if kind == "refund" else {"payments": 1}))
        return payment_id

    def _set_order(self, op: Operation, order: Order, status: str) -> None:
        op.add(q.SET_ORDER_STATUS, (status, order.order_id), status_changes=1)

    # -- operations (each returns False when it cannot run now) ----------------------------

    def _op_session(self, op: Operation) -> bool:
        customer_id, _ = self._customer()
        cart = Cart(self._uuid(), self._uuid(), customer_id)
        self.carts.append(cart)
        if len(self.carts) > MAX_CARTS:
            self.carts.pop(0)
        payload = {"platform": self.rng.choice(PLATFORMS),
                   "app_version": f"4.{self.rng.randrange(10)}.{self.rng.randrange(20)}"}
        self._event(op, "session_started", customer_id, cart.session_id, payload)
        return True

    def _op_add_item(self, op: Operation) -> bool:
        if not self.carts:
            return False
        cart = self.carts[self.rng.randrange(len(self.carts))]
        if len(cart.items) >= MAX_LINES:
            return self._checkout(op, cart)
        product_id, _ = self.products[int(len(self.products) * self.rng.random() ** 2)]
        quantity = 1 + int(4 * self.rng.random() ** 3)
        cart.items.append((product_id, quantity))
        self._event(op, "cart_item_added", cart.customer_id, cart.session_id,
                    {"cart_id": str(cart.cart_id), "product_id": product_id,
                     "quantity": quantity})
        return True

    def _op_checkout(self, op: Operation) -> bool:
        for _ in range(3):
            if not self.carts:
                return False
            cart = self.carts[self.rng.randrange(len(self.carts))]
            if cart.items:
                return self._checkout(op, cart)
        return False

    def _checkout(self, op: Operation, cart: Cart) -> bool:
        self.carts.remove(cart)
        lines = [Line(n, p, qty, self.prices[p]) for n, (p, qty) in enumerate(cart.items, start=1)]
        order = Order(self.next_order, cart.customer_id, lines)
        self.next_order += 1
        city = self.customers[self._customer_index(cart.customer_id)][1]
        local = self.stores_by_city.get(city) or self.all_stores
        store_id = self.rng.choice(local if self.rng.random() < 0.9 else self.all_stores)
        notes = self.rng.choice(DELIVERY_NOTES) if self.rng.random() < 0.1 else None
        back = 0.0
        counts = {"orders": 1}
        if self.beyond_lateness_share and self.rng.random() < self.beyond_lateness_share:
            low, high = BEYOND_LATENESS_BEFORE_MIDNIGHT_S
            back = round(low + (high - low) * self.rng.random(), 3)
            counts["late_orders"] = 1
        op.add(q.INSERT_ORDER, (order.order_id, store_id, order.customer_id, back, back,
                                order.total_cents, notes), **counts)
        op.add(q.INSERT_ITEMS, (order.order_id, [ln.line_number for ln in lines],
                                [ln.product_id for ln in lines], [ln.quantity for ln in lines],
                                [ln.price_cents for ln in lines]), rows=len(lines))
        self._event(op, "checkout_started", cart.customer_id, cart.session_id,
                    {"cart_id": str(cart.cart_id),
                     "item_count": sum(ln.quantity for ln in lines),
                     "cart_value": order.total_cents / 100})
        self.stages["placed"].append(order)
        return True

    def _customer_index(self, customer_id: int) -> int:
        """Position of ``customer_id`` in the (sorted) customer list."""
        lo, hi = 0, len(self.customers)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.customers[mid][0] < customer_id:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _op_pay(self, op: Operation) -> bool:
        if not self.stages["placed"]:
            return False
        order = self._take(self.stages["placed"])
        x = self.rng.random()
        order.method = next(m for m, share in PAYMENT_METHODS if x < share)
        order.fingerprint = self._fingerprint(order.customer_id) if order.method == "card" else None
        if self.rng.random() < FAILED_PAYMENT_SHARE:
            self._payment(op, order, "charge", order.total_cents, "failed")
            self.stages["placed"].append(order)
            return True
        order.charge_id = self._payment(op, order, "charge", order.total_cents, "authorized")
        self._set_order(op, order, "paid")
        order.delivery_id = self.next_delivery
        self.next_delivery += 1
        promise_s = 1800 + self.rng.randrange(1801)
        op.add(q.INSERT_DELIVERY, (order.delivery_id, promise_s, order.order_id))
        self.stages["paid"].append(order)
        return True

    def _op_dispatch(self, op: Operation) -> bool:
        if not self.stages["paid"]:
            return False
        order = self._take(self.stages["paid"])
        courier = 1 + self.rng.randrange(8 * len(self.all_stores))
        op.add(q.DISPATCH, (courier, order.delivery_id), status_changes=1)
        op.add(q.SET_PAYMENT_STATUS, ("captured", order.charge_id), status_changes=1)
        self.stages["dispatched"].append(order)
        return True

    def _op_deliver(self, op: Operation) -> bool:
        if not self.stages["dispatched"]:
            return False
        order = self._take(self.stages["dispatched"])
        op.add(q.DELIVERED, (order.delivery_id,), status_changes=1)
        self._set_order(op, order, "delivered")
        self.stages["delivered"].append(order)
        return True

    def _op_settle(self, op: Operation) -> bool:
        if not self.stages["delivered"]:
            return False
        order = self._take(self.stages["delivered"])
        op.add(q.SET_PAYMENT_STATUS, ("settled", order.charge_id), status_changes=1)
        return True

    def _op_cancel(self, op: Operation) -> bool:
        stage = "placed" if self.rng.random() < 0.5 else "paid"
        if not self.stages[stage]:
            stage = "paid" if stage == "placed" else "placed"
            if not self.stages[stage]:
                return False
        order = self._take(self.stages[stage])
        self._set_order(op, order, "cancelled")
        if stage == "paid":
            op.add(q.DELETE_DELIVERY, (order.delivery_id,), deletes=1)
            op.add(q.SET_PAYMENT_STATUS, ("captured", order.charge_id), status_changes=1)
            self._payment(op, order, "refund", order.total_cents, "captured")
        return True

    def _op_remove_line(self, op: Operation) -> bool:
        candidates = self.stages["placed"]
        if not candidates:
            return False
        order = candidates[self.rng.randrange(len(candidates))]
        if len(order.lines) < 2:
            return False
        line = order.lines.pop()
        op.add(q.DELETE_LINE, (order.order_id, line.line_number), deletes=1)
        op.add(q.SET_ORDER_TOTAL, (order.total_cents, order.order_id))
        return True

    def _op_fail_delivery(self, op: Operation) -> bool:
        if not self.stages["dispatched"]:
            return False
        order = self._take(self.stages["dispatched"])
        op.add(q.DELIVERY_FAILED, (order.delivery_id,), status_changes=1)
        self._set_order(op, order, "cancelled")
        self._payment(op, order, "refund", order.total_cents, "captured")
        return True

    def _op_partial_refund(self, op: Operation) -> bool:
        candidates = [o for o in self.stages["delivered"][-20:] if not o.refunded]
        if not candidates:
            return False
        order = candidates[self.rng.randrange(len(candidates))]
        order.refunded = True
        line = order.lines[0]
        self._payment(op, order, "refund", line.quantity * line.price_cents, "captured")
        return True

    def _op_move_customer(self, op: Operation) -> bool:
        customer_id, city = self._customer()
        new_city = self.rng.choice([c for c in self.cities if c != city] or self.cities)
        self.customers[self._customer_index(customer_id)] = (customer_id, new_city)
        op.add(q.MOVE_CUSTOMER, (new_city, customer_id), customer_updates=1)
        return True
