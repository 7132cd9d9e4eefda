"""Benchmark: leave ``tidemark up`` running and report what grows, and how fast.

Samples a running stack every ``--interval`` seconds: the memory (PSS) of every process of
``tidemark up`` and of its PostgreSQL, per role; every landing and source table's size, live and
dead tuples; the replication slots' retained WAL; ``pg_wal``; connections by application; temp
files; sequences; the log files, Dagster's storage (runs, per-run event logs, ticks) and dbt's
invocation directories under ``TIDEMARK_HOME``. Each sample appends ``ts,key,value`` rows to a
CSV; the summary is per key: first and last value, slope per hour over the whole run and over
its second half (a bounded quantity's second-half slope falls towards 0 once its prune,
retention or autovacuum keeps up).

    python bench/soak.py --minutes 60                 # a fresh stack (temp home, free ports)
    python bench/soak.py --minutes 60 --rate 2000     # ... at 10x the demo's default rate
    python bench/soak.py --attach --minutes 30        # the stack of $TIDEMARK_HOME, running
    python bench/soak.py --summarize soak.csv         # the summary of an earlier CSV

Prints, last, JSON: ``{"bench": "soak", "minutes": ..., "growth": {key: {...}}}`` — only the
keys that changed, sorted by key; ``--top N`` limits it to the N fastest-growing (by size).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import psutil
import psycopg
from first_run import ROOT, TIDEMARK, free_ports

MB = 2 ** 20
ROLES = (("tidemark up", "up"), ("dagster-webserver", "webserver"), ("dagster-daemon", "daemon"),
         ("api grpc", "code_server"), ("ingest run", "ingest"), ("views tick", "tick"),
         ("dbt ", "dbt"), ("spawn_main", "run_worker"), ("postgres", "postgres"))
"""Substring of a process's command line -> the role its memory is summed under."""

TABLES = """
    select current_database(), n.nspname, c.relname, pg_total_relation_size(c.oid),
           s.n_live_tup, s.n_dead_tup, s.autovacuum_count
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    left join pg_stat_all_tables s on s.relid = c.oid
    where c.relkind in ('r', 'm', 'p') and n.nspname not like 'pg\\_%'
      and n.nspname <> 'information_schema'"""


def dir_size(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path`` (0, 0 when it does not exist)."""
    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return size, files


def processes(up_pid: int | None, pgdata: Path) -> dict[str, float]:
    """PSS (MB) and count per role of ``tidemark up``'s process tree and the postmaster's."""
    roots = []
    for pid in (up_pid, _postmaster(pgdata)):
        if pid:
            with contextlib.suppress(psutil.Error):
                roots.append(psutil.Process(pid))
    out: dict[str, float] = defaultdict(float)
    for root in roots:
        for proc in [root, *root.children(recursive=True)]:
            try:
                line, pss = " ".join(proc.cmdline()), proc.memory_full_info().pss
            except psutil.Error:
                continue
            role = next((r for key, r in ROLES if key in line), "other")
            out[f"proc.{role}.pss_mb"] += pss / MB
            out[f"proc.{role}.n"] += 1
    return out


def _postmaster(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def database(landing: str, source: str) -> dict[str, float]:
    """Server-wide and per-table quantities of the landing server (and the source database)."""
    out: dict[str, float] = {}
    with psycopg.connect(landing, autocommit=True) as conn:
        for app, n in conn.execute(
                "select coalesce(nullif(application_name, ''), backend_type), count(*)"
                " from pg_stat_activity group by 1"):
            out[f"conn.{app}"] = n
        for name, restart, confirmed in conn.execute(
                "select slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn),"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
                " from pg_replication_slots"):
            out[f"slot.{name}.restart_lag_mb"] = float(restart or 0) / MB
            out[f"slot.{name}.confirmed_lag_mb"] = float(confirmed or 0) / MB
        files, size = conn.execute("select count(*), coalesce(sum(size), 0) from pg_ls_waldir()"
                                   ).fetchone()
        out.update({"pg_wal.files": files, "pg_wal.mb": float(size) / MB})
        for db, temp_files, temp_bytes, size in conn.execute(
                "select datname, temp_files, temp_bytes, pg_database_size(datname)"
                " from pg_stat_database where datname not in ('template0', 'template1')"):
            out.update({f"db.{db}.temp_files": temp_files, f"db.{db}.temp_mb": temp_bytes / MB,
                        f"db.{db}.size_mb": size / MB})
    for dsn in (landing, source):
        with psycopg.connect(dsn, autocommit=True) as conn:
            for db, schema, table, size, live, dead, autovacuums in conn.execute(TABLES):
                key = f"t.{db}.{schema}.{table}"
                out.update({f"{key}.mb": size / MB, f"{key}.live": live or 0,
                            f"{key}.dead": dead or 0, f"{key}.autovacuums": autovacuums or 0})
            for schema, seq, value in conn.execute(
                    "select schemaname, sequencename, last_value from pg_sequences"):
                out[f"seq.{schema}.{seq}"] = value or 0
    return out


def files(home: Path) -> dict[str, float]:
    """Logs, Dagster's storage and dbt's invocation directories under ``home``."""
    out: dict[str, float] = {}
    for log in sorted((home / "logs").glob("*")):
        out[f"log.{log.name}.mb"] = log.stat().st_size / MB
    for name, path in (("dagster", home / "dagster"), ("dbt_runs", home / "dbt/target/runs")):
        size, count = dir_size(path)
        out.update({f"{name}.mb": size / MB, f"{name}.files": count})
    history = home / "dagster/storage/history"
    if (history / "runs.db").exists():
        with sqlite3.connect(f"file:{history / 'runs.db'}?mode=ro", uri=True, timeout=5) as db:
            for status, n in db.execute("select status, count(*) from runs group by 1"):
                out[f"dagster.runs.{status}"] = n
    return out


def sample(home: Path, landing: str, source: str, up_pid: int | None) -> dict[str, float]:
    """One sample of everything (a database error leaves its part out, the rest is kept)."""
    out = processes(up_pid, home / "pgdata")
    try:
        out.update(database(landing, source))
    except psycopg.Error as exc:
        print(f"database not sampled: {exc}", file=sys.stderr)
    out.update(files(home))
    return out


def summarize(csv_path: Path, top: int | None = None) -> dict[str, dict[str, float]]:
    """Per key that changed: first, last, slope per hour (whole run and second half)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with csv_path.open() as fh:
        for row in csv.DictReader(fh):
            at = datetime.fromisoformat(row["ts"].replace("Z", "+00:00")).timestamp()
            series[row["key"]].append((at, float(row["value"])))
    out = {}
    for key, points in sorted(series.items()):
        (t0, first), (t1, last) = points[0], points[-1]
        (th, half) = points[len(points) // 2]
        if len(points) < 2 or first == last == half:
            continue
        out[key] = {"first": round(first, 2), "last": round(last, 2),
                    "per_hour": round((last - first) / max(t1 - t0, 1) * 3600, 2),
                    "second_half_per_hour": round((last - half) / max(t1 - th, 1) * 3600, 2)}
    if top:
        sized = sorted((k for k in out if k.endswith(".mb")),
                       key=lambda k: -out[k]["second_half_per_hour"])[:top]
        out = {k: out[k] for k in sorted(sized)}
    return out


def start_stack(home: Path, rate: float, minutes: float) -> tuple[subprocess.Popen, dict]:
    """``tidemark up --rate RATE`` in ``home`` on free ports, to its banner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "DAGSTER_"))}
    pg_port, ui_port = free_ports()
    env.update(TIDEMARK_HOME=str(home), TIDEMARK_PG_PORT=str(pg_port),
               TIDEMARK_DAGSTER_PORT=str(ui_port), COLUMNS="200")
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(TIDEMARK), "up", "--rate", str(rate), "--duration", str(minutes * 60 + 600)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    while "Tidemark is up." not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise SystemExit(f"tidemark up stopped (exit {proc.returncode}):\n"
                             f"{log.read_text(errors='replace')}")
        time.sleep(1)
    return proc, env


def stop_stack(proc: subprocess.Popen) -> None:
    """Ctrl-C for the whole stack, as a person would; SIGKILL after two minutes."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    """Sample a stack for the minutes asked, then print the growth summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=200.0, help="demo changes/s (new stack)")
    parser.add_argument("--attach", action="store_true", help="sample $TIDEMARK_HOME's stack")
    parser.add_argument("--csv", type=Path, help="where the samples go (default: a temp file)")
    parser.add_argument("--summarize", type=Path, help="only summarize this CSV")
    parser.add_argument("--top", type=int, help="only the N fastest-growing sizes (.mb keys)")
    args = parser.parse_args()
    if args.summarize:
        print(json.dumps({"bench": "soak", "growth": summarize(args.summarize, args.top)}))
        return
    from tidemark.settings import load_settings

    proc = None
    if not args.attach:
        home = Path(tempfile.mkdtemp(prefix="tidemark-soak-")) / "home"
        proc, env = start_stack(home, args.rate, args.minutes)
        os.environ.update({k: v for k, v in env.items() if k.startswith("TIDEMARK_")})
    settings = load_settings()
    home = settings.home
    up_pid = proc.pid if proc else _up_pid(home)
    out = args.csv or Path(tempfile.mkstemp(prefix="soak-", suffix=".csv")[1])
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerow(["ts", "key", "value"])
    ends = time.monotonic() + args.minutes * 60
    try:
        while True:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            values = sample(home, settings.landing_dsn(), settings.source_dsn(), up_pid)
            with out.open("a", newline="") as fh:
                csv.writer(fh).writerows([at, k, v] for k, v in sorted(values.items()))
            print(f"{at}: {len(values)} values -> {out}", file=sys.stderr)
            if time.monotonic() + args.interval > ends:
                break
            time.sleep(args.interval)
    finally:
        if proc is not None:
            stop_stack(proc)
    print(json.dumps({"bench": "soak", "minutes": args.minutes, "rate": args.rate,
                      "csv": str(out), "growth": summarize(out, args.top)}))


def _up_pid(home: Path) -> int | None:
    """The pid of the ``tidemark up`` running on ``home`` (None: none found)."""
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except psutil.Error:
            continue
        mine = Path(env.get("TIDEMARK_HOME", ".tidemark")).resolve() == home.resolve()
        if " tidemark up " in f"{line} " and mine:
            return proc.pid
    return None


if __name__ == "__main__":
    main()
