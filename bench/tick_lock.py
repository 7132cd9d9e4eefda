"""A tick's duration and a concurrent writer's wait, with a bound the engine may not invert.

The case of the README's temporal section: pgbench's ``pgbench_history.mtime`` (a ``timestamp``
holding local time of America/Los_Angeles), the view

    select h.bid, count(*) as n, sum(h.delta) as delta from bench.hist h
    where mz_now() < (h.mtime at time zone 'America/Los_Angeles') + interval '5 minutes'
    group by h.bid

over ``--rows`` rows written at ``--tps`` rows a second (the newest at the clock's time, no index
on ``mtime``), on one throw-away embedded PostgreSQL. Then ``--ticks`` ticks, each moving the
clock one second, while a writer thread inserts one row at a time (autocommit, like an
ingestion applier) into the same table: per tick its duration, and the writer's longest commit
while it ran. ``--bound`` picks another bound for comparison (``plain``: ``h.ts + interval '5
minutes'`` over a timestamptz copy of the time, the invertible form; ``trunc``:
``date_trunc('second', h.ts) + ...``; ``other``: ``date_trunc('second', h.mtime at time zone
...) + ...``, which no engine inverts: a scan per tick). The view is verified
equal to its query at the clock's time at the end. Last line: JSON.

    flock /work/brief/bench.lock nice -n -10 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \
        python bench/tick_lock.py --rows 50000 --ticks 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ivm_vs_refresh import server

from streaming_views.deploy import deploy_embedded
from streaming_views.expiry import tick
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

ZONE = "America/Los_Angeles"
BOUNDS = {
    "zone": f"mz_now() < (h.mtime at time zone '{ZONE}') + interval '5 minutes'",
    "trunc": "mz_now() < date_trunc('second', h.ts) + interval '5 minutes'",
    # not inverted (date_trunc of a zone's expression): a scan of the table per tick
    "other": f"mz_now() < date_trunc('second', h.mtime at time zone '{ZONE}') + interval "
             f"'5 minutes'",
    "plain": "mz_now() < h.ts + interval '5 minutes'",
}
VIEW = """select h.bid, count(*) as n, sum(h.delta) as delta from bench.hist h
where {bound}
group by h.bid"""


def _load(conn: psycopg.Connection, rows: int, tps: float, clock: datetime) -> None:
    conn.execute("drop schema if exists bench cascade; create schema bench")
    conn.execute("create table bench.hist (tid int, bid int, aid int, delta int, "
                 "mtime timestamp, ts timestamptz, filler char(22))")
    conn.execute("insert into bench.hist select i %% 10, i %% 100, i, i %% 1000, "
                 "(%(t)s - (%(n)s - i) * %(s)s * interval '1 second') at time zone %(z)s, "
                 "%(t)s - (%(n)s - i) * %(s)s * interval '1 second', '' "
                 "from generate_series(1, %(n)s) i",
                 {"t": clock, "n": rows, "s": 1 / tps, "z": ZONE})
    conn.execute("vacuum analyze bench.hist")


def _writer(dsn: str, stop: threading.Event, at: list[datetime],
            waits: list[tuple[float, float]]) -> None:
    """Insert one row at a time; record (start, seconds) of each commit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = 0
        while not stop.is_set():
            n += 1
            start = time.perf_counter()
            conn.execute("insert into bench.hist values (1, %s, %s, 1, %s at time zone %s, %s, "
                         "'')", (n % 100, -n, at[0], ZONE, at[0]), prepare=True)
            waits.append((start, time.perf_counter() - start))
            time.sleep(0.01)


def run(dsn: str, rows: int, tps: float, ticks: int, bound: str) -> dict[str, object]:
    """Load, deploy, tick under a writer; the measurements."""
    clock = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    view = VIEW.format(bound=BOUNDS[bound])
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        _load(conn, rows, tps, clock)
        print(f"loaded {rows:,} rows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        deploy_embedded(dsn, [parse_view_text("bench_clock", "select h.bid from bench.hist h "
                                              "where h.bid = -1")])
        tick(dsn, clock)
        t0 = time.perf_counter()
        deploy_embedded(dsn, [parse_view_text("bench_hist_5min", view)])
        deploy_s = time.perf_counter() - t0
        stop, at, waits = threading.Event(), [clock], []
        writer = threading.Thread(target=_writer, args=(dsn, stop, at, waits))
        writer.start()
        time.sleep(1.0)
        durations, worst = [], []
        try:
            for k in range(ticks):
                at[0] = clock + timedelta(seconds=k + 1)
                start = time.perf_counter()
                tick(dsn, at[0])
                end = time.perf_counter()
                durations.append(end - start)
                time.sleep(0.5)  # the writer's commit waiting at the tick's end lands
                during = [w for s, w in waits if start - 0.05 <= s <= end]
                worst.append(max(during, default=0.0))
                print(f"tick {k + 1}: {durations[-1] * 1000:.0f} ms, writer's longest commit "
                      f"{worst[-1] * 1000:.0f} ms", file=sys.stderr)
        finally:
            stop.set()
            writer.join()
        extra, missing = diff_rows(conn, "bench_hist_5min", view)
        if extra or missing:
            raise SystemExit(f"live view differs from its query: {extra[:3]} {missing[:3]}")
    quiet = [w for _, w in waits]
    return {"rows": rows, "bound": bound, "deploy_s": round(deploy_s, 2),
            "tick_ms_median": round(statistics.median(durations) * 1000, 1),
            "tick_ms": [round(d * 1000, 1) for d in durations],
            "writer_worst_ms_median": round(statistics.median(worst) * 1000, 1),
            "writer_worst_ms": [round(w * 1000, 1) for w in worst],
            "writer_commit_ms_median": round(statistics.median(quiet) * 1000, 2),
            "writes": len(quiet)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--tps", type=float, default=300.0)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--bound", choices=sorted(BOUNDS), default="zone")
    parser.add_argument("--dsn", help="use this database (its schema 'bench' is replaced)")
    args = parser.parse_args(argv)
    if args.dsn:
        result = run(args.dsn, args.rows, args.tps, args.ticks, args.bound)
    else:
        with server() as dsn:
            result = run(dsn, args.rows, args.tps, args.ticks, args.bound)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
