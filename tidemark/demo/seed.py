"""``tidemark demo seed``: write N days of consistent order history into the demo source.

The history is generated set-based on the server (``INSERT ... SELECT`` over ``generate_series``
with deterministic pseudo-randomness, see :mod:`tidemark.demo.sqlrandom`), one chunk of
orders per day, all in ONE transaction: a failure leaves the database as it was. The same seed
and the same ``end`` give identical rows.

Seeding is not repeatable on top of itself: it refuses (``DemoStateError``) when any demo table in
the target schema already holds rows, so a history is never duplicated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tidemark.demo import history_sql
from tidemark.demo.catalog import (
    CITIES,
    DEFAULT_DUPLICATE_SHARE,
    DEFAULT_LATE_SHARE,
    DEFAULT_MALFORMED_SHARE,
    DELIVERY_NOTES,
    LATE_MAX_S,
    LATE_MIN_S,
    MALFORMATIONS,
    ON_TIME_MAX_S,
    PAYMENT_METHODS,
    PLATFORMS,
    validate_shares,
)
from tidemark.demo.dimensions import MIN_CUSTOMERS, DimensionSizes, insert_dimensions
from tidemark.demo.schema import DEMO_TABLES, apply_schema_on, missing_tables
from tidemark.demo.sqlrandom import MAX_SEED, install_random_functions
from tidemark.errors import DemoInputError, DemoStateError

DAILY_AMPLITUDE = 0.5  # orders peak around noon UTC at 3x the night-time rate
MOVES_PER_DAY = 24  # customers moving to another city per seeded day (updates of customers)


@dataclass(frozen=True)
class SeedStats:
    """What a seed wrote.

    Attributes:
        schema: the schema written to.
        days: days of history.
        orders_per_day: orders per day.
        seed: the generator seed.
        start: start of the history window (``end`` minus ``days``).
        end: end of the history window; rows show the state at this time.
        rows: rows inserted per table.
        elapsed_s: wall-clock seconds taken.
        foreign_key_checks: False when the per-row foreign key checks were skipped (see
            :func:`_skip_foreign_key_checks`).
    """

    schema: str
    days: int
    orders_per_day: int
    seed: int
    start: datetime
    end: datetime
    rows: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    foreign_key_checks: bool = True

    def as_dict(self) -> dict:
        """The stats as plain JSON-ready values."""
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


def seed_history(
    source_dsn: str,
    days: int,
    orders_per_day: int = 2000,
    seed: int = 42,
    end: datetime | None = None,
    schema: str = "public",
    *,
    late_share: float = DEFAULT_LATE_SHARE,
    duplicate_share: float = DEFAULT_DUPLICATE_SHARE,
    malformed_share: float = DEFAULT_MALFORMED_SHARE,
    progress: Callable[[int, int], None] | None = None,
) -> SeedStats:
    """Write ``days`` days of consistent shop history ending at ``end``.

    Args:
        source_dsn: URL of the source database, as a role that may create tables in ``schema``.
        days: days of history (at least 1).
        orders_per_day: orders per day (at least 1); customers scale with it.
        seed: generator seed (0 to 10**12); the same seed and ``end`` give identical rows.
        end: end of the history (default: now, UTC); a naive datetime is taken as UTC.
        schema: schema of the tables; they are created from the demo schema when missing.
        late_share: share of outbox events that arrive minutes to hours late.
        duplicate_share: share of outbox events emitted twice (same event_id and content).
        malformed_share: share of outbox events whose payload breaks its contract.
        progress: called as ``progress(days_done, days)`` after each day is written.

    Returns:
        What was written.

    Raises:
        DemoInputError: a parameter is out of range.
        DemoStateError: a demo table in ``schema`` already holds rows.
    """
    _check_inputs(days, orders_per_day, seed)
    validate_shares(late_share, duplicate_share, malformed_share)
    end = datetime.now(UTC) if end is None else end
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    start = end - timedelta(days=days)
    started = time.monotonic()
    sizes = DimensionSizes(customers=max(MIN_CUSTOMERS, 2 * orders_per_day))
    n_total = days * orders_per_day
    params = {
        "seed": seed, "start": start, "end": end, "days": days, "span_s": days * 86400.0,
        "phase": (start - start.replace(hour=0, minute=0, second=0, microsecond=0))
        .total_seconds() / 86400.0,
        "amp": DAILY_AMPLITUDE, "n_total": n_total, "n_customers": sizes.customers,
        "n_stores": sizes.stores, "n_products": sizes.products,
        "notes": list(DELIVERY_NOTES), "n_notes": len(DELIVERY_NOTES),
        "card_share": PAYMENT_METHODS[0][1], "wallet_share": PAYMENT_METHODS[1][1],
        "platforms": list(PLATFORMS), "faults": Jsonb(MALFORMATIONS),
        "late": late_share, "dup": duplicate_share, "mal": malformed_share,
        "late_min": LATE_MIN_S, "late_max": LATE_MAX_S, "on_time_max": ON_TIME_MAX_S,
    }
    rows = dict.fromkeys(DEMO_TABLES, 0)
    with psycopg.connect(source_dsn) as conn:
        conn.execute("set local synchronous_commit = off")
        conn.execute("set local work_mem = '256MB'")
        _prepare_schema(conn, schema)
        skipped_checks = _skip_foreign_key_checks(conn, schema)
        install_random_functions(conn)
        rows.update(insert_dimensions(conn, sizes, seed, start))
        for day in range(days):
            lo, hi = day * orders_per_day + 1, (day + 1) * orders_per_day
            for table, count in _write_chunk(conn, {**params, "lo": lo, "hi": hi}).items():
                rows[table] += count
            if progress is not None:
                progress(day + 1, days)
        conn.execute(history_sql.MOVE_CUSTOMERS, {
            **params, "cities": [c for c, _ in CITIES], "n_cities": len(CITIES),
            "move_share": min(1.0, MOVES_PER_DAY * days / sizes.customers)})
        _advance_outbox_identity(conn, schema)
        conn.commit()
        conn.autocommit = True
        for table in DEMO_TABLES:
            conn.execute(sql.SQL("analyze {}.{}").format(sql.Identifier(schema),
                                                         sql.Identifier(table)))
    return SeedStats(schema=schema, days=days, orders_per_day=orders_per_day, seed=seed,
                     start=start, end=end, rows=rows,
                     elapsed_s=round(time.monotonic() - started, 3),
                     foreign_key_checks=not skipped_checks)


def _check_inputs(days: int, orders_per_day: int, seed: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise DemoInputError(f"--days must be a whole number of days, at least 1; got {days!r}.")
    if not isinstance(orders_per_day, int) or orders_per_day < 1:
        raise DemoInputError(
            f"--orders-per-day must be a whole number, at least 1; got {orders_per_day!r}.")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DemoInputError(f"--seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")
    if days * orders_per_day * 20 > 2**62:
        raise DemoInputError("--days x --orders-per-day is too large for the id space.")


def _prepare_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create missing demo tables, point search_path at ``schema``, refuse non-empty tables."""
    if missing_tables(conn, schema):
        apply_schema_on(conn, schema)
    else:
        conn.execute("select set_config('search_path', %s, true)",
                     (sql.Identifier(schema).as_string(conn),))
    filled = [table for table in DEMO_TABLES if conn.execute(
        sql.SQL("select exists (select from {}.{})").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]]
    if filled:
        db = conn.info.dbname
        raise DemoStateError(
            f"The demo tables in schema {schema!r} of database {db!r} already hold rows "
            f"({', '.join(filled)}); seeding again would duplicate history. Seed into a fresh "
            f"database (or drop the demo tables there) and run the seed again.")


def _skip_foreign_key_checks(conn: psycopg.Connection, schema: str) -> bool:
    """Skip per-row foreign key checks for this transaction when that is safe; say if done.

    The seed writes parents before children and derives every reference from ids that exist,
    so the checks (most of the insert time) cannot fail. They are skipped with
    ``session_replication_role = replica``, which a superuser may set and which also silences
    user triggers — so only when the demo tables carry no user trigger (no live view, no audit
    trigger) that would miss the rows. Logical decoding still sees every row.
    """
    is_super = conn.execute("select rolsuper from pg_roles where rolname = current_user"
                            ).fetchone()[0]
    if not is_super:
        return False
    has_triggers = conn.execute(
        "select exists (select from pg_trigger as t join pg_class as c on c.oid = t.tgrelid"
        " join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = any(%s) and not t.tgisinternal)",
        (schema, list(DEMO_TABLES))).fetchone()[0]
    if has_triggers:
        return False
    conn.execute("set local session_replication_role = replica")
    return True


def _write_chunk(conn: psycopg.Connection, params: dict) -> dict[str, int]:
    """Write the orders ``lo..hi`` with their items, payments, deliveries and events."""
    counts = {}
    conn.execute(history_sql.ITEMS, params)
    conn.execute(history_sql.ORDERS, params)
    counts["orders"] = conn.execute(history_sql.INSERT_ORDERS, params).rowcount
    counts["order_items"] = conn.execute(history_sql.INSERT_ITEMS, params).rowcount
    counts["payments"] = conn.execute(history_sql.INSERT_PAYMENTS, params).rowcount
    counts["deliveries"] = conn.execute(history_sql.INSERT_DELIVERIES, params).rowcount
    counts["app_events"] = conn.execute(history_sql.INSERT_EVENTS, params).rowcount
    for temp in ("_o", "_i"):
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier(temp)))
    return counts


def _advance_outbox_identity(conn: psycopg.Connection, schema: str) -> None:
    """Move the outbox identity past the explicit ids the seed wrote (if it is an identity)."""
    table = sql.Identifier(schema, "app_events").as_string(conn)
    seq = conn.execute("select pg_get_serial_sequence(%s, 'outbox_id')", (table,)).fetchone()[0]
    if seq is None:
        return
    top = conn.execute(sql.SQL("select max(outbox_id) from {}").format(
        sql.Identifier(schema, "app_events"))).fetchone()[0]
    if top is not None:
        conn.execute("select setval(%s::regclass, %s)", (seq, top))
