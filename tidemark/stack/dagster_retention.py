"""Retention of Dagster's run history: delete old runs whose every fact a later run holds.

Dagster keeps every run for ever: its row, its event log (with SQLite storage, a file per run)
and its compute logs, ~0.4 MB and ~14 files per run; the demo's corrections add a run every
minute or two. Deleting a run deletes its events too, and with them the materializations of
the partitions it built: a plain "older than N days" deletion would make the UI show those
partitions missing. So a run is deleted only when all of this holds:

- it ended (SUCCESS, FAILURE or CANCELED) longer ago than the retention;
- every asset partition it materialized (or observed) was materialized (observed) again
  later by another run, so each partition's latest materialization is kept;
- every asset partition it planned and did not build (a failed or canceled run) was
  materialized later by another run, so no partition's failed or missing status changes;
- every asset check execution it holds (evaluated, or planned and never evaluated) has a later
  execution by another run, per check and partition, and it holds no check's latest
  completed evaluation either: the UI shows both (a check's current state, and its last
  result while a newer execution is planned or never ran);
- it is not one of the newest :data:`KEPT_PER_JOB` runs of its job (``tidemark status`` and the
  reconciliation's retry read a job's newest runs);
- it does not belong to a backfill that is still running.

A run that holds a latest fact is never deleted, so the UI's asset and partition status,
latest materializations and check statuses are the same after a prune; what goes is the
history behind them. With a run go its events, its rows in the check executions, its compute
logs (``storage/<run id>``) and, with SQLite storage, its event-log file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

KEPT_PER_JOB = 10
"""The newest runs of each job that are always kept (at least the correction attempts)."""
EVERY_S = 86400.0
"""How often ``tidemark up`` prunes (first soon after its start)."""
FIRST_AFTER_S = 60.0
BATCH = 500
"""Run ids per query of the run's facts."""
ENDED = ("SUCCESS", "FAILURE", "CANCELED")
MATERIALIZATION = "ASSET_MATERIALIZATION"
OBSERVATION = "ASSET_OBSERVATION"
PLANNED = "ASSET_MATERIALIZATION_PLANNED"
CHECK_COMPLETED = ("SUCCEEDED", "FAILED")

Key = tuple[str, str | None]  # (asset key as stored, partition or None)
CheckKey = tuple[str, str, str | None]  # (asset key, check name, partition)


@dataclass(frozen=True)
class OldRun:
    """An ended run older than the retention.

    Attributes:
        run_id: the run.
        job_name: its job (``__ASSET_JOB`` for materializations launched from the UI).
        status: SUCCESS, FAILURE or CANCELED.
        ended_at: when it ended (its last update when no end time was recorded).
        partitions: its partition, or ``first...last`` for a range, or ``""``.
    """

    run_id: str
    job_name: str
    status: str
    ended_at: datetime
    partitions: str


@dataclass
class PrunePlan:
    """What a prune deletes and why it keeps the other old runs.

    Attributes:
        cutoff: runs that ended before this are old.
        delete: the old runs deleted (or, on a dry run, to delete).
        kept: per old run kept, the first reason found, its kind before ``": "`` (e.g.
            ``latest materialization: ["marts", "fct_daily_store_revenue"] 2026-12-03``).
        bytes_freed: bytes of the files removed (event-log files, compute logs); 0 on a dry
            run.
        seconds: how long the prune took.
    """

    cutoff: datetime
    delete: list[OldRun] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    bytes_freed: int = 0
    seconds: float = 0.0

    def summary(self, dry_run: bool = False) -> str:
        """One line: how many runs go, how many old ones stay and why (by kind of reason)."""
        kinds: dict[str, int] = {}
        for reason in self.kept.values():
            kind = reason.split(": ")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        why = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        verb = "Would delete" if dry_run else "Deleted"
        freed = "" if dry_run else f" ({self.bytes_freed / 2**20:.1f} MiB of files)"
        return (f"{verb} {len(self.delete)} Dagster run(s) that ended before "
                f"{self.cutoff:%Y-%m-%d %H:%M} UTC{freed}; kept {len(self.kept)} old run(s)"
                + (f" that still hold what the UI shows: {why}." if why else ".")
                + ("" if dry_run else f" {self.seconds:.1f} s."))


def prune_runs(instance: Any, older_than: timedelta, dry_run: bool = False,
               now: datetime | None = None, keep_per_job: int = KEPT_PER_JOB) -> PrunePlan:
    """Delete the runs of ``instance`` that ended before ``now - older_than`` and whose every
    fact a later run holds (see the module docstring).

    Args:
        instance: a ``dagster.DagsterInstance`` with SQL event-log storage (SQLite or
            PostgreSQL).
        older_than: the retention; ``timedelta(0)`` or less keeps every run.
        dry_run: only say what would be deleted.
        now: the time the retention is measured from (default: now).
        keep_per_job: the newest runs of each job always kept.

    Returns:
        The plan, carried out unless ``dry_run``.
    """
    started = time.monotonic()
    cutoff = (now or datetime.now(UTC)) - older_than
    plan = PrunePlan(cutoff=cutoff)
    if older_than <= timedelta(0):
        return plan
    old = _old_runs(instance, cutoff)
    if old:
        plan.kept.update(_kept_by_job(instance, old, keep_per_job))
        plan.kept.update(_kept_by_backfill(instance, old, plan.kept))
        rest = [r for r in old if r.run_id not in plan.kept]
        for chunk in _chunks(rest, BATCH):
            plan.kept.update(_kept_by_facts(instance, [r.run_id for r in chunk]))
        plan.delete = [r for r in old if r.run_id not in plan.kept]
    if not dry_run:
        plan.bytes_freed = sum(_delete_runs(instance, [r.run_id for r in chunk])
                               for chunk in _chunks(plan.delete, BATCH // 5))
    plan.seconds = time.monotonic() - started
    return plan


def prune_home(home: str | os.PathLike, older_than: timedelta, dry_run: bool = False,
               keep_per_job: int = KEPT_PER_JOB) -> PrunePlan:
    """:func:`prune_runs` on the Dagster instance of the home ``home`` (its dagster.yaml)."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return prune_runs(instance, older_than, dry_run=dry_run, keep_per_job=keep_per_job)


def prune_daily(home: str | os.PathLike, days: int, keep_per_job: int,
                stop: threading.Event, say: Callable[[str], None]) -> threading.Thread | None:
    """Prune the home's runs :data:`FIRST_AFTER_S` after the start, then every
    :data:`EVERY_S`, in a daemon thread until ``stop`` is set (``tidemark up``'s housekeeping;
    None when ``days`` is 0). What it deleted, or why it could not, is said with ``say``."""
    if days <= 0:
        return None

    def loop() -> None:
        wait = FIRST_AFTER_S
        while not stop.wait(wait):
            wait = EVERY_S
            try:
                plan = prune_home(home, timedelta(days=days), keep_per_job=keep_per_job)
            except Exception as exc:  # said, tried again tomorrow; the stack keeps running
                say(f"Pruning Dagster's run history failed: {exc}; tried again in a day, or "
                    f"run `tidemark dagster prune`.")
                continue
            if plan.delete:
                say(f"Dagster run history: {plan.summary()}")

    thread = threading.Thread(target=loop, name="dagster-run-retention", daemon=True)
    thread.start()
    return thread


def _old_runs(instance: Any, cutoff: datetime) -> list[OldRun]:
    from dagster import DagsterRunStatus, RunsFilter

    records = instance.get_run_records(filters=RunsFilter(
        statuses=[DagsterRunStatus(s) for s in ENDED], updated_before=cutoff))
    out = []
    for record in records:
        run = record.dagster_run
        ended = (datetime.fromtimestamp(record.end_time, UTC) if record.end_time
                 else record.update_timestamp.astimezone(UTC))
        if ended >= cutoff:
            continue
        tags = run.tags
        first = tags.get("dagster/asset_partition_range_start")
        last = tags.get("dagster/asset_partition_range_end")
        parts = f"{first}...{last}" if first and last else tags.get("dagster/partition", "")
        out.append(OldRun(run.run_id, run.job_name, run.status.value, ended, parts))
    return sorted(out, key=lambda r: r.ended_at)  # oldest first


def _kept_by_job(instance: Any, old: list[OldRun], keep: int) -> dict[str, str]:
    """The old runs among the newest ``keep`` of their job."""
    from dagster import RunsFilter

    old_ids = {r.run_id for r in old}
    kept = {}
    for job in sorted({r.job_name for r in old}):
        for record in instance.get_run_records(filters=RunsFilter(job_name=job), limit=keep):
            if record.dagster_run.run_id in old_ids:
                kept[record.dagster_run.run_id] = (f"newest runs of their job: {job} (its "
                                                   f"newest {keep})")
    return kept


def _kept_by_backfill(instance: Any, old: list[OldRun], kept: dict[str, str]) -> dict[str, str]:
    """The old runs of a backfill that has not finished (it counts its runs)."""
    from dagster import RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    old_ids = {r.run_id for r in old}
    out: dict[str, str] = {}
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        for record in instance.get_run_records(filters=RunsFilter(
                tags={"dagster/backfill": backfill.backfill_id})):
            run_id = record.dagster_run.run_id
            if run_id in old_ids and run_id not in kept:
                out[run_id] = f"running backfill: {backfill.backfill_id}"
    return out


def _kept_by_facts(instance: Any, run_ids: list[str]) -> dict[str, str]:
    """Among ``run_ids``, the runs holding a fact no later run holds, each with the first
    such fact."""
    import dagster._core.storage.event_log.schema as schema
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
    from sqlalchemy import select

    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        from tidemark.errors import DagsterRetentionError

        raise DagsterRetentionError(
            f"The Dagster instance's event log storage ({type(storage).__name__}) is not a SQL "
            "storage, so its runs' materializations cannot be read to decide what to keep; "
            "nothing was deleted. Use SQLite or PostgreSQL storage in dagster.yaml.")
    events, checks = schema.SqlEventLogStorageTable, schema.AssetCheckExecutionsTable
    kept: dict[str, str] = {}
    with storage.index_connection() as conn:
        facts = conn.execute(select(
            events.c.id, events.c.run_id, events.c.dagster_event_type, events.c.asset_key,
            events.c.partition, events.c.event).where(
            events.c.run_id.in_(run_ids),
            events.c.dagster_event_type.in_([MATERIALIZATION, OBSERVATION, PLANNED]))).all()
        assets = sorted({f.asset_key for f in facts})
        latest = {kind: _latest_events(conn, events, kind, assets)
                  for kind in (MATERIALIZATION, OBSERVATION)}
        for fact in facts:
            kind = OBSERVATION if fact.dagster_event_type == OBSERVATION else MATERIALIZATION
            latest_what = ("latest observation" if kind == OBSERVATION
                           else "latest materialization")
            for part in _partitions(fact):
                holder = latest[kind].get((fact.asset_key, part))
                if holder is not None and holder[1] == fact.run_id:
                    kept.setdefault(fact.run_id, f"{latest_what}: {fact.asset_key} "
                                                 f"{part or ''}")
                elif holder is None or holder[0] < fact.id:  # planned, not built since
                    kept.setdefault(fact.run_id, f"unbuilt planned partition: "
                                                 f"{fact.asset_key} {part or ''}")
        rows = conn.execute(select(
            checks.c.id, checks.c.run_id, checks.c.asset_key, checks.c.check_name,
            checks.c.partition).where(checks.c.run_id.in_(run_ids))).all()
        evaluated = _latest_checks(conn, checks, sorted({r.asset_key for r in rows}))
        for row in rows:
            if row.run_id in evaluated.get((row.asset_key, row.check_name, row.partition),
                                           {row.run_id}):
                kept.setdefault(row.run_id, f"latest check execution: {row.asset_key} "
                                            f"{row.check_name} {row.partition or ''}")
    return kept


def _partitions(fact: Any) -> list[str | None]:
    """The partitions an event is about: its partition column, else a planned event's subset
    (one planned event for a range, with ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``)."""
    if fact.partition is not None or fact.dagster_event_type != PLANNED:
        return [fact.partition]
    from dagster._serdes import deserialize_value

    data = deserialize_value(fact.event).get_dagster_event().event_specific_data
    subset = getattr(data, "partitions_subset", None)
    return list(subset.get_partition_keys()) if subset is not None else [None]


def _latest_events(conn: Any, events: Any, kind: str,
                   assets: Sequence[str]) -> dict[Key, tuple[int, str]]:
    """Per (asset, partition) of ``assets``: the id and run of its latest event of ``kind``."""
    from sqlalchemy import func, select

    out: dict[Key, tuple[int, str]] = {}
    for chunk in _chunks(assets, BATCH):
        newest = select(func.max(events.c.id).label("id")).where(
            events.c.dagster_event_type == kind, events.c.asset_key.in_(chunk)).group_by(
            events.c.asset_key, events.c.partition).subquery()
        for row in conn.execute(select(events.c.id, events.c.run_id, events.c.asset_key,
                                       events.c.partition).where(
                events.c.id.in_(select(newest.c.id)))):
            out[(row.asset_key, row.partition)] = (row.id, row.run_id)
    return out


def _latest_checks(conn: Any, checks: Any,
                   assets: Sequence[str]) -> dict[CheckKey, set[str]]:
    """Per (asset, check, partition) of ``assets``: the runs of its latest execution (any
    status: the check's current state) and of its latest completed one (what the UI shows as
    the last result while a newer one is planned or never ran)."""
    from sqlalchemy import func, select

    out: dict[CheckKey, set[str]] = {}
    for chunk in _chunks(assets, BATCH):
        for statuses in (None, CHECK_COMPLETED):
            where = [checks.c.asset_key.in_(chunk)]
            if statuses is not None:
                where.append(checks.c.execution_status.in_(statuses))
            newest = select(func.max(checks.c.id).label("id")).where(*where).group_by(
                checks.c.asset_key, checks.c.check_name, checks.c.partition).subquery()
            for row in conn.execute(select(checks.c.run_id, checks.c.asset_key,
                                           checks.c.check_name, checks.c.partition).where(
                    checks.c.id.in_(select(newest.c.id)))):
                out.setdefault((row.asset_key, row.check_name, row.partition),
                               set()).add(row.run_id)
    return out


def _delete_runs(instance: Any, run_ids: list[str]) -> int:
    """Delete runs: each one's row and events, check executions, compute logs and, with
    SQLite storage, event-log file. Returns the bytes of files removed."""
    import dagster._core.storage.event_log.schema as schema
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage, checks = instance.event_log_storage, schema.AssetCheckExecutionsTable
    sharded = isinstance(storage, SqliteEventLogStorage)  # one file per run, deleted whole
    for run_id in run_ids:
        if sharded:  # instance.delete_run would open (and check the schema of) each file
            instance.run_storage.delete_run(run_id)
        else:
            instance.delete_run(run_id)
    with storage.index_connection() as conn:
        for run_id in run_ids:
            if sharded:
                storage.delete_events_for_run(conn, run_id)
            conn.execute(checks.delete().where(checks.c.run_id == run_id))
    freed = 0
    logs = getattr(instance.compute_log_manager, "_base_dir", None)
    for run_id in run_ids:
        if logs is not None:
            freed += _size(os.path.join(logs, run_id))
        instance.compute_log_manager.delete_logs(prefix=[run_id])
        if sharded:
            shard = storage.path_for_shard(run_id)
            for path in (shard, f"{shard}-wal", f"{shard}-shm"):
                freed += _size(path)
                _unlink(path)
    return freed


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _chunks(items: Sequence[Any] | Iterable[Any], size: int) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]
