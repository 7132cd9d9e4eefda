"""Benchmark: cold load of the Dagster code location ``orchestration.definitions``.

Each repetition is a fresh Python process that imports the definitions (reading the prepared
dbt manifest) and resolves the asset graph, as the webserver and daemon do at start. Baseline,
measured in the same run: a fresh process importing only ``dagster`` and ``dagster_dbt`` (the
floor no code location can go under). Prints the median of each and their ratio; the last line
is JSON: ``{"bench": "definitions", "load_s": ...}``. Target: load_s under 3 s.

    python bench/definitions.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = ("import orchestration.definitions as d; "
        "d.defs().resolve_asset_graph()")
BASELINE = "import dagster, dagster_dbt"


def timed(code: str, env: dict[str, str]) -> float:
    """Wall seconds of a fresh ``python -c code``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    """Prepare the manifest once, then time both commands interleaved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidemark-bench-dbt-") as target:
        env = dict(os.environ, TIDEMARK_DBT_TARGET_PATH=target)
        subprocess.run([sys.executable, "-m", "orchestration.defs.dbt.project"], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        timed(LOAD, env)  # warm the OS file cache and .pyc files: "cold" means a new process
        loads, bases = [], []
        for _ in range(args.reps):
            loads.append(timed(LOAD, env))
            bases.append(timed(BASELINE, env))
    load_s, base_s = statistics.median(loads), statistics.median(bases)
    print(f"definitions load (new process, median of {args.reps}): {load_s:.2f} s")
    print(f"baseline import dagster + dagster_dbt:              {base_s:.2f} s")
    print(f"ratio load / baseline: {load_s / base_s:.2f}; target load under 3 s: "
          f"{'met' if load_s < 3 else 'NOT met'}")
    print(json.dumps({"bench": "definitions", "load_s": round(load_s, 3),
                      "baseline_s": round(base_s, 3), "ratio": round(load_s / base_s, 3),
                      "reps": args.reps, "target_s": 3.0}))


if __name__ == "__main__":
    main()
