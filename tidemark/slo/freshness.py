"""Freshness of each live view against its objective, from the samples ingestion records.

On the embedded engine a live view is maintained inside the landing transaction that applies
its base tables' changes, so a source commit is visible in the view when that transaction
commits: the view's latency is that of the sources it reads (``ingestion.freshness`` keeps one
sample per landing transaction; heartbeats give an idle source a sample every
``TIDEMARK_HEARTBEAT_S``). A view over another live view reads that view's sources.

A view keeps its promise when

- the objective's percentile of its sources' samples over the last ``TIDEMARK_FRESHNESS_WINDOW_S``
  seconds is at or under the objective (``@freshness`` in its file, else
  ``TIDEMARK_FRESHNESS_OBJECTIVE``), and
- every source has landed a transaction within the last ``heartbeat + objective`` seconds: a
  source that commits (or is sent heartbeats) has a transaction due at least every heartbeat;
  one not landed by then is already later than the objective allows, even though no sample can
  say so yet (ingestion stopped, stuck or cut off from the source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ingestion.freshness import (
    PERCENTILES,
    WINDOWS,
    Bucket,
    last_landed,
    merge,
    percentile,
    read_histograms,
)
from streaming_views.objective import Objective, parse_objective

OK, MISSED, UNKNOWN, NOT_DEPLOYED = "ok", "missed", "unknown", "not deployed"


@dataclass
class ViewFreshness:
    """Where one live view stands against its freshness objective.

    Attributes:
        view: the view name (``live.<view>``).
        objective: its objective.
        declared: True when the view file declares it (``@freshness``), False for the default.
        sources: the sources whose tables it reads.
        window_s: the window the objective is judged over.
        judged_s: the objective's percentile over that window (seconds), None without samples.
        judged_samples: samples in that window.
        windows: per reported window (:data:`ingestion.freshness.WINDOWS`, seconds):
            ``samples`` and ``p50``/``p95``/``p99`` (seconds, None without samples).
        silent_s: seconds since the least recent of its sources last landed a transaction.
        state: ``ok``, ``missed``, ``unknown`` or ``not deployed`` (a view file with no view
            in landing: nothing to judge, no promise).
        cause: which test decided the state (``silent``: nothing landed; ``slow``: the
            percentile is over the objective; ``within``, ``no_sample``, ``never_landed``,
            ``no_source``, ``unanalysable``, ``not_deployed``): a change of cause changes the
            reason.
        reason: one sentence: why, and what to do when it is not ``ok``.
    """

    view: str
    objective: Objective
    declared: bool
    sources: list[str]
    window_s: float
    judged_s: float | None = None
    judged_samples: int = 0
    windows: dict[float, dict[str, Any]] = field(default_factory=dict)
    silent_s: float | None = None
    state: str = UNKNOWN
    cause: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (latencies in seconds)."""
        out = {"view": self.view, "objective": self.objective.text, "declared": self.declared,
               "sources": self.sources, "window_s": self.window_s, "judged_s": self.judged_s,
               "judged_samples": self.judged_samples, "silent_s": self.silent_s,
               "state": self.state, "reason": self.reason}
        for secs, stats in self.windows.items():
            for key, value in stats.items():
                out[f"{key}_{_window_name(secs)}"] = value
        return out


def _window_name(secs: float) -> str:
    return f"{secs / 3600:g}h" if secs >= 3600 and secs % 3600 == 0 else \
        f"{secs / 60:g}min" if secs % 60 == 0 else f"{secs:g}s"


def view_sources(view: Any, by_name: dict[str, Any], seen: frozenset[str] = frozenset()
                 ) -> tuple[list[str], str | None]:
    """The sources a view reads (through the views it reads), and the analyzer's refusal.

    Args:
        view: a ``streaming_views.ViewFile``.
        by_name: every view file by name (for views over views).
        seen: views on the way here (a cycle stops the walk).

    Returns:
        Sorted source names, and None or the reason they could not be found.
    """
    from streaming_views.analyzer import analyze
    from streaming_views.errors import StreamingViewsError

    try:
        tables = analyze(view).source_tables
    except StreamingViewsError as exc:
        return [], str(exc)
    out: set[str] = set()
    for ref in tables:
        if ref.schema == "live":
            inner = by_name.get(ref.name)
            if inner is None or ref.name in seen:
                continue
            found, problem = view_sources(inner, by_name, seen | {view.name})
            if problem:
                return [], problem
            out.update(found)
        else:
            out.add(ref.schema)
    return sorted(out), None


def objective_of(view: Any, default: str) -> tuple[Objective, bool]:
    """The view's objective and whether its file declares it (else ``default``)."""
    if view.freshness is not None:
        return view.freshness, True
    return parse_objective(default, "TIDEMARK_FRESHNESS_OBJECTIVE"), False


def evaluate(landing_dsn: str, views: Sequence[Any], *, default_objective: str,
             window_s: float, heartbeat_s: float) -> list[ViewFreshness]:
    """Judge every view against its objective (one connection, two queries).

    Args:
        landing_dsn: landing URL (any role that may read ``tidemark.*``).
        views: the ``streaming_views.ViewFile`` objects to judge.
        default_objective: the objective of views that declare none (``p95 2s``).
        window_s: the window the objective is judged over (seconds).
        heartbeat_s: the ingestion's heartbeat interval (seconds).

    Returns:
        One :class:`ViewFreshness` per view, in the given order; a view not deployed to the
        embedded engine is ``not deployed``, whatever its sources do.
    """
    from streaming_views.catalog import read_catalog

    by_name = {v.name: v for v in views}
    out: list[ViewFreshness] = []
    wanted: list[tuple[Any, list[str], str | None]] = []
    for v in views:
        sources, problem = view_sources(v, by_name)
        wanted.append((v, sources, problem))
    all_sources = sorted({s for _, sources, _ in wanted for s in sources})
    windows = sorted({float(w) for w in (*WINDOWS, window_s)})
    with psycopg.connect(landing_dsn, autocommit=True, connect_timeout=10) as conn:
        from ingestion.state import ensure_state

        deployed = {entry.name for entry in read_catalog(conn, target="embedded")}
        for source in all_sources:
            ensure_state(conn, source, read_only=True)
        hist = read_histograms(conn, all_sources, windows) if all_sources else {}
        landed = last_landed(conn, all_sources) if all_sources else {}
    for v, sources, problem in wanted:
        objective, declared = objective_of(v, default_objective)
        f = ViewFreshness(v.name, objective, declared, sources, float(window_s))
        for w in windows:
            merged = merge(hist[(s, w)] for s in sources)
            stats = _stats(merged)
            if w == float(window_s):
                f.judged_samples = stats["samples"]
                judged = percentile(merged, objective.percentile)
                f.judged_s = None if judged is None else round(judged / 1000, 3)
            if w in WINDOWS:
                f.windows[w] = stats
        ages = [landed[s][0] for s in sources]
        f.silent_s = None if not ages or None in ages else round(max(ages), 1)  # type: ignore
        f.state, f.cause, f.reason = _verdict(f, problem, heartbeat_s) \
            if v.name in deployed else _not_deployed(f)
        out.append(f)
    return out


def _stats(buckets: list[Bucket]) -> dict[str, Any]:
    stats: dict[str, Any] = {"samples": sum(b.samples for b in buckets)}
    for p in PERCENTILES:
        value = percentile(buckets, p)
        stats[f"p{p * 100:g}"] = None if value is None else round(value / 1000, 3)
    return stats


def _not_deployed(f: ViewFreshness) -> tuple[str, str, str]:
    """(state, cause, reason) of a view file with no view in landing."""
    return NOT_DEPLOYED, "not_deployed", (
        f"live.{f.view} is not deployed (its file is in the views folder, no such view in "
        f"landing): no view, no freshness to judge. `tidemark views deploy` (or materialising "
        f"live/{f.view}) deploys it.")


def _verdict(f: ViewFreshness, problem: str | None,
             heartbeat_s: float) -> tuple[str, str, str]:
    """(state, cause, reason) of one view (:class:`ViewFreshness`)."""
    window = _window_name(f.window_s)
    label, limit = f.objective.label, f.objective.seconds
    if problem:
        return UNKNOWN, "unanalysable", (f"live.{f.view} cannot be analysed, so its sources are "
                                         f"unknown: {problem}")
    if not f.sources:
        return UNKNOWN, "no_source", f"live.{f.view} reads no replicated table: nothing to measure."
    if f.silent_s is None:
        return MISSED, "never_landed", (
            f"source {', '.join(f.sources)} has not landed any transaction yet: start ingestion "
            f"(`tidemark ingest run`, or `tidemark up`).")
    if f.silent_s > heartbeat_s + limit:
        return MISSED, "silent", (
            f"nothing from source {', '.join(f.sources)} has landed for {f.silent_s:.0f} s "
            f"(a heartbeat is due every {heartbeat_s:g} s, objective {label} {limit:g} s): "
            f"ingestion is stopped, stuck or cannot reach the source. Check `tidemark ingest "
            f"status` and the ingest log; if heartbeats are refused, grant EXECUTE on "
            f"pg_logical_emit_message to the source's setup role.")
    if f.judged_s is None:
        return UNKNOWN, "no_sample", (
            f"no sample in the last {window} yet (ingestion just started?); the next heartbeat "
            f"brings one.")
    if f.judged_s > limit:
        return MISSED, "slow", (
            f"{label} over the last {window} is {f.judged_s:g} s, over the objective "
            f"{limit:g} s ({f.judged_samples} samples): ingestion or the live view's "
            f"maintenance is too slow. Check `tidemark ingest status` (lag, rows/s) and the "
            f"landing server's load.")
    return OK, "within", (f"{label} over the last {window} is {f.judged_s:g} s (objective "
                          f"{limit:g} s, {f.judged_samples} samples).")
