"""``tidemark up``'s demo source: its schema and registration, its history, its workload.

On every start the demo schema is created if missing (with a user's own tables of it, from
their contracts) and registered as source "shop"; on a first start (an empty source) its
history is seeded; once the stack is up, the demo workload writes to it until the stack stops.
The demo and contracts libraries are imported when used (``tidemark up`` starts sooner).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg

from tidemark import progress
from tidemark.settings import Settings
from tidemark.stack.databases import Databases
from tidemark.stack.display import UpDisplay


def source_is_empty(source_dsn: str) -> bool:
    """Whether the demo source holds no orders yet."""
    with psycopg.connect(source_dsn) as conn:
        return conn.execute("select not exists (select 1 from orders)").fetchone()[0]


def create_demo_source(dbs: Databases, settings: Settings, say: Callable[[str], None]) -> None:
    """Create the demo schema (and a user's own tables of it, from their contracts) and
    register it as source "shop".

    Args:
        dbs: the stack's databases.
        settings: the stack's settings.
        say: where to tell the user what was created, or could not be.
    """
    from contracts import load_table_contracts
    from tidemark.demo.schema import apply_schema, create_contracted_tables
    from tidemark.demo.source import register_demo_source

    apply_schema(dbs.source)
    # A user's own tables of the demo source (contracts/shop/<table>.yml, README
    # "Extending"), created empty on a fresh source so the views and models reading them
    # build; a contract that does not load is reported by the ingestion step.
    created, failed = create_contracted_tables(
        dbs.source, [t for t in load_table_contracts()[0] if t.source == "shop"])
    if created:
        say(f"Created {', '.join(created)} in the demo source from contracts/shop "
            "(empty: the demo generates rows for its own tables only).")
    for name, why in failed.items():
        say(f"Could not create {name} from contracts/shop/{name}.yml: {why}")
    register_demo_source(dbs, settings)


def seed_demo_history(source_dsn: str, days: int, orders_per_day: int, seed: int,
                      display: UpDisplay) -> None:
    """Seed ``days`` days of demo history, with a progress bar and a closing line.

    Args:
        source_dsn: the demo source.
        days: days of history, ending now.
        orders_per_day: orders per seeded day.
        seed: seed of the demo generator.
        display: ``tidemark up``'s display.
    """
    from tidemark.demo.seed import seed_history

    orders = days * orders_per_day
    display.begin("seed", f"Seeding {days} days", total=orders, unit="orders")

    def seeded(days_done: int, _days: int) -> None:
        progress.report("seed", days_done * orders_per_day, orders, "orders",
                        f"day {days_done}")

    stats = seed_history(source_dsn, days=days, orders_per_day=orders_per_day, seed=seed,
                         progress=seeded)
    rows = sum(stats.rows.values())
    display.end("seed", f"Seeded {days} days of demo history: {orders:,} orders, {rows:,} "
                        f"rows ({rows / max(stats.elapsed_s, 1e-3):,.0f} rows/s).")


def start_demo_load(source_dsn: str, settings: Settings, rate: float, seed: int,
                    stop: threading.Event, display: UpDisplay) -> threading.Thread | None:
    """Start the demo workload in a thread, until ``stop`` is set.

    The workload rides out a session the server ends (a restart, a crash recovery); any other
    failure is said and sets ``stop``, which stops the stack.

    Args:
        source_dsn: the demo source.
        settings: the stack's settings (the share of events beyond the allowed lateness).
        rate: row changes per second; 0 or less: no workload.
        seed: seed of the demo generator.
        stop: set to stop the workload; set by it when it fails.
        display: ``tidemark up``'s display.

    Returns:
        The workload's thread, or None without a workload.
    """
    if rate <= 0:
        return None
    from tidemark.demo.catalog import DEFAULT_MALFORMED_SHARE
    from tidemark.demo.load import run_load

    late_share = settings.demo_beyond_lateness_share
    display.note("demo", {"source": "shop", "table": "app_events", "rate": rate,
                          "malformed_share": DEFAULT_MALFORMED_SHARE,
                          "beyond_lateness_share": late_share})

    def work() -> None:
        try:
            stats = run_load(source_dsn, rate=rate, duration_s=float("inf"), seed=seed,
                             stop=stop, on_outage=display.say, beyond_lateness_share=late_share)
            display.say(f"Demo workload stopped: {stats.changes:,} changes in "
                        f"{stats.elapsed_s:.0f} s "
                        f"({stats.changes / max(stats.elapsed_s, 1e-9):,.0f}/s).")
        except Exception as exc:  # reported, the stack stops (run_load rides out outages)
            display.say(f"Demo workload failed: {exc}")
            stop.set()

    thread = threading.Thread(target=work, name="demo-load", daemon=True)
    thread.start()
    display.say(f"Demo workload: {rate:g} changes/s on the source.")
    return thread
