"""Where ``ivm_contention.py``'s commits spend the machine: CPU, waits, WAL per commit.

``ivm_contention.py`` gives commits/s; ``ivm_contention_cost.py`` counts one backend's
instructions alone under callgrind. Neither shows what 4 writers on 2 cores pay besides
instructions: lock waits, context switches, system time, the clients' CPU, WAL, background
processes. This runs ``ivm_contention.py``'s workload (its tables, view and writer
transaction) on one throw-away server, in phases alternating no view (the view's triggers
disabled) and live (rebuilt first), ``--rounds`` of each, and measures per commit:

* CPU (µs) of the writers' backends, user and system (``/proc/<pid>/stat``), of the writer
  processes themselves (``getrusage``), of the rest of the server (every other child of the
  postmaster, and exited ones through its ``cutime``: autovacuum, walwriter, checkpointer...),
  and the machine's idle and steal time (``/proc/stat``) in CPU·µs per commit;
* context switches of the backends and of the writers, voluntary (sleeps: lock waits, socket
  reads) and involuntary (preemption);
* WAL records, bytes and full-page images (``pg_stat_wal``);
* with ``--sample HZ``: what the writers' backends were doing, sampled from
  ``pg_stat_activity`` (state and wait event; ``CPU`` = active with no wait event, which
  includes waiting for a core);
* with ``--perf-stat``: per transaction, the writers' and their backends' task clock (µs),
  system calls (all, failed, poll, recvfrom, sendto, futex), wakeups and context switches,
  counted by ``perf stat``'s software events and tracepoints (no hardware counter needed),
  and their run-queue wait (µs, ``/proc/<pid>/schedstat``). A transaction is 4 sends of the
  writer (BEGIN, two statements, COMMIT: one ``sendto`` each), which is what the counts are
  divided by: the ``perf stat`` window is inside the phase;
* with ``--pin``: the writers on CPU 0 and the server on CPU 1, so that neither runs on the
  other's core (what the client's CPU costs without the backends' work on its core);
* with ``--burn loop,scan``: after each round's live phase, no-view phases whose backends also
  run a statement trigger per fact INSERT that burns CPU, in a tiny working set (``loop``: a
  PL/pgSQL loop) or through the executor and buffers (``scan``: 5,000 rows); what the
  writers' CPU per commit does when their backends work longer, without a live view.

Each phase first runs a CHECKPOINT. The sampler is a fifth connection and costs CPU in both
cases alike. Usage: python bench/ivm_contention_wall.py [--seconds 8] [--rounds 3]
[--hot 1000] [--writers 4] [--touch hits|region] [--sample 0|HZ] [--perf PATH] [--perf-stat]
[--pin] [--burn loop,scan]. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from ivm_contention import DIMENSION_UPDATES, VIEW, _triggers, load, transaction
from ivm_vs_refresh import server
from psycopg import sql

from streaming_views.deploy import deploy_embedded, rebuild
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text

TICK = os.sysconf("SC_CLK_TCK")
IDLE, STEAL = 3, 7  # columns of /proc/stat's cpu line (after the name)
WRITER = "ivm_contention_wall writer"  # the writers' application_name: what the sampler reads
PERF_EVENTS = {  # perf stat event: the name it is reported under (per transaction)
    "task-clock": "task_clock_us", "context-switches": "switches",
    "cpu-migrations": "migrations", "sched:sched_wakeup": "wakeups",
    "raw_syscalls:sys_enter": "syscalls", "syscalls:sys_enter_poll": "poll",
    "syscalls:sys_enter_recvfrom": "recvfrom", "syscalls:sys_enter_sendto": "sendto",
    "syscalls:sys_enter_futex": "futex", "raw_syscalls:sys_exit": "failed_syscalls"}
SENDS_PER_TRANSACTION = 4  # BEGIN, two prepared statements, COMMIT: one sendto each
BURNS = {  # --burn: a no-view phase whose backends also run this per fact INSERT statement
    # CPU in a tiny working set: a PL/pgSQL loop over one variable
    "loop": "declare x bigint := 0; begin for i in 1..5000 loop x := x + i; end loop; "
            "return null; end",
    # CPU through the executor and the buffer manager: a scan of 5,000 dimension rows
    "scan": "begin perform sum(hits) from bench.dim_half; return null; end",
}
ACTIVITY = ("select state, coalesce(wait_event_type, ''), coalesce(wait_event, 'CPU') "
            f"from pg_stat_activity where application_name = '{WRITER}'")


def proc_cpu(pid: int) -> dict[str, float]:
    """User and system CPU seconds of ``pid`` (and of its waited-for children), and its
    voluntary and involuntary context switches."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17
    out = {name: int(fields[n - 3]) / TICK
           for name, n in (("user", 14), ("sys", 15), ("cuser", 16), ("csys", 17))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            out["vcs"] = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches"):
            out["ics"] = int(line.split()[1])
    return out


def server_cpu(postmaster: int, skip: set[int]) -> float:
    """CPU seconds of the postmaster, its exited children and its live children but ``skip``."""
    pm = proc_cpu(postmaster)
    total = pm["user"] + pm["sys"] + pm["cuser"] + pm["csys"]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip or _parent(entry) != postmaster:
            continue
        try:
            child = proc_cpu(int(entry.name))
        except (OSError, ValueError):
            continue  # exited meanwhile: counted in the postmaster's cutime
        total += child["user"] + child["sys"]
    return total


def perf_stat(pids: list[int], path: str) -> subprocess.Popen[bytes]:
    """Start ``perf stat`` of :data:`PERF_EVENTS` over ``pids`` into ``path``, until it gets
    SIGINT (failed system calls: ``raw_syscalls:sys_exit`` filtered on a negative return)."""
    events = [arg for event in PERF_EVENTS if event != "raw_syscalls:sys_exit"
              for arg in ("-e", event)]
    return subprocess.Popen(["perf", "stat", "-x", ",", "-o", path, *events,
                             "-e", "raw_syscalls:sys_exit", "--filter", "ret < 0",
                             "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_counts(path: str) -> dict[str, float]:
    """The counts of a ``perf stat -x ,`` output file, by :data:`PERF_EVENTS`' names."""
    counts: dict[str, float] = {}
    for line in Path(path).read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0].replace(".", "").isdigit():
            counts[PERF_EVENTS[fields[2]]] = float(fields[0])
    if "task_clock_us" in counts:
        counts["task_clock_us"] *= 1000.0  # perf reports msec
    return counts


def schedstat(pids: list[int]) -> tuple[float, float]:
    """Summed run time and run-queue wait of ``pids`` in µs (``/proc/<pid>/schedstat``)."""
    run = wait = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
        run, wait = run + int(fields[0]) / 1000, wait + int(fields[1]) / 1000
    return run, wait


def pin_server(postmaster: int) -> None:
    """Move the server (the postmaster, its children, and so later backends) to CPU 1."""
    children = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()
                and _parent(e) == postmaster]
    for pid in [postmaster, *children]:
        subprocess.run(["taskset", "-a", "-p", "-c", "1", str(pid)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _parent(entry: Path) -> int:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return 0  # exited meanwhile


def per_transaction(groups: dict[str, list[int]], until: float) -> dict[str, Any]:
    """``--perf-stat``: count each group of pids (``client``: the writers, ``backend``: their
    backends) until the time ``until``; return the counts per transaction (the writers' sends
    over :data:`SENDS_PER_TRANSACTION`)."""
    paths = {who: f"/tmp/ivm_contention_wall.{os.getpid()}.{who}" for who in groups}
    stats = [perf_stat(pids, paths[who]) for who, pids in groups.items()]
    before = {who: schedstat(pids) for who, pids in groups.items()}
    time.sleep(max(0.0, until - time.time()))
    after = {who: schedstat(pids) for who, pids in groups.items()}
    for recorder in stats:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    counts = {who: perf_counts(path) for who, path in paths.items()}
    for path in paths.values():
        Path(path).unlink(missing_ok=True)
    n = max(1.0, counts["client"].get("sendto", 0.0) / SENDS_PER_TRANSACTION)
    out: dict[str, Any] = {"transactions": round(n)}
    for who, values in counts.items():
        out[who] = {name: round(value / n, 2) for name, value in values.items()}
        out[who]["schedstat_run_us"] = round((after[who][0] - before[who][0]) / n, 1)
        out[who]["run_queue_wait_us"] = round((after[who][1] - before[who][1]) / n, 1)
    return out


def add_burns(conn: psycopg.Connection) -> None:
    """Create :data:`BURNS`' statement triggers on ``bench.fact``, disabled."""
    conn.execute("create table bench.dim_half as select * from bench.dim where k < 5000")
    conn.execute("vacuum analyze bench.dim_half")
    for name, body in BURNS.items():
        function = sql.Identifier("bench", f"burn_{name}")
        conn.execute(sql.SQL("create function {}() returns trigger language plpgsql as {}")
                     .format(function, sql.Literal(body)))
        conn.execute(sql.SQL("create trigger {} after insert on bench.fact for each statement "
                             "execute function {}()")
                     .format(sql.Identifier(f"burn_{name}"), function))
        conn.execute(sql.SQL("alter table bench.fact disable trigger {}")
                     .format(sql.Identifier(f"burn_{name}")))


def set_case(dsn: str, conn: psycopg.Connection, case: str, burns: list[str]) -> None:
    """Make the triggers those of ``case``: ``no_view``, ``live`` (the view rebuilt for the
    writes made with its triggers off) or ``burn_<name>`` (no view, that burn trigger on);
    ``burns``: the burn triggers :func:`add_burns` created."""
    _triggers(conn, case == "live")
    for name in burns:
        verb = sql.SQL("enable" if case == f"burn_{name}" else "disable")
        conn.execute(sql.SQL("alter table bench.fact {} trigger {}")
                     .format(verb, sql.Identifier(f"burn_{name}")))
    if case == "live":
        rebuild(dsn, "bench_hot_regions")


def machine_cpu() -> list[float]:
    """The machine's CPU seconds per ``/proc/stat`` column (user, nice, system, idle, ...)."""
    with open("/proc/stat") as f:
        return [int(x) / TICK for x in f.readline().split()[1:]]


def writer(dsn: str, seed: int, hot: int, seconds: float, touch: str, start: Any,
           ready: mp.Queue, go: Any, out: mp.Queue) -> None:
    """``ivm_contention.writer``'s transactions from ``start`` for ``seconds``; puts its counts,
    its backend's and its own CPU and context switches on ``out``."""
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    with psycopg.connect(dsn, application_name=WRITER) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.commit()
        ready.put(backend)
        go.wait()
        while time.time() < start.value:
            time.sleep(0.0005)
        b0, r0 = proc_cpu(backend), resource.getrusage(resource.RUSAGE_SELF)
        while time.time() < start.value + seconds:
            transaction(conn, rng, hot, touch, counts)
        b1, r1 = proc_cpu(backend), resource.getrusage(resource.RUSAGE_SELF)
    for key in ("user", "sys", "vcs", "ics"):
        counts[f"backend_{key}"] = b1[key] - b0[key]
    counts["client_user"] = r1.ru_utime - r0.ru_utime
    counts["client_sys"] = r1.ru_stime - r0.ru_stime
    counts["client_vcs"] = r1.ru_nvcsw - r0.ru_nvcsw
    counts["client_ics"] = r1.ru_nivcsw - r0.ru_nivcsw
    out.put(dict(counts))


def sampler(dsn: str, hz: float, seconds: float, start: Any, ready: mp.Queue, go: Any,
            out: mp.Queue) -> None:
    """Sample the writers' backends' state and wait event ``hz`` times a second."""
    seen: Counter[str] = Counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        ready.put(conn.info.backend_pid)
        go.wait()
        tick = start.value + 0.2
        while tick < start.value + seconds - 0.2:
            time.sleep(max(0.0, tick - time.time()))
            for state, kind, event in conn.execute(ACTIVITY, prepare=True):
                seen[f"{state}: {kind}{':' if kind else ''}{event}"] += 1
            tick += 1 / hz
    out.put(dict(seen))


def phase(dsn: str, conn: psycopg.Connection, postmaster: int,
          args: argparse.Namespace, perf: str = "") -> dict[str, Any]:
    """One timed phase: writers (and the sampler) started, then measured together; ``perf``:
    record the writers and their backends with ``perf record -g`` into that file."""
    ctx = mp.get_context("spawn")
    out, ready, samples = ctx.Queue(), ctx.Queue(), ctx.Queue()
    start, go = ctx.Value("d", 0.0), ctx.Event()
    seed = int(time.time())
    procs = [ctx.Process(target=writer, args=(dsn, seed + w, args.hot, args.seconds, args.touch,
                                              start, ready, go, out))
             for w in range(args.writers)]
    if args.sample:
        procs.append(ctx.Process(target=sampler, args=(dsn, args.sample, args.seconds, start,
                                                       ready, go, samples)))
    for p in procs:
        p.start()
    backends = {ready.get(timeout=300) for _ in procs}
    if args.pin:
        for p in procs:
            os.sched_setaffinity(p.pid or 0, {0})
    start.value = time.time() + 0.3
    go.set()
    time.sleep(max(0.0, start.value - time.time()))
    recorder = None
    if perf:
        pids = ",".join(str(p) for p in sorted(backends | {p.pid for p in procs if p.pid}))
        recorder = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-o", perf, "-p", pids,
                                     "--", "sleep", str(max(1.0, args.seconds - 1))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wal0 = conn.execute("select wal_records, wal_fpi, wal_bytes from pg_stat_wal").fetchone()
    rest0, machine0 = server_cpu(postmaster, backends), machine_cpu()
    counted = per_transaction(
        {"client": [p.pid for p in procs[:args.writers] if p.pid],
         "backend": [pid for (pid,) in conn.execute(
             "select pid from pg_stat_activity where application_name = %s", (WRITER,))]},
        start.value + args.seconds - 0.3) if args.perf_stat else {}
    time.sleep(max(0.0, start.value + args.seconds - time.time()))
    rest1, machine1 = server_cpu(postmaster, backends), machine_cpu()
    conn.execute("select pg_stat_force_next_flush()")
    totals: Counter[str] = Counter()
    for _ in range(args.writers):
        totals.update(out.get(timeout=args.seconds + 120))
    events = samples.get(timeout=60) if args.sample else {}
    if recorder:
        recorder.wait()
    for p in procs:
        p.join()
    time.sleep(0.6)  # the writers' WAL statistics reach pg_stat_wal as their backends exit
    conn.execute("select pg_stat_clear_snapshot()")
    wal1 = conn.execute("select wal_records, wal_fpi, wal_bytes from pg_stat_wal").fetchone()
    n = max(1, totals["commits"])
    per = {key: round(1e6 * totals[key] / n, 1) for key in
           ("backend_user", "backend_sys", "client_user", "client_sys")}
    per["server_rest"] = round(1e6 * (rest1 - rest0) / n, 1)
    per["idle"] = round(1e6 * (machine1[IDLE] - machine0[IDLE]) / n, 1)
    per["steal"] = round(1e6 * (machine1[STEAL] - machine0[STEAL]) / n, 1)
    switches = {key: round(totals[key] / n, 2) for key in
                ("backend_vcs", "backend_ics", "client_vcs", "client_ics")}
    wal = {name: round(float(b - a) / n, 2) for name, a, b in
           zip(("records", "fpi", "bytes"), wal0, wal1, strict=True)}  # type: ignore[arg-type]
    return {"commits": totals["commits"], "deadlocks": totals["deadlocks"],
            "errors": totals["errors"], "commits_per_s": round(totals["commits"] / args.seconds),
            "cpu_us_per_commit": per, "switches_per_commit": switches, "wal_per_commit": wal,
            "samples": events, "per_transaction": counted, "load": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hot", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--touch", choices=sorted(DIMENSION_UPDATES), default="hits")
    parser.add_argument("--sample", type=float, default=0.0,
                        help="sample pg_stat_activity this many times a second (0: not)")
    parser.add_argument("--perf", default="", help="in the last round, `perf record -g` the "
                        "writers and their backends into PERF.no_view and PERF.live")
    parser.add_argument("--perf-stat", action="store_true", help="count the writers' and "
                        "their backends' system calls, wakeups and switches per transaction")
    parser.add_argument("--pin", action="store_true",
                        help="the writers on CPU 0, the server on CPU 1")
    parser.add_argument("--burn", default="", type=lambda text: text.split(",") if text else [],
                        help="also run no-view phases whose backends burn CPU per fact INSERT "
                        f"({', '.join(BURNS)}, comma-separated)")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.burn) - set(BURNS)):
        parser.error(f"--burn {','.join(unknown)}: no such burn; choose from {', '.join(BURNS)}")
    if args.perf_stat and not shutil.which("perf"):
        parser.error("--perf-stat runs `perf stat`, which is not on PATH: install linux-perf "
                     "(Debian: apt-get install linux-perf) or leave --perf-stat out")
    if args.pin and (len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset")):
        parser.error("--pin needs 2 CPUs and `taskset` (util-linux): leave --pin out")
    phases = []
    with server() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        load(conn)
        deploy_embedded(dsn, [parse_view_text("bench_hot_regions", VIEW)])
        pgdata = conn.execute("show data_directory").fetchone()[0]  # type: ignore[index]
        postmaster = int(Path(pgdata, "postmaster.pid").read_text().split()[0])
        if args.pin:
            pin_server(postmaster)
        if args.burn:
            add_burns(conn)
        for r in range(args.rounds):
            for case in ("no_view", "live", *(f"burn_{name}" for name in args.burn)):
                set_case(dsn, conn, case, args.burn)
                conn.execute("checkpoint")
                perf = f"{args.perf}.{case}" if args.perf and r == args.rounds - 1 else ""
                result = {"case": case, "round": r,
                          **phase(dsn, conn, postmaster, args, perf)}
                phases.append(result)
                print(f"{case:9s} {result['commits_per_s']:6d}/s deadlocks "
                      f"{result['deadlocks']} cpu µs/commit {result['cpu_us_per_commit']} "
                      f"switches {result['switches_per_commit']} wal "
                      f"{result['wal_per_commit']} load {result['load']}", file=sys.stderr)
                for who in ("client", "backend"):
                    if who in result["per_transaction"]:
                        print(f"        {who} per transaction: {result['per_transaction'][who]}",
                              file=sys.stderr)
                top = sorted(result["samples"].items(), key=lambda kv: -kv[1])[:8]
                if top:
                    print("        samples: " + ", ".join(f"{k} {v}" for k, v in top),
                          file=sys.stderr)
        if args.burn:
            # the burn phases wrote with the view's triggers off
            set_case(dsn, conn, "live", args.burn)
        extra, missing = diff_rows(conn, "bench_hot_regions", VIEW)
    verified = not extra and not missing
    print(json.dumps({"bench": "ivm_contention_wall", "hot": args.hot, "writers": args.writers,
                      "seconds": args.seconds, "phases": phases, "verified": verified}))
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
