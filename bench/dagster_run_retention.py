"""Dagster's run history before and after a prune (``tidemark dagster prune``).

Makes a ``tidemark up`` Dagster home (its dagster.yaml, SQLite storage) in a temporary
directory, or uses ``--home`` (a copy of a real one: it is pruned!), fills it with ``--runs``
real runs of small assets (a daily partitioned asset cycling over ``--partitions`` days, an
unpartitioned one with a check every 5th run, a failed run every 20th), then prunes with a
7-day retention measured ``--days-later`` days from now and prints, as one JSON line: bytes
and files of the home before and after, runs before and after, the prune's seconds, and
whether the materialized partitions and each partition's latest materialization read back
unchanged (they must).

    python bench/dagster_run_retention.py --runs 600 --partitions 30
    python bench/dagster_run_retention.py --home /tmp/copy/dagster --hours 1   # a real home
"""

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # module level: the assets' annotations name it


def disk(home: Path) -> tuple[int, int]:
    """(bytes, files) under ``home``."""
    total = files = 0
    for root, _dirs, names in os.walk(home):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def fill(home: Path, runs: int, partitions: int) -> None:
    """``runs`` real runs of small assets into the instance of ``home``."""
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01")
    keys = days.get_partition_keys()[:partitions]

    @dg.asset(partitions_def=days)
    def daily(context: dg.AssetExecutionContext) -> None:
        if context.run.tags.get("fail"):
            raise RuntimeError("fails on purpose")

    @dg.asset
    def whole() -> None:
        pass

    @dg.asset_check(asset=whole)
    def whole_ok() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for n in range(runs):
            if n % 5 == 4:
                dg.materialize([whole, whole_ok], instance=instance)
            else:
                dg.materialize([daily], instance=instance, partition_key=keys[n % len(keys)],
                               tags={"fail": "1"} if n % 20 == 19 else {},
                               raise_on_error=False)


def read_back(home: Path) -> dict:
    """Every asset's materialized partitions and each one's latest materialization."""
    out = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in instance.get_asset_keys():
            parts = sorted(p for p in instance.get_materialized_partitions(key) if p)
            latest = {p: instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=key, asset_partitions=[p]), limit=1).records[0].storage_id
                for p in parts}
            record = instance.get_latest_materialization_event(key)
            out[key.to_user_string()] = (latest, record.run_id if record else None)
        return {"assets": out, "runs": len(instance.get_run_ids())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--home", type=Path, default=None,
                        help="an existing Dagster home to prune (use a copy)")
    parser.add_argument("--hours", type=float, default=None,
                        help="retention in hours instead of 7 days measured 8 days later")
    args = parser.parse_args()

    from tidemark.settings import Settings
    from tidemark.stack.dagster_proc import dagster_home
    from tidemark.stack.dagster_retention import KEPT_PER_JOB, prune_runs

    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="run-retention-")
        home = dagster_home(Settings(home=Path(tmp.name), port=55432))
        fill(home, args.runs, args.partitions)
    else:
        home = args.home
    before_disk, before = disk(home), read_back(home)
    retention, now = ((timedelta(hours=args.hours), None) if args.hours is not None
                      else (timedelta(days=7), datetime.now(UTC) + timedelta(days=8)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        plan = prune_runs(instance, retention, now=now, keep_per_job=KEPT_PER_JOB)
    after_disk, after = disk(home), read_back(home)
    print(json.dumps({
        "runs_before": before["runs"], "runs_after": after["runs"],
        "deleted": len(plan.delete), "kept_old": len(plan.kept),
        "bytes_before": before_disk[0], "bytes_after": after_disk[0],
        "files_before": before_disk[1], "files_after": after_disk[1],
        "bytes_freed_by_prune": plan.bytes_freed, "prune_s": round(plan.seconds, 3),
        "read_back_unchanged": before["assets"] == after["assets"],
        "summary": plan.summary()}))
    if tmp is not None:
        tmp.cleanup()
    if before["assets"] != after["assets"]:
        sys.exit("the prune changed what Dagster reads back of the assets")


if __name__ == "__main__":
    main()
