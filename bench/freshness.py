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
this process). The embedded engine maintains the live views inside the landing transaction, so in
that phase mirror and view become visible together. The ingestion-only baseline is therefore a
second phase of the same run, on a fresh server with the same seed, load and markers but **no live
views deployed**: ``ingest_*`` figures come from it, and ``ratio_p99`` = live p99 / ingestion-only
p99 is what live-view maintenance costs. After the full phase the live views are verified against
their queries (``streaming_views.verify``). ``--profile`` adds pg_stat_statements (nested
statements included) and per-function trigger times of the landing database, and the CPU time of
the child processes, on stderr. ``--key-indexes`` creates, after the deploy, two extra
landing-mirror indexes (``KEY_INDEXES``) — the experiment that located the cost of the old
recompute-based distinct aggregates. Since the engine keeps distinct aggregates incrementally
and `tidemark views deploy` creates the key indexes its min/max recomputes need, the shipped
configuration needs neither; the flag stays for comparison.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_cluster

# Indexes on the landing mirror matching the group keys of active_carts and card_payments_recent
# (the experiment of the engine version that recomputed count(DISTINCT ...) per affected group).
KEY_INDEXES = (
    "create index if not exists app_events_cart_id_idx on shop.app_events"
    " ((payload ->> 'cart_id'))",
    "create index if not exists payments_card_fingerprint_idx on shop.payments"
    " (card_fingerprint)",
)
PROFILE_CONF = {"shared_preload_libraries": "'pg_stat_statements'",
                "pg_stat_statements.track": "all", "track_functions": "pl"}

MARKER_STORE = 999_999
MARKER_ID_BASE = 9_000_000_000_000
MARKERS_PER_S = 10.0
POLL_S = 0.002
WARMUP_S = 3.0
DRAIN_TIMEOUT_S = 120.0


@contextmanager
def bench_databases(profile: bool) -> Iterator[tuple[str, str, int]]:
    """A throw-away server (durability off, profiling extensions with ``profile``) with
    databases ``src`` and ``land``; yields their superuser URLs and the postmaster's pid."""
    with bench_cluster(PROFILE_CONF if profile else None) as (src, land, server):
        yield src, land, int((server.pgdata / "postmaster.pid").read_text().split()[0])


@dataclass
class Phase:
    """What one phase measured.

    Attributes:
        live_ms: marker latencies to the live view (empty without views).
        mirror_ms: marker latencies to the landing mirror.
        markers: markers committed.
        achieved_rate: the demo load's achieved changes/s.
        verified: live views equal their queries after the run (None without views).
    """

    live_ms: list[float]
    mirror_ms: list[float]
    markers: int
    achieved_rate: int
    verified: bool | None


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


def prepare(src: str, land: str, seed_orders: int, views: bool, key_indexes: bool) -> None:
    """Demo schema, one seeded day and the marker store on the source; landing caught up; live
    views deployed (unless ``views`` is false), with ``KEY_INDEXES`` if ``key_indexes``."""
    import ingestion
    import streaming_views
    from contracts import load_contracts
    from ingestion.sources import SourceSpec, save_source
    from tidemark.demo.schema import apply_schema
    from tidemark.demo.seed import seed_history

    apply_schema(src)
    seed_history(src, days=1, orders_per_day=seed_orders, seed=42)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("insert into stores (store_id, store_name, city, region, opened_at,"
                     " is_active) values (%s, 'Freshness marker', 'Benchmark', 'central',"
                     " now(), false)", (MARKER_STORE,))
    # registered as `tidemark demo schema` registers it against an external source: the
    # children's `tidemark ingest run` reads the URL from TIDEMARK_SOURCE_URL
    save_source(land, SourceSpec("shop", url_env="TIDEMARK_SOURCE_URL"))
    stats = ingestion.catch_up(src, land, "shop", contracts=load_contracts(), setup_dsn=src)
    results = streaming_views.deploy(land) if views else []
    if key_indexes:
        with psycopg.connect(land, autocommit=True) as conn:
            for statement in KEY_INDEXES:
                conn.execute(statement)  # type: ignore[arg-type]
    print(f"prepared: {stats.snapshot_rows:,} snapshot rows landed, "
          f"{len(results)} live views deployed", file=sys.stderr, flush=True)


def child_env(src: str, land: str, home: str) -> dict[str, str]:
    """Environment of the child processes: the bench databases as external servers."""
    env = dict(os.environ)
    env.update(TIDEMARK_SOURCE_URL=src, TIDEMARK_LANDING_URL=land, TIDEMARK_HOME=home)
    return env


def tidemark(*args: str) -> list[str]:
    """Command line of the ``tidemark`` CLI with this interpreter."""
    return [sys.executable, "-m", "tidemark.cli.main", *args]


def outbox_high(src: str) -> int:
    """The source's highest outbox id (0 when empty)."""
    with psycopg.connect(src, autocommit=True) as conn:
        return int(conn.execute("select coalesce(max(outbox_id), 0) from app_events"
                                ).fetchone()[0])


def await_load_started(src: str, before: int, load: subprocess.Popen, log: Path,
                       timeout_s: float = 300.0) -> None:
    """Wait until the demo load has committed an outbox event past ``before``.

    The load reads ``max(order_id) + 1`` once as it starts; a marker order committed before
    that read would become its next order id, and the load's insert of it would fail. On a
    loaded machine the load's process can take longer than ``WARMUP_S`` to start.

    Raises:
        RuntimeError: the load exited, or did not start within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while outbox_high(src) <= before:
        if load.poll() is not None:
            raise RuntimeError(f"the demo load exited with {load.returncode} before its first "
                               f"transaction: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the demo load made no transaction in {timeout_s:.0f} s "
                               f"(its log: {log})")
        time.sleep(0.1)


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


def poll(land: str, markers: Markers, stop: threading.Event, views: bool) -> None:
    """Record when each marker first shows in the mirror and in the live view."""
    view = ("(select coalesce(sum(order_count), 0) from live.daily_store_revenue"
            " where store_id = %(store)s)") if views else "0"
    query = f"select (select count(*) from shop.orders where order_id >= %(base)s), {view}"
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


def run_phase(rate: float, seconds: float, seed_orders: int, views: bool,
              profile: bool, key_indexes: bool = False) -> Phase:
    """One measurement at ``rate`` changes/s on a fresh server, with or without live views."""
    import streaming_views

    with bench_databases(profile) as (src, land, postmaster), \
            tempfile.TemporaryDirectory(prefix="fresh-") as home:
        prepare(src, land, seed_orders, views, key_indexes)
        if profile:
            with psycopg.connect(land, autocommit=True) as conn:
                conn.execute("create extension if not exists pg_stat_statements")
                conn.execute("select pg_stat_statements_reset(), pg_stat_reset()")
        env = child_env(src, land, home)
        outbox_before = outbox_high(src)
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
            seen = markers.in_view if views else markers.in_mirror
            poller = threading.Thread(target=poll, args=(land, markers, stop, views),
                                      daemon=True)
            started = time.perf_counter()
            cpu: dict[str, float] = {}
            try:
                poller.start()
                time.sleep(WARMUP_S)
                await_load_started(src, outbox_before, load, logs / "load.log")
                write_markers(src, markers, seconds, stop)
                load_out, _ = load.communicate(timeout=seconds + 120)
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while len(seen) < len(markers.committed) and time.monotonic() < deadline:
                    time.sleep(0.05)
                cpu = child_cpu(ingest.pid, postmaster)
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
            elapsed = time.perf_counter() - started
        if len(seen) < len(markers.committed):
            print((logs / "ingest.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        if load.returncode != 0:
            sys.exit(f"demo load failed ({load.returncode}):\n"
                     + (logs / "load.log").read_text(errors="replace")[-3000:])
        load_stats = json.loads(load_out)
        if profile:
            report_profile(land, elapsed, cpu, views)
        verified = all(r.ok for r in streaming_views.verify(land)) if views else None
    return Phase(
        live_ms=[(markers.in_view[i] - t) * 1000 for i, t in enumerate(markers.committed)
                 if i in markers.in_view],
        mirror_ms=[(markers.in_mirror[i] - t) * 1000 for i, t in enumerate(markers.committed)
                   if i in markers.in_mirror],
        markers=len(markers.committed),
        achieved_rate=round(load_stats["changes"] / max(load_stats["elapsed_s"], 1e-9)),
        verified=verified)


def child_cpu(pid: int, postmaster: int) -> dict[str, float]:
    """CPU seconds so far of the ingestion process and of the bench server's live backends
    (the landing backends are ingestion's; the source ones the walsender and the markers)."""
    out = {"ingest process": sum(psutil.Process(pid).cpu_times()[:2])}
    for proc in psutil.Process(postmaster).children():
        try:
            line, times = " ".join(proc.cmdline()), proc.cpu_times()
        except psutil.Error:
            continue
        kind = ("walsender (src)" if "walsender" in line else "landing backends"
                if " land " in line else "source backends" if " src " in line else None)
        if kind:
            out[kind] = out.get(kind, 0.0) + times.user + times.system
    return out


def report_profile(land: str, elapsed: float, cpu: dict[str, float], views: bool) -> None:
    """Print where the landing time went (pg_stat_statements, trigger functions) to stderr."""
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"--- profile ({'with' if views else 'without'} live views), {elapsed:.1f} s wall ---")
    for what, seconds in cpu.items():
        say(f"cpu {what:<22} {seconds:8.1f} s")
    with psycopg.connect(land, autocommit=True) as conn:
        rows = conn.execute(
            "select toplevel, calls, round(total_exec_time)::bigint,"
            " round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
            " from pg_stat_statements where dbid = (select oid from pg_database"
            " where datname = current_database()) order by total_exec_time desc limit 12"
            ).fetchall()
        say("top statements (total ms, calls, mean ms; nested = inside a trigger/function):")
        for toplevel, calls, total, mean, query in rows:
            say(f"  {total:>8} ms {calls:>8} x {mean:>9} {'top' if toplevel else 'nested'}"
                f"  {query}")
        funcs = conn.execute(
            "select funcname, calls, round(total_time)::bigint, round(self_time)::bigint"
            " from pg_stat_user_functions order by total_time desc limit 8").fetchall()
        if funcs:
            say("trigger/functions (total ms, self ms, calls):")
            for name, calls, total, self_ms in funcs:
                say(f"  {total:>8} ms {self_ms:>8} ms {calls:>8} x  {name}")


def run_rate(rate: float, seconds: float, seed_orders: int, profile: bool,
             key_indexes: bool) -> dict[str, object]:
    """The full stack, then the ingestion-only baseline, at ``rate``; returns the JSON record."""
    full = run_phase(rate, seconds, seed_orders, views=True, profile=profile,
                     key_indexes=key_indexes)
    base = run_phase(rate, seconds, seed_orders, views=False, profile=profile)
    live, ingest = full.live_ms, base.mirror_ms
    if not live or not ingest:
        sys.exit("markers never reached landing: see the ingestion log above")
    return {
        "bench": "freshness", "rate": rate, "achieved_rate": full.achieved_rate,
        "markers": full.markers, "markers_seen": len(live),
        "p50_ms": round(pct(live, 50), 1), "p95_ms": round(pct(live, 95), 1),
        "p99_ms": round(pct(live, 99), 1), "max_ms": round(max(live), 1),
        "mirror_p99_ms": round(pct(full.mirror_ms, 99), 1),
        "ingest_p50_ms": round(pct(ingest, 50), 1), "ingest_p95_ms": round(pct(ingest, 95), 1),
        "ingest_p99_ms": round(pct(ingest, 99), 1),
        "ingest_achieved_rate": base.achieved_rate,
        "ratio_p99": round(pct(live, 99) / max(pct(ingest, 99), 1e-9), 2),
        "views_verified": full.verified, "key_indexes": key_indexes,
    }


def main() -> None:
    """Parse the arguments and print one JSON line per rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=None,
                        help="changes/s of the demo load (default: 2000, then 5000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="marker phase per rate")
    parser.add_argument("--seed-orders", type=int, default=2000,
                        help="orders of the one seeded day (landing starts with that history)")
    parser.add_argument("--profile", action="store_true",
                        help="print statement, trigger and CPU profiles to stderr")
    parser.add_argument("--key-indexes", action="store_true",
                        help="experiment: add KEY_INDEXES on the landing mirror after the deploy")
    args = parser.parse_args()
    rates = [args.rate] if args.rate is not None else [2000.0, 5000.0]
    for rate in rates:
        record = run_rate(rate, args.seconds, args.seed_orders, args.profile, args.key_indexes)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
