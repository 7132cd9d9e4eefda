"""Snapshots of the registered sources while `tidemark up` serves: a line on its output every
:data:`EVERY_S` seconds while one runs (rows, tables, rows/s, ETA), and one when it ends.

`tidemark up` starts the stream of every registered source (`tidemark ingest run`, whose log is
``ingest.log``) once the demo is built; a source's first snapshot runs then, after "Tidemark is
up". Before, its output said nothing of it: the 10 M rows of ``pgbench -s 100`` were copied in
71 s without a word there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ingestion.progress import read_progress

log = logging.getLogger("tidemark.up")

EVERY_S = 10.0


def eta_text(seconds: float | None) -> str:
    """``m:ss``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def progress_line(source: str, p: dict[str, Any]) -> str:
    """One line of a snapshot as :func:`ingestion.progress.read_progress` returns it."""
    rows = f"{p['rows']:,}" + (f"/{p['rows_estimate']:,}" if p["rows_estimate"] else "")
    head = (f"snapshot of {source}: {rows} rows, {p['tables_done']}/{p['tables_total']} tables, "
            f"{p['rows_per_s']:,.0f} rows/s")
    if p["state"] == "running":
        if p["finishing"]:
            return f"{head}, finishing {', '.join(p['finishing'])} (checks, index builds)"
        return f"{head}, ETA {eta_text(p['eta_s'])}"
    return f"{head}: {p['state']} after {p['elapsed_s']:,.1f} s"


class SnapshotWatch:
    """Says where the running snapshots of landing's sources stand, at most every ``every_s``.

    Args:
        landing_url: landing URL (``tidemark.snapshot_progress`` is read).
        say: prints a line for the person.
        every_s: seconds between two looks.
    """

    def __init__(self, landing_url: str, say: Callable[[str], None],
                 every_s: float = EVERY_S) -> None:
        self.landing_url = landing_url
        self.say = say
        self.every_s = every_s
        self.next_at = 0.0
        self.running: set[str] = set()

    def poll(self) -> None:
        """Look, if ``every_s`` passed since the last look; a landing that does not answer is
        looked at again next time."""
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        try:
            with psycopg.connect(self.landing_url, autocommit=True, connect_timeout=5) as conn:
                if conn.execute("select to_regclass('tidemark.snapshot_progress')"
                                ).fetchone()[0] is None:
                    return
                sources = [r[0] for r in conn.execute(
                    "select distinct source from tidemark.snapshot_progress where state in"
                    " ('pending', 'copying', 'finishing', 'copied') or source = any(%s)"
                    " order by 1", (sorted(self.running),))]
                states = {s: read_progress(conn, s) for s in sources}
        except psycopg.Error as exc:
            log.debug("snapshot progress not read: %s", exc)
            return
        for source, p in states.items():
            if p is None:
                continue
            if p["state"] == "running":
                self.running.add(source)
                self.say(progress_line(source, p))
            elif source in self.running:
                self.running.discard(source)
                self.say(progress_line(source, p))
