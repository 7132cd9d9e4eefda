"""Every benchmark in bench/ still runs, at a tiny size, against today's code.

A benchmark nobody runs rots: bench/freshness.py stopped working when sources became
registered (round 31) and nobody noticed for four rounds. These runs measure nothing (a tiny
size on a shared machine); they prove each script starts its server, drives today's code,
checks what it checks itself (landing equal to the source, the view equal to its query) and
ends with its JSON line. Speed is in bench/RESULTS.md, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (script, its smallest honest arguments, a key its JSON line must hold)
RUNS = [
    ("applier_differential.py", ["--cases", "1", "--steps", "6", "--seed-start", "1"],
     "oracle_checks"),
    ("batch.py", ["--days", "2", "--orders-per-day", "200", "--repeat", "1"], "one_day_s"),
    ("bench_contracts.py", ["--rows", "2000", "--repeat", "1"], "min_rows_per_s"),
    ("cdc_latency.py", ["--rate", "200", "--seconds", "3"], "p99_ms"),
    ("cdc_throughput.py", ["--workload", "insert", "--rows", "5000"], "applied_rows_per_s"),
    ("cdc_throughput.py", ["--workload", "update", "--rows", "5000", "--table-rows", "5000"],
     "applied_rows_per_s"),
    ("dead_letter_writes.py", ["--letters", "500", "--repeat", "1"], "write_s"),
    ("dead_letter_counts.py", ["--letters", "2000", "--waiting", "100", "--repeat", "1",
                               "--inserts", "100"], "status_s"),
    ("dead_letter_queries.py", ["--letters", "2000", "--repeat", "1"], "replay_since_10m"),
    ("definitions.py", ["--reps", "1"], "load_s"),
    ("dagster_run_retention.py", ["--runs", "12", "--partitions", "3"], "read_back_unchanged"),
    ("dagster_storage.py", ["--assets", "3", "--reads", "1", "--polls", "2", "--repeat", "1"],
     "shared_engine"),
    ("history.py", ["--changelog", "20000", "--keys", "2000", "--letters", "500"], "seed_s"),
    ("keyless_letter_retention.py", ["--txns", "5", "--rows", "200", "--table-rows", "100"],
     "letter_waits"),
    ("ingest_redeploy.py", ["--rows", "5000"], "ingest_s"),
    ("ivm_apply_cpu.py", ["--rows", "5000", "--rounds", "1", "--singles", "50", "--bulks", "1"],
     "single_live_us"),
    ("ivm_contention.py", ["--seconds", "2", "--hot", "5"], "hot_5"),
    ("ivm_contention_wall.py", ["--seconds", "1", "--rounds", "1", "--hot", "5", "--sample",
                                "20", "--burn", "loop,scan"], "cpu_us_per_commit"),
    ("ivm_pgbench.py", ["--rows", "2000", "--seconds", "1", "--rounds", "1"], "latency_us"),
    ("ivm_vs_refresh.py", ["--rows", "5000", "--updates", "50"], "update_live_ms"),
    ("ivm_vs_refresh.py", ["--rows", "5000", "--updates", "50", "--view", "sliding_5min"],
     "window_rows"),
    ("layers_recompute.py", ["--rows", "5000", "--deletes", "10"], "with_index_ms"),
    ("pg_versions.py", ["--rows", "2000", "--updates", "20", "--rounds", "1"], "medians"),
    ("snapshot.py", ["--rows", "20000", "--by-title"], "by_title"),
    ("subscribe_diffs.py", ["--rows", "20000", "--single", "5", "--bulk", "1"], "single"),
    ("tick_lock.py", ["--rows", "5000", "--ticks", "3"], "tick_ms_median"),
    ("verify_ddl_wait.py", ["--rows", "5000", "--hold", "1"], "held"),
    ("freshness.py", ["--rate", "200", "--seconds", "3", "--seed-orders", "200"], "p99_ms"),
    ("full_history_tests.py", ["--days", "2", "--orders-per-day", "200", "--repeat", "1"],
     "saved_sql_s"),
    ("singular_tests.py", ["--days", "2", "--orders-per-day", "50", "--timeout", "60"], "tests"),
]
CALLGRIND = [
    ("ivm_contention_cost.py", ["--mix", "tx", "--warmup", "5", "--transactions", "10"],
     "instructions"),
    ("ivm_instructions.py", ["--rows", "2000", "--warmup", "5", "--updates", "10"],
     "instructions"),
]

# Not run here, and why (a new script must be run above or named here).
LEFT_OUT = {
    "cdc_common.py": "the benches' shared set-up, not a benchmark",
    "cpu_titles.py": "snapshot.py --by-title's sampler, run through it above",
    "ivm_sliding.py": "the sliding_5min variant of ivm_vs_refresh.py, run through it above",
    "first_run.py": "`tidemark up` at its scales: tests/e2e and tests/tidemark/test_up.py run it",
    "bi_sessions.py": "measures a running `tidemark up` (it says so without one)",
    "ivm_differential.py": "tests/streaming_views/test_differential.py runs its CI slice",
    "soak.py": "leaves `tidemark up` running for minutes and samples it: tests/e2e and "
               "tests/tidemark/test_up.py run the stack",
}


def test_every_bench_is_run_or_left_out_with_a_reason() -> None:
    run = {script for script, _, _ in RUNS + CALLGRIND}
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")}
    assert scripts - run - set(LEFT_OUT) == set(), "run these here or name them in LEFT_OUT"
    assert set(LEFT_OUT) <= scripts, "LEFT_OUT names a script that is gone"


def _last_json(stdout: str) -> dict:
    """The last line of ``stdout`` that is a JSON object (plans printed after it may hold
    lines that only start with a brace)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON line in the output:\n{stdout[-3000:]}")


def _run(script: str, args: list[str], key: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TIDEMARK_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (f"python bench/{script} {' '.join(args)} exited "
                                  f"{done.returncode}:\n{done.stdout[-2000:]}\n"
                                  f"{done.stderr[-4000:]}")
    assert key in json.dumps(_last_json(done.stdout)), done.stdout[-2000:]


def _id(script: str, args: list[str]) -> str:
    """The script's name, with its --workload or --view when it runs more than one."""
    for option in ("--workload", "--view"):
        if option in args:
            return f"{script}-{args[args.index(option) + 1]}"
    return script


@pytest.mark.parametrize(("script", "args", "key"), RUNS, ids=[_id(s, a) for s, a, _ in RUNS])
def test_bench_runs(script: str, args: list[str], key: str, tmp_path: Path) -> None:
    _run(script, args, key, tmp_path)


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed (apt-get install valgrind)")
@pytest.mark.parametrize(("script", "args", "key"), CALLGRIND, ids=[s for s, _, _ in CALLGRIND])
def test_callgrind_bench_runs(script: str, args: list[str], key: str, tmp_path: Path) -> None:
    _run(script, args, key, tmp_path)
