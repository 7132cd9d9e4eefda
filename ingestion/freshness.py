"""Freshness samples: source commit → landed (and visible in the embedded live views) latency.

Every landing transaction of a source records one **sample**: the time from the source commit of
the newest source transaction it applies to the moment it is written (``clock_timestamp()`` as
the landing transaction's last statements run, after the live views' statement triggers have
applied its changes — on the embedded engine a change is visible in every live view exactly when
its landing transaction commits). Heartbeats (``pg_logical_emit_message``) are source
transactions too, so an idle source still yields a sample every heartbeat.

Samples are not kept one by one: they are counted in a **histogram** per source and
:data:`SLOT_S`-second time slot, with log-spaced latency buckets :data:`GROWTH` apart (bucket
``b`` holds latencies in ``(GROWTH**(b-1), GROWTH**b]`` ms, plus the largest latency seen in
it). Histograms of any window add up, so p50/p95/p99 over 5 minutes or 1 hour come from one
small query, and each percentile is the largest latency seen in its bucket: never below the
exact value, at most :data:`GROWTH` − 1 (5 %) above it. Slots older than :data:`RETENTION` are
deleted by the writer, so the table holds at most ``RETENTION / SLOT_S`` slots per source, each
with a handful of buckets.

Source and landing clocks are compared (as ``checkpoints.last_lag_ms`` does): on two servers,
clock skew adds to every sample; a negative latency counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from ingestion.names import STATE_SCHEMA

FRESHNESS = "freshness_histogram"
SLOT_S = 10
"""Width of a histogram time slot (seconds): the finest window is one slot."""
GROWTH = 1.05
"""Ratio between two latency buckets' upper bounds (the percentiles' resolution)."""
RETENTION = timedelta(hours=1, seconds=2 * SLOT_S)
"""How long slots are kept: the longest window (1 h) and a little."""
WINDOWS = (300, 3600)
"""The windows (seconds) reported by status and Dagster metadata."""
PERCENTILES = (0.5, 0.95, 0.99)

TABLES = {
    FRESHNESS: """
        source text not null,
        slot_start timestamptz not null,
        bucket integer not null,
        samples bigint not null,
        max_ms double precision not null,
        primary key (source, slot_start, bucket)""",
}
"""State tables created by :func:`ingestion.state.ensure_state`."""

_RECORD = sql.SQL("""
    insert into {t} as f (source, slot_start, bucket, samples, max_ms)
    select %(source)s, to_timestamp(floor(extract(epoch from now_) / {slot}) * {slot}),
           case when ms <= 1 then 0 else ceil(ln(ms) / ln({growth}))::int end, 1, ms
    from (select clock_timestamp() as now_,
                 greatest(extract(epoch from clock_timestamp() - %(commit_at)s) * 1000, 0)
                   ::double precision as ms) s
    where %(commit_at)s::timestamptz is not null
    on conflict (source, slot_start, bucket) do update set
        samples = f.samples + 1, max_ms = greatest(f.max_ms, excluded.max_ms)""")

PRUNE = sql.SQL("delete from {t} where source = %(source)s and slot_start < "
                "statement_timestamp() - {keep}")
"""Delete a source's slots older than the retention (``{t}``: the table, ``{keep}``: the
retention). ``statement_timestamp()`` is stable, so the primary key ``(source, slot_start,
bucket)`` bounds the scan to the old slots; with the volatile ``clock_timestamp()`` it was a
sequential scan of every slot of every source in every landing transaction (round 39's soak:
12,000 rows, 108 buffers, 1.2 ms per landing transaction once the hour was full)."""


def record_sample(conn: psycopg.Connection, source: str, commit_at: datetime | None) -> None:
    """Count one sample of ``source`` (in the caller's landing transaction) and drop old slots.

    Two statements, no result read: inside the applier's pipeline they add no round trip.

    Args:
        conn: landing connection, in the transaction that applied the changes.
        source: source name.
        commit_at: source commit time of the newest source transaction applied (None: no
            sample, e.g. a snapshot's landing transaction).
    """
    if commit_at is None:
        return
    table = sql.Identifier(STATE_SCHEMA, FRESHNESS)
    params = {"source": source, "commit_at": commit_at}
    conn.execute(_RECORD.format(t=table, slot=sql.Literal(SLOT_S), growth=sql.Literal(GROWTH)),
                 params)
    conn.execute(PRUNE.format(t=table, keep=sql.Literal(RETENTION)), params)


@dataclass(frozen=True)
class Bucket:
    """Samples of one latency bucket in a window.

    Attributes:
        bucket: bucket number (upper bound ``GROWTH ** bucket`` ms).
        samples: how many samples fell in it.
        max_ms: the largest latency seen in it.
    """

    bucket: int
    samples: int
    max_ms: float


def bucket_of(ms: float) -> int:
    """The bucket a latency of ``ms`` milliseconds falls in (same rule as the SQL writer)."""
    return 0 if ms <= 1 else math.ceil(math.log(ms) / math.log(GROWTH))


def percentile(buckets: Iterable[Bucket], p: float) -> float | None:
    """The ``p`` quantile (0 < p ≤ 1) of a histogram, in ms (nearest-rank, conservative).

    The sample of rank ``ceil(p * n)`` lies in some bucket; the bucket's largest latency is
    returned: never below the exact nearest-rank value, at most ``GROWTH`` times it.

    Returns:
        The latency in ms, or None for an empty histogram.
    """
    ordered = sorted(buckets, key=lambda b: b.bucket)
    total = sum(b.samples for b in ordered)
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total - 1e-9))
    seen = 0
    for b in ordered:
        seen += b.samples
        if seen >= rank:
            return b.max_ms
    return ordered[-1].max_ms


def merge(histograms: Iterable[Iterable[Bucket]]) -> list[Bucket]:
    """Add histograms bucket by bucket (samples summed, largest latency kept)."""
    out: dict[int, Bucket] = {}
    for histogram in histograms:
        for b in histogram:
            old = out.get(b.bucket)
            out[b.bucket] = b if old is None else Bucket(
                b.bucket, old.samples + b.samples, max(old.max_ms, b.max_ms))
    return sorted(out.values(), key=lambda b: b.bucket)


def read_histograms(conn: psycopg.Connection, sources: Sequence[str],
                    windows: Sequence[float]) -> dict[tuple[str, float], list[Bucket]]:
    """The histogram of every source over every window ending now (one query).

    A window of ``w`` seconds holds the slots that started less than ``w + SLOT_S`` seconds
    ago: it covers between ``w`` and ``w + SLOT_S`` seconds of samples.

    Returns:
        ``(source, window) -> buckets`` (an empty list without samples).
    """
    rows = conn.execute(sql.SQL(
        "select f.source, w.secs, f.bucket, sum(f.samples)::bigint, max(f.max_ms)"
        " from unnest(%s::double precision[]) w(secs) join {t} f on f.source = any(%s)"
        " and f.slot_start > clock_timestamp() - make_interval(secs => w.secs + {slot})"
        " group by 1, 2, 3").format(t=sql.Identifier(STATE_SCHEMA, FRESHNESS),
                                    slot=sql.Literal(SLOT_S)),
        (list(windows), list(sources))).fetchall()
    out: dict[tuple[str, float], list[Bucket]] = {(s, float(w)): [] for s in sources
                                                  for w in windows}
    for source, secs, bucket, samples, max_ms in rows:
        out[(source, float(secs))].append(Bucket(bucket, int(samples), float(max_ms)))
    return out


def last_landed(conn: psycopg.Connection, sources: Sequence[str]
                ) -> dict[str, tuple[float | None, datetime | None]]:
    """Per source: seconds since its last landing transaction, and that source commit time.

    Returns:
        ``source -> (seconds since ``checkpoints.last_applied_at``, ``last_commit_at``)``;
        ``(None, None)`` for a source that never landed.
    """
    rows = conn.execute(sql.SQL(
        "select s, extract(epoch from clock_timestamp() - c.last_applied_at)::float8,"
        " c.last_commit_at from unnest(%s::text[]) s left join {ck} c on c.source = s").format(
        ck=sql.Identifier(STATE_SCHEMA, "checkpoints")), (list(sources),)).fetchall()
    return {s: (None if age is None else float(age), at) for s, age, at in rows}
