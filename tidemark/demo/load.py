"""``tidemark demo load``: run the shop's OLTP workload at a given rate of row changes.

One connection, pipeline mode: every tick (50 ms) the operations that are due by the wall clock
are sent back to back, each as its own ``BEGIN ... COMMIT`` transaction, and the tick ends with
one sync — a few round trips per tick whatever the rate. The operations themselves come from
:class:`tidemark.demo.generator.Workload`, so the sequence depends only on the seed and on
the database it starts from; timing decides only how far down the sequence a run gets.

A run stops at ``duration_s``, when ``stop`` is set, or on Ctrl-C (in the main thread): the
transactions already sent are completed, nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from ingestion.failures import is_transient, quiet_pipeline
from tidemark.demo import generator_sql as q
from tidemark.demo.catalog import (
    DEFAULT_DUPLICATE_SHARE,
    DEFAULT_LATE_SHARE,
    DEFAULT_MALFORMED_SHARE,
    validate_shares,
)
from tidemark.demo.dimensions import DimensionSizes, insert_dimensions
from tidemark.demo.generator import Line, Operation, Order, ShopState, Workload
from tidemark.demo.schema import apply_schema_on, missing_tables
from tidemark.demo.sqlrandom import MAX_SEED
from tidemark.errors import DemoInputError, DemoStateError

log = logging.getLogger("tidemark.demo")

TICK_S = 0.05
MAX_TICK_S = 0.25  # when behind, a tick sends at most this long (and this much of the rate)
PROGRESS_EVERY_S = 0.5
RECONNECT_FIRST_S = 0.5  # the first wait after a lost connection; doubled up to the next
RECONNECT_MAX_S = 8.0
ADOPT_OPEN_ORDERS = 1000


@dataclass
class LoadStats:
    """What a load run did.

    Attributes:
        rate: requested row changes per second.
        duration_s: requested duration.
        seed: the generator seed.
        elapsed_s: wall-clock seconds the run took so far.
        changes: rows inserted, updated or deleted (committed at the last sync).
        transactions: source transactions committed.
        orders: orders placed.
        late_orders: of those, orders placed on yesterday beyond the allowed lateness.
        status_changes: status updates of orders, payments and deliveries.
        payments: charges inserted (including failed attempts).
        refunds: refunds inserted.
        deletes: rows deleted (lines removed from placed orders, deliveries of cancelled orders).
        events: outbox rows inserted (including re-emitted duplicates).
        late: events whose event_time is minutes to hours before received_at.
        duplicates: re-emitted events (same event_id as an earlier row).
        malformed: events whose payload breaks its contract.
        customer_updates: customers that moved to another city.
        stopped: True when stopped early (stop event or Ctrl-C).
        reconnects: times the load reconnected after its connection was lost.
        outage_s: seconds from each loss to its reconnection (not in ``elapsed_s``).
    """

    rate: float
    duration_s: float
    seed: int
    elapsed_s: float = 0.0
    changes: int = 0
    transactions: int = 0
    orders: int = 0
    late_orders: int = 0
    status_changes: int = 0
    payments: int = 0
    refunds: int = 0
    deletes: int = 0
    events: int = 0
    late: int = 0
    duplicates: int = 0
    malformed: int = 0
    customer_updates: int = 0
    stopped: bool = False
    reconnects: int = 0
    outage_s: float = 0.0

    @property
    def achieved_rate(self) -> float:
        """Row changes per second actually reached."""
        return self.changes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, op: Operation) -> None:
        """Count one operation."""
        self.changes += op.changes
        self.transactions += 1
        for name, value in op.counts.items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        """The stats as plain JSON-ready values, with the achieved rate."""
        return {**asdict(self), "achieved_rate": round(self.achieved_rate, 1)}


def run_load(
    source_dsn: str,
    rate: float,
    duration_s: float,
    seed: int = 42,
    late_share: float = DEFAULT_LATE_SHARE,
    duplicate_share: float = DEFAULT_DUPLICATE_SHARE,
    malformed_share: float = DEFAULT_MALFORMED_SHARE,
    beyond_lateness_share: float = 0.0,
    progress: Callable[[LoadStats], None] | None = None,
    stop: threading.Event | None = None,
    on_outage: Callable[[str], None] | None = None,
) -> LoadStats:
    """Run the OLTP workload against the demo source.

    Creates the demo tables (and stores, customers and products) when the database has none;
    carries on with orders left open by an earlier seed or load.

    Args:
        source_dsn: URL of the source database.
        rate: row changes per second (positive).
        duration_s: how long to run, in seconds (positive; ``math.inf`` runs until stopped).
        seed: generator seed; the same seed on the same starting database gives the same rows.
        late_share: share of outbox events whose event_time is minutes to hours in the past.
        duplicate_share: share of outbox events re-emitted by a later transaction.
        malformed_share: share of outbox events whose payload breaks its contract.
        beyond_lateness_share: share of orders placed on yesterday, beyond the orders' allowed
            lateness (late data after the day closed; ``tidemark up`` sets it from
            ``TIDEMARK_DEMO_BEYOND_LATENESS_SHARE``).
        progress: called with the running :class:`LoadStats` about twice a second and at the end.
        stop: set it to stop the run early (Ctrl-C does the same in the main thread).
        on_outage: called with a message when the connection is lost once the load ran (the
            server restarted, crashed, or ended the session): the load reconnects with
            backoff and goes on; the outage's time is not paced (no burst afterwards).
            Default: a logged warning.

    Returns:
        What the run did, with its achieved rate.

    Raises:
        DemoInputError: a parameter is out of range.
        DemoStateError: the source database cannot take the workload.
    """
    _check_inputs(rate, duration_s, seed)
    validate_shares(late_share, duplicate_share, malformed_share)
    stop = stop if stop is not None else threading.Event()
    stats = LoadStats(rate=rate, duration_s=duration_s, seed=seed)
    shares = (late_share, duplicate_share, malformed_share)
    say = on_outage or log.warning
    delay, lost_at = RECONNECT_FIRST_S, None

    def back() -> None:  # connected again, where the shop stands read
        nonlocal delay, lost_at
        if lost_at is not None:
            away = time.monotonic() - lost_at
            stats.reconnects += 1
            stats.outage_s += away
            say(f"Demo load: reconnected after {away:.1f} s; going on.")
            delay, lost_at = RECONNECT_FIRST_S, None

    with _ctrl_c_sets(stop):
        while True:
            try:
                _run_connected(source_dsn, seed, shares, beyond_lateness_share, stats, stop,
                               progress, back)
                return stats
            except psycopg.Error as exc:
                if stats.transactions == 0 or stop.is_set() or not is_transient(exc):
                    raise
                lost_at = lost_at or time.monotonic()
                say(
                    f"Demo load: the source database went away after {stats.transactions:,} "
                    f"transactions ({str(exc).strip().splitlines()[0]}); reconnecting in "
                    f"{delay:g} s. The load goes on where the database stands once it is back.")
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                if stop.is_set():
                    stats.outage_s += time.monotonic() - lost_at
                    stats.stopped = True
                    return stats


def _run_connected(source_dsn: str, seed: int, shares: tuple[float, float, float],
                   beyond_lateness_share: float, stats: LoadStats, stop: threading.Event,
                   progress: Callable[[LoadStats], None] | None,
                   connected: Callable[[], None]) -> None:
    """Connect, read where the shop stands (then call ``connected``) and drive the load until
    it ends.

    Raises:
        psycopg.Error: the connection was lost, or could not be made (the caller retries a
            transient one, :func:`ingestion.failures.is_transient`).
        DemoStateError: any other database error: the demo tables cannot take the load.
    """
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("set synchronous_commit = off")
        workload = Workload(read_shop_state(conn, seed), seed, *shares)
        workload.beyond_lateness_share = beyond_lateness_share
        connected()
        try:
            _drive(conn, workload, stats, stop, progress)
        except psycopg.Error as exc:
            if is_transient(exc):
                raise
            raise DemoStateError(
                f"The demo load failed on database {conn.info.dbname!r} after "
                f"{stats.transactions} transactions: {str(exc).strip()}. Did something else "
                f"change the demo tables? Re-seed a fresh database and run the load again."
            ) from exc


def _check_inputs(rate: float, duration_s: float, seed: int) -> None:
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise DemoInputError(
            f"--rate must be a positive number of row changes per second; got {rate!r}. "
            f"Example: --rate 500.")
    if not (isinstance(duration_s, int | float) and duration_s > 0):  # inf: until stopped
        raise DemoInputError(
            f"--duration must be a positive number of seconds; got {duration_s!r}.")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DemoInputError(f"--seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")


def _drive(conn: psycopg.Connection, workload: Workload, stats: LoadStats,
           stop: threading.Event, progress: Callable[[LoadStats], None] | None) -> None:
    """Send the due operations tick by tick, paced by the wall clock."""
    target = stats.rate * stats.duration_s
    budget = max(stats.rate * MAX_TICK_S, 1.0)
    cur = conn.cursor()
    # elapsed_s is the paced time so far: after a reconnection the pacing goes on from there
    started = last_report = time.monotonic() - stats.elapsed_s
    with quiet_pipeline(conn) as pipe:
        while True:
            now = time.monotonic() - started
            final = now >= stats.duration_s or stop.is_set()
            due = target if now >= stats.duration_s else min(stats.rate * now, target)
            if stop.is_set():
                due = 0.0
            sent, tick_end = 0, time.monotonic() + MAX_TICK_S
            while stats.changes < due and sent < budget and time.monotonic() < tick_end:
                op = workload.next_operation()
                cur.execute(q.BEGIN)
                for sql, params in op.statements:
                    cur.execute(sql, params)
                cur.execute(q.COMMIT)
                stats.add(op)
                sent += op.changes
            pipe.sync()
            clock = time.monotonic()
            stats.elapsed_s = clock - started
            if final or stats.changes >= target:
                stats.stopped = stop.is_set() and stats.changes < target
                break
            if progress is not None and clock - last_report >= PROGRESS_EVERY_S:
                progress(stats)
                last_report = clock
            behind = stats.rate * stats.elapsed_s - stats.changes > budget
            if not behind:
                stop.wait(max(0.0, TICK_S - (time.monotonic() - clock)))
    if progress is not None:
        progress(stats)


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """In the main thread, make the first Ctrl-C set ``stop`` (a second one interrupts)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def read_shop_state(conn: psycopg.Connection, seed: int) -> ShopState:
    """Read what the workload needs; create the demo tables and reference data if missing.

    Args:
        conn: autocommit connection to the source database (its search_path names the schema).
        seed: generator seed, used for reference data written here.

    Raises:
        DemoStateError: reference data is partly missing.
    """
    schema = conn.execute("select current_schema()").fetchone()[0]
    if schema is None:
        raise DemoStateError("The source connection has no current schema (empty search_path).")
    if missing_tables(conn, schema):
        apply_schema_on(conn, schema)
    filled = {t: conn.execute(sql.SQL("select exists (select from {})").format(
        sql.Identifier(t))).fetchone()[0] for t in ("stores", "customers", "products")}
    if not any(filled.values()):
        with conn.transaction():
            insert_dimensions(conn, DimensionSizes(), seed, datetime.now(UTC))
    elif not all(filled.values()):
        empty = ", ".join(t for t, has in filled.items() if not has)
        raise DemoStateError(
            f"The demo source has no {empty} but has other reference data; the load needs "
            f"stores, customers and products. Seed a fresh database with `tidemark demo seed`.")
    stores: dict[str, list[int]] = {}
    for store_id, city in conn.execute(
            "select store_id, city from stores where is_active order by store_id"):
        stores.setdefault(city, []).append(store_id)
    customers = conn.execute(
        "select customer_id, city from customers order by customer_id").fetchall()
    products = conn.execute(
        "select product_id, (unit_price * 100)::bigint from products where is_active"
        " order by product_id").fetchall()
    if not stores or not products:
        raise DemoStateError("The demo source has no active store or product to sell.")
    next_ids = dict(zip(("order", "payment", "delivery", "event"), conn.execute(
        "select (select coalesce(max(order_id), 0) + 1 from orders),"
        " (select coalesce(max(payment_id), 0) + 1 from payments),"
        " (select coalesce(max(delivery_id), 0) + 1 from deliveries),"
        " (select coalesce(max(outbox_id), 0) + 1 from app_events)").fetchone(), strict=True))
    return ShopState(stores_by_city=stores, customers=customers, products=products,
                     next_ids=next_ids, open_orders=_open_orders(conn))


def _open_orders(conn: psycopg.Connection) -> dict[str, list[Order]]:
    """The latest orders still placed or paid, by stage (placed, paid, dispatched)."""
    rows = conn.execute(
        "select o.order_id, o.customer_id, o.status, d.delivery_id, d.status, p.payment_id,"
        " p.method, p.card_fingerprint"
        " from (select order_id, customer_id, status from orders"
        "       where status in ('placed', 'paid') order by order_id desc limit %s) as o"
        " left join deliveries as d on d.order_id = o.order_id"
        " left join lateral (select payment_id, method, card_fingerprint from payments"
        "   where order_id = o.order_id and payment_kind = 'charge' and status <> 'failed'"
        "   order by payment_id desc limit 1) as p on true"
        " order by o.order_id", (ADOPT_OPEN_ORDERS,)).fetchall()
    lines: dict[int, list[Line]] = {}
    for order_id, line_number, product_id, quantity, cents in conn.execute(
            "select order_id, line_number, product_id, quantity, (unit_price * 100)::bigint"
            " from order_items where order_id = any(%s) order by order_id, line_number",
            ([r[0] for r in rows],)):
        lines.setdefault(order_id, []).append(Line(line_number, product_id, quantity, cents))
    stages: dict[str, list[Order]] = {"placed": [], "paid": [], "dispatched": []}
    for (order_id, customer_id, status, delivery_id, delivery_status, charge_id, method,
         fingerprint) in rows:
        if order_id not in lines:
            continue
        order = Order(order_id, customer_id, lines[order_id], charge_id, method or "card",
                      fingerprint, delivery_id)
        if status == "placed":
            stages["placed"].append(order)
        elif charge_id is not None and delivery_status in ("pending", "dispatched"):
            stages["paid" if delivery_status == "pending" else "dispatched"].append(order)
    return stages

