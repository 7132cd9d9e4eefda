"""Benchmark: a new user's first ``tidemark up``, from the command to the ready banner.

For each scale, a fresh ``TIDEMARK_HOME`` and free ports, then ``tidemark up --rate 0
--duration 1`` as a person types it; the time to the banner ("Tidemark is up.") and each
phase's time (the ``[x s]`` of its summary line: PostgreSQL, seed, landing, dbt parse, build,
Dagster) are read from its output. Baseline, measured in the same run: a second ``tidemark up``
on the same home (nothing to seed or snapshot, no partition to build: the fixed cost of a start).
Scales: ``1`` = the defaults (7 days x 2,000 orders a day), ``10`` = ten times the orders
(7 days x 20,000), ``30x20000`` = the issue's large start (30 days x 20,000).

    python bench/first_run.py [--scales 1 10] [--keep]

Prints one line per start and, last, JSON: ``{"bench": "first_run", "runs": [...]}``.
Target: under 60 s to the banner at 1x on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIDEMARK = Path(sys.executable).parent / "tidemark"
SCALES = {"1": (7, 2000), "10": (7, 20000), "30x20000": (30, 20000)}
PHASE = re.compile(r"^(?P<line>\S.*?)\s*\[(?P<s>[0-9.]+)\s*s\]\s*$", re.M)
TARGET_S = 60.0


def free_ports() -> tuple[int, int]:
    """Two neighbouring TCP ports below the ephemeral range that nothing listens on (no
    outgoing connection can take them while the start runs)."""
    for port in range(21000, 32000, 7):
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", port))
                two.bind(("127.0.0.1", port + 1))
            return port, port + 1
        except OSError:
            continue
    raise RuntimeError("no free ports between 21000 and 32000")


def start(home: Path, days: int, orders: int, timeout_s: float) -> dict:
    """One ``tidemark up`` to its banner; its phases and time to banner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "DAGSTER_"))}
    pg_port, ui_port = free_ports()
    env.update(TIDEMARK_HOME=str(home), TIDEMARK_PG_PORT=str(pg_port),
               TIDEMARK_DAGSTER_PORT=str(ui_port), COLUMNS="200")
    log = home.parent / f"up-{time.monotonic_ns()}.log"
    argv = [str(TIDEMARK), "up", "--seed-days", str(days), "--orders-per-day", str(orders),
            "--rate", "0", "--duration", "1"]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    banner = None
    try:
        while proc.poll() is None and time.monotonic() - started < timeout_s:
            if banner is None and "Tidemark is up." in log.read_text(errors="replace"):
                banner = time.monotonic() - started
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    if banner is None:
        raise SystemExit(f"tidemark up reached no banner (exit {proc.returncode}):\n{text}")
    phases = {m["line"].split(" ")[0].rstrip(":"): float(m["s"]) for m in PHASE.finditer(text)}
    return {"banner_s": round(banner, 1), "phases": phases, "exit": proc.returncode}


def main() -> None:
    """Run the scales asked for, first start then warm restart each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["1", "10"], choices=sorted(SCALES))
    parser.add_argument("--timeout", type=float, default=3600.0, help="per start, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the homes (for a look)")
    args = parser.parse_args()
    runs = []
    for scale in args.scales:
        days, orders = SCALES[scale]
        base = Path(tempfile.mkdtemp(prefix=f"tidemark-first-run-{scale}-"))
        try:
            first = start(base / "home", days, orders, args.timeout)
            again = start(base / "home", days, orders, args.timeout)
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
        ratio = first["banner_s"] / again["banner_s"]
        print(f"{scale}x ({days} days x {orders:,} orders): banner after {first['banner_s']} s "
              f"(restart {again['banner_s']} s, ratio {ratio:.2f}); phases {first['phases']}")
        runs.append({"scale": scale, "days": days, "orders_per_day": orders,
                     "first_banner_s": first["banner_s"], "restart_banner_s": again["banner_s"],
                     "ratio_first_over_restart": round(ratio, 2), "phases": first["phases"],
                     "restart_phases": again["phases"]})
    one = next((r for r in runs if r["scale"] == "1"), None)
    if one is not None:
        met = "met" if one["first_banner_s"] < TARGET_S else "NOT met"
        print(f"target 1x under {TARGET_S:.0f} s: {met}")
    print(json.dumps({"bench": "first_run", "runs": runs, "target_s": TARGET_S}))


if __name__ == "__main__":
    main()
