"""Progress of long steps: reported by whoever does the work, shown by whoever watches.

A process-wide hook with no dependencies. The parts doing long work (the demo seed, the landing
catch-up op, Dagster runs) call :func:`report`; by default nothing listens and a report costs a
list lookup. ``tidemark up`` listens (:func:`listening`) and shows rich progress bars and writes
``$TIDEMARK_HOME/up-progress.json`` for ``tidemark status``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One report.

    Attributes:
        phase: what is in progress (``seed``, ``landing``, ``build``...).
        done: units done so far.
        total: units in all, or None when unknown.
        unit: what is counted (``rows``, ``days``, ``steps``).
        detail: the current item (a table, a step), for the person watching.
    """

    phase: str
    done: float
    total: float | None = None
    unit: str = "rows"
    detail: str = ""


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []


def report(phase: str, done: float, total: float | None = None, unit: str = "rows",
           detail: str = "") -> None:
    """Tell the listeners (if any) how far ``phase`` is."""
    if _listeners:
        event = Progress(phase, done, total, unit, detail)
        for listener in list(_listeners):
            listener(event)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener`` with every report made in this process during the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
