"""CPU of Dagster's SQLite storage as `tidemark up` names it, against Dagster's own class.

Two Dagster homes made as ``tidemark up`` makes them (tidemark.stack.dagster_proc.dagster_home):
one keeps today's ``dagster.yaml`` (``SharedEngineSqliteStorage``: one SQLAlchemy engine per
file), the other gets the text earlier versions wrote (``storage: sqlite:``, Dagster's own
class, an engine per connection). In each, alternately, ``--repeat`` times, this process
measures its own CPU for what the Dagster processes do with the storage:

- run: a real run of a chain of ``--assets`` assets, each with a check (a run worker's work:
  its events stored in the run's file, asset events mirrored in the index file);
- reads: ``--reads`` times the run's event log, its run record and each asset's latest
  materialisation (what the UI asks for a run's page and the asset catalog);
- polls: ``--polls`` times the queued runs, the latest run and the sensors' and schedules'
  states (what the daemon asks at each tick).

Prints one JSON line: per storage the median CPU seconds of each part and the events stored.

    python bench/dagster_storage.py --assets 40 --reads 20 --polls 200 --repeat 3
"""

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg


def chain(n: int) -> dg.Definitions:
    """``n`` assets, each depending on the one before, each with a check."""
    assets, checks = [], []
    for i in range(n):
        deps = [f"a{i - 1}"] if i else []

        @dg.asset(name=f"a{i}", deps=deps)
        def asset() -> None:
            return None

        @dg.asset_check(asset=f"a{i}", name="ok")
        def check() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        assets.append(asset)
        checks.append(check)
    return dg.Definitions(assets=assets, asset_checks=checks)


def home(root: Path, form: str) -> Path:
    """A Dagster home as `tidemark up` writes it; ``sqlite``: with the earlier storage text."""
    from tidemark.settings import Settings
    from tidemark.stack.dagster_proc import SQLITE_STORAGE, STORAGE_HEAD, dagster_home

    path = dagster_home(Settings(home=root / form, port=55432))
    if form == "sqlite":
        text = (path / "dagster.yaml").read_text()
        head, rest = text.split(STORAGE_HEAD, 1)
        storage, tail = rest.split("\n", 1)
        (path / "dagster.yaml").write_text(head + SQLITE_STORAGE.format(storage=storage) + tail)
    return path


def measure(path: Path, job, keys: list, reads: int, polls: int) -> dict:
    """CPU seconds of one run, of the reads and of the polls on the instance of ``path``."""
    from dagster import DagsterRunStatus, RunsFilter

    with dg.DagsterInstance.from_config(str(path)) as instance:
        instance.get_runs(limit=1)  # the storage opened before the clock starts
        start = time.process_time()
        result = job.execute_in_process(instance=instance)
        run_s = time.process_time() - start
        assert result.success
        events = len(instance.get_records_for_run(result.run_id, limit=100000).records)
        start = time.process_time()
        for _ in range(reads):
            instance.get_records_for_run(result.run_id, limit=100000)
            instance.get_run_record_by_id(result.run_id)
            for key in keys:
                instance.get_latest_materialization_event(key)
        reads_s = time.process_time() - start
        start = time.process_time()
        for _ in range(polls):
            instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
            instance.get_run_records(limit=1)
            instance.all_instigator_state()
        polls_s = time.process_time() - start
    return {"run_s": run_s, "reads_s": reads_s, "polls_s": polls_s, "events": events}


def main() -> None:
    """Measure both storages, alternately, and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=40)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    job = chain(args.assets).get_implicit_global_asset_job_def()
    keys = [dg.AssetKey(f"a{i}") for i in range(args.assets)]
    found: dict[str, list[dict]] = {"sqlite": [], "shared_engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for form in ("sqlite", "shared_engine"):
                found[form].append(measure(home(Path(tmp) / str(len(found[form])), form),
                                           job, keys, args.reads, args.polls))
    out = {"assets": args.assets, "reads": args.reads, "polls": args.polls,
           "repeat": args.repeat}
    for form, rows in found.items():
        out[form] = {part: round(statistics.median(r[part] for r in rows), 3)
                     for part in ("run_s", "reads_s", "polls_s", "events")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
