"""Freshness of the whole stack under the demo load: source commit → visible in a live view.

Usage: python bench/freshness.py [--rate R] [--seconds S] [--seed-orders N]
(default: 2,000 then 5,000 changes/s, 30 s each)

Per rate, on a private embedded PostgreSQL in a temporary directory (source ``src`` and landing
``land`` databases, durability off as on the test server):

1. the demo source (``apply_schema`` + one seeded day), caught up into landing
   (``ingestion.catch_up``), the shipped live views deployed on the landing mirror
   (``streaming_views.deploy``, embedded engine);
2. ``tidemark ingest run`` and ``tidemark demo load --rate R`` as child processes, as
   ``tidemark up`` runs them (``TIDEMARK_SOURCE_URL`` / ``TIDEMARK_LANDING_URL`` point at the
   bench databases);
3. meanwhile, about 10 times a second, a **marker order** is committed on the source for a store
   the load never uses (inactive store ``MARKER_STORE``); a poller on landing reads, every few
   milliseconds, the marker count of the landing mirror (``shop.orders``: ingestion only) and of
   ``live.daily_store_revenue`` (the live view) in one query.

Latency of a marker = first poll that sees it − the moment its source COMMIT returned (one clock:
this process). ``ingest_*`` is the mirror, the headline figures are the live view; their ratio is
what live-view maintenance adds on top of ingestion. After the run the live views are verified
against their queries (``streaming_views.verify``).
Last line per rate: JSON {"bench": "freshness", "rate", "p50_ms", "p95_ms", "p99_ms",
"ingest_p99_ms", ...}; with both default rates the 5,000 line comes last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

MARKER_STORE = 999_999
MARKER_ID_BASE = 9_000_000_000_000
MARKERS_PER_S = 10.0
POLL_S = 0.002
WARMUP_S = 3.0
DRAIN_TIMEOUT_S = 120.0


@dataclass
class Markers:
    """Marker commit times and the times the poller first saw them (perf_counter seconds)."""

    committed: list[float] = field(default_factory=list)
    in_mirror: dict[int, float] = field(default_factory=dict)
    in_view: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def prepare(src: str, land: str, seed_orders: int) -> None:
    """Demo schema, one seeded day and the marker store on the source; landing caught up; live
    views deployed."""
    import ingestion
    import streaming_views
    from contracts import load_contracts
    from orchestration.demo.schema import apply_schema
    from orchestration.demo.seed import seed_history

    apply_schema(src)
    seed_history(src, days=1, orders_per_day=seed_orders, seed=42)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("insert into stores (store_id, store_name, city, region, opened_at,"
                     " is_active) values (%s, 'Freshness marker', 'Benchmark', 'central',"
                     " now(), false)", (MARKER_STORE,))
    stats = ingestion.catch_up(src, land, "shop", contracts=load_contracts(), setup_dsn=src)
    results = streaming_views.deploy(land)
    print(f"prepared: {stats.snapshot_rows:,} snapshot rows landed, "
          f"{len(results)} live views deployed", file=sys.stderr, flush=True)


def child_env(src: str, land: str, home: str) -> dict[str, str]:
    """Environment of the child processes: the bench databases as external servers."""
    env = dict(os.environ)
    env.update(TIDEMARK_SOURCE_URL=src, TIDEMARK_LANDING_URL=land, TIDEMARK_HOME=home)
    return env


def tidemark(*args: str) -> list[str]:
    """Command line of the ``tidemark`` CLI with this interpreter."""
    return [sys.executable, "-m", "orchestration.cli.main", *args]


def write_markers(src: str, markers: Markers, seconds: float, stop: threading.Event) -> None:
    """Commit one marker order every 1/MARKERS_PER_S seconds for ``seconds``."""
    with psycopg.connect(src, autocommit=True) as conn:
        customer = conn.execute("select min(customer_id) from customers").fetchone()[0]
        started = time.perf_counter()
        n = 0
        while not stop.is_set() and time.perf_counter() - started < seconds:
            due = started + n / MARKERS_PER_S
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            conn.execute("insert into orders (order_id, store_id, customer_id, status, placed_at,"
                         " updated_at, total_amount) values (%s, %s, %s, 'placed', now(), now(),"
                         " 1.00)", (MARKER_ID_BASE + n, MARKER_STORE, customer))
            committed = time.perf_counter()  # autocommit: the statement's commit has returned
            with markers.lock:
                markers.committed.append(committed)
            n += 1


def poll(land: str, markers: Markers, stop: threading.Event) -> None:
    """Record when each marker first shows in the mirror and in the live view."""
    query = ("select (select count(*) from shop.orders where order_id >= %(base)s),"
             " (select coalesce(sum(order_count), 0) from live.daily_store_revenue"
             "  where store_id = %(store)s)")
    params = {"base": MARKER_ID_BASE, "store": MARKER_STORE}
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute("set jit = off")
        while not stop.is_set():
            mirror, view = conn.execute(query, params).fetchone()
            seen = time.perf_counter()
            for count, first_seen in ((mirror, markers.in_mirror), (int(view), markers.in_view)):
                for i in range(len(first_seen), count):
                    first_seen[i] = seen
            time.sleep(POLL_S)


def run_rate(rate: float, seconds: float, seed_orders: int) -> dict[str, object]:
    """One full measurement at ``rate`` changes/s on a fresh server; returns the JSON record."""
    import streaming_views

    with bench_server() as (src, land), tempfile.TemporaryDirectory(prefix="fresh-") as home:
        prepare(src, land, seed_orders)
        env = child_env(src, land, home)
        logs = Path(home)
        with open(logs / "ingest.log", "wb") as ingest_log, \
                open(logs / "load.log", "wb") as load_log:
            ingest = subprocess.Popen(tidemark("ingest", "run"), env=env,
                                      stdin=subprocess.DEVNULL, stdout=ingest_log,
                                      stderr=subprocess.STDOUT)
            load = subprocess.Popen(
                tidemark("demo", "load", "--rate", f"{rate:g}", "--duration",
                         f"{WARMUP_S + seconds + 1:g}", "--json"),
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=load_log)
            markers, stop = Markers(), threading.Event()
            poller = threading.Thread(target=poll, args=(land, markers, stop), daemon=True)
            try:
                poller.start()
                time.sleep(WARMUP_S)
                write_markers(src, markers, seconds, stop)
                load_out, _ = load.communicate(timeout=seconds + 120)
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while (len(markers.in_view) < len(markers.committed)
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            finally:
                stop.set()
                poller.join(timeout=10)
                if load.poll() is None:
                    load.send_signal(signal.SIGINT)
                    load.wait(timeout=60)
                ingest.send_signal(signal.SIGTERM)
                try:
                    ingest.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    ingest.kill()
        if len(markers.in_view) < len(markers.committed):
            print((logs / "ingest.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        if load.returncode != 0:
            sys.exit(f"demo load failed ({load.returncode}):\n"
                     + (logs / "load.log").read_text(errors="replace")[-3000:])
        load_stats = json.loads(load_out)
        verified = all(r.ok for r in streaming_views.verify(land))
    live = [(markers.in_view[i] - t) * 1000 for i, t in enumerate(markers.committed)
            if i in markers.in_view]
    mirror = [(markers.in_mirror[i] - t) * 1000 for i, t in enumerate(markers.committed)
              if i in markers.in_mirror]
    if not live:
        sys.exit("no marker reached the live view: see the ingestion log")
    return {
        "bench": "freshness", "rate": rate,
        "achieved_rate": round(load_stats["changes"] / max(load_stats["elapsed_s"], 1e-9)),
        "markers": len(markers.committed), "markers_seen": len(live),
        "p50_ms": round(pct(live, 50), 1), "p95_ms": round(pct(live, 95), 1),
        "p99_ms": round(pct(live, 99), 1), "max_ms": round(max(live), 1),
        "ingest_p50_ms": round(pct(mirror, 50), 1), "ingest_p99_ms": round(pct(mirror, 99), 1),
        "ratio_p99": round(pct(live, 99) / max(pct(mirror, 99), 1e-9), 3),
        "views_verified": verified,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=None,
                        help="changes/s of the demo load (default: 2000, then 5000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="marker phase per rate")
    parser.add_argument("--seed-orders", type=int, default=2000,
                        help="orders of the one seeded day (landing starts with that history)")
    args = parser.parse_args()
    rates = [args.rate] if args.rate is not None else [2000.0, 5000.0]
    for rate in rates:
        print(json.dumps(run_rate(rate, args.seconds, args.seed_orders)), flush=True)


if __name__ == "__main__":
    main()
