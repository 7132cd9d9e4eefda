"""Freshness samples: percentile arithmetic over histogram windows, the SQL writer's buckets,
pruning, and samples flowing from an idle source through heartbeats."""

from __future__ import annotations

import math
import random
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up, run
from ingestion.freshness import (
    FRESHNESS,
    GROWTH,
    PRUNE,
    RETENTION,
    SLOT_S,
    Bucket,
    bucket_of,
    merge,
    percentile,
    read_histograms,
    record_sample,
)
from ingestion.names import STATE_SCHEMA
from ingestion.state import ensure_state
from tests.ingestion.conftest import Pair, wait_until
from tests.support import give_password


def histogram(latencies_ms: list[float]) -> list[Bucket]:
    """The histogram the writer would keep for these latencies (max per bucket)."""
    out: dict[int, Bucket] = {}
    for ms in latencies_ms:
        b = bucket_of(ms)
        old = out.get(b, Bucket(b, 0, 0.0))
        out[b] = Bucket(b, old.samples + 1, max(old.max_ms, ms))
    return list(out.values())


def exact(latencies_ms: list[float], p: float) -> float:
    """Nearest-rank percentile: the oracle."""
    ordered = sorted(latencies_ms)
    return ordered[max(1, math.ceil(p * len(ordered) - 1e-9)) - 1]


@pytest.mark.parametrize("seed", range(20))
def test_percentiles_bound_the_exact_value_within_one_bucket(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 400)
    latencies = [rng.choice([rng.uniform(0, 3), rng.lognormvariate(4, 1.5),
                             rng.uniform(1000, 90_000)]) for _ in range(n)]
    buckets = histogram(latencies)
    for p in (0.5, 0.9, 0.95, 0.99, 0.999):
        got, want = percentile(buckets, p), exact(latencies, p)
        assert got >= want, (p, got, want)
        assert got <= max(want * GROWTH, 1.0) + 1e-9, (p, got, want)
    # Windows add up: the two halves merged give the whole.
    half = n // 2
    assert merge([histogram(latencies[:half]), histogram(latencies[half:])]) == \
        sorted(buckets, key=lambda b: b.bucket)


def test_percentile_edges() -> None:
    assert percentile([], 0.95) is None
    one = histogram([1234.0])
    assert percentile(one, 0.5) == percentile(one, 0.99) == 1234.0
    # 95 fast samples and 5 slow ones: p95 is fast, p99 slow (nearest rank).
    mixed = histogram([10.0] * 95 + [5000.0] * 5)
    assert percentile(mixed, 0.95) == 10.0 and percentile(mixed, 0.99) == 5000.0
    assert percentile(mixed, 0.96) == 5000.0


def test_writer_buckets_windows_and_pruning(pair: Pair) -> None:
    """The SQL writer puts each latency in bucket_of's bucket; windows select slots by age;
    old slots are deleted by the next write."""
    latencies = [0.0, 0.4, 1.0, 1.2, 37.0, 37.5, 950.0, 12_000.0, 400_000.0]
    with psycopg.connect(pair.land) as conn:
        ensure_state(conn, pair.source)
        for ms in latencies:
            with conn.transaction():
                # commit_at in the past by ms; the writer measures from its clock_timestamp().
                now = conn.execute("select clock_timestamp()").fetchone()[0]
                record_sample(conn, pair.source, now - timedelta(milliseconds=ms))
        record_sample(conn, pair.source, None)  # no commit time: no sample
        conn.commit()
        got = read_histograms(conn, [pair.source], [300.0])[(pair.source, 300.0)]
        assert sum(b.samples for b in got) == len(latencies)
        for b in got:
            assert b.bucket == bucket_of(b.max_ms), b
        # Latencies measured by the writer are a little larger than asked (statement time).
        assert percentile(got, 0.5) == pytest.approx(37.5, abs=30)
        assert percentile(got, 1.0) == pytest.approx(400_000, rel=0.01)
        # A slot 20 minutes old is in the 1 h window only; one older than the retention goes.
        old = datetime.now(UTC) - timedelta(minutes=20)
        ancient = datetime.now(UTC) - RETENTION - timedelta(seconds=SLOT_S)
        conn.execute("insert into tidemark.freshness_histogram values (%s, %s, 100, 7, 130.0),"
                     " (%s, %s, 100, 1, 131.0)", (pair.source, old, pair.source, ancient))
        conn.commit()
        windows = read_histograms(conn, [pair.source], [300.0, 3600.0])
        assert sum(b.samples for b in windows[(pair.source, 300.0)]) == len(latencies)
        assert sum(b.samples for b in windows[(pair.source, 3600.0)]) == len(latencies) + 7
        with conn.transaction():
            record_sample(conn, pair.source, datetime.now(UTC))
        left = conn.execute("select count(*) from tidemark.freshness_histogram where source = %s"
                            " and slot_start < %s", (pair.source, old)).fetchone()[0]
        assert left == 0
        assert read_histograms(conn, ["nobody"], [300.0]) == {("nobody", 300.0): []}


def test_pruning_reads_only_the_old_slots(pair: Pair) -> None:
    """Every landing transaction prunes its source's old slots: with an hour of slots of two
    sources kept (what a running stack holds), the prune reads the primary key's range of old
    slots, not the whole table (round 39's soak: a sequential scan of 12,000 rows, 1.2 ms per
    landing transaction)."""
    with psycopg.connect(pair.land) as conn:
        ensure_state(conn, pair.source)
        conn.execute(
            "insert into tidemark.freshness_histogram select s, slot, b, 1, 10.0"
            " from unnest(%s::text[]) s, generate_series(date_bin('10 s', now(), now())"
            "  - %s::interval, now(), '10 s') slot, generate_series(0, 19) b"
            " on conflict do nothing", ([pair.source, "other"], RETENTION))
        conn.execute("analyze tidemark.freshness_histogram")
        rows = conn.execute("select count(*) from tidemark.freshness_histogram").fetchone()[0]
        assert rows > 10_000
        statement = PRUNE.format(t=sql.Identifier(STATE_SCHEMA, FRESHNESS),
                                 keep=sql.Literal(RETENTION))
        plan = conn.execute(sql.SQL("explain (analyze, buffers, format json) ")
                            + statement, {"source": pair.source}).fetchone()[0][0]
        conn.rollback()
    scan = plan["Plan"]["Plans"][0]
    assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), scan
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 20, scan


def samples(pair: Pair) -> int:
    with psycopg.connect(pair.land) as conn:
        return conn.execute("select coalesce(sum(samples), 0) from tidemark.freshness_histogram"
                            " where source = %s", (pair.source,)).fetchone()[0]


def test_idle_source_yields_samples_through_heartbeats(pair: Pair) -> None:
    """No write at all on the source: every heartbeat (a logical message through the slot)
    lands a transaction, and each landing transaction counts one sample."""
    pair.src_exec("create table t (id int primary key)", "insert into t values (1)")
    catch_up(pair.src, pair.land, pair.source)
    before = samples(pair)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "heartbeat_s": 0.3})
    thread.start()
    try:
        assert wait_until(lambda: samples(pair) >= before + 5, timeout=30), \
            f"idle source: {samples(pair) - before} samples in 30 s"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with psycopg.connect(pair.land) as conn:
        got = read_histograms(conn, [pair.source], [300.0])[(pair.source, 300.0)]
        mirror = conn.execute(f"select count(*) from {pair.source}.t").fetchone()[0]
    assert mirror == 1  # heartbeats changed no data
    # Idle heartbeats are landed quickly: well under a second on this machine.
    assert percentile(got, 0.5) < 1000


def test_least_privileged_role_may_emit_heartbeats(pair: Pair) -> None:
    """pg_logical_emit_message is executable by PUBLIC (9.6 to 18): a role with LOGIN and
    REPLICATION only — what `tidemark source add` asks for — can send heartbeats."""
    role = f"hb_{pair.source}"
    pair.src_exec(f"drop role if exists {role}", f"create role {role} login replication")
    give_password(pair.src, role)
    try:
        url = pair.src.replace("postgres@", f"{role}@", 1)
        with psycopg.connect(url, autocommit=True) as conn:
            lsn = conn.execute("select pg_logical_emit_message(true, 'tidemark_heartbeat',"
                               " 'x')::text").fetchone()[0]
        assert "/" in lsn
    finally:
        pair.src_exec(f"drop role if exists {role}")
