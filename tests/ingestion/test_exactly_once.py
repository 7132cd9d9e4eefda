"""Crash test: ``tidemark ingest run`` killed with SIGKILL at random moments under load, restarted
each time; at the end mirror == source and every source change is in the changelog exactly once.
A final SIGTERM finishes the transaction in hand and exits 0."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg

from ingestion import catch_up
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog


class Writer(threading.Thread):
    """Small OLTP load: each transaction inserts a row, updates the previous, sometimes deletes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.counts: Counter = Counter()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                with conn.transaction():
                    c = conn.execute("insert into items values (%s, 0, repeat('p', 50))", (i,))
                    u = conn.execute("update items set v = v + 1 where id = %s", (i - 1,))
                    d = conn.execute("delete from items where id = %s and %s %% 3 = 0",
                                     (i - 2, i))
                self.counts.update(c=c.rowcount, u=u.rowcount, d=d.rowcount)
                time.sleep(0.002)


def start_ingest(p: Pair, home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TIDEMARK_SOURCE_URL": p.src, "TIDEMARK_LANDING_URL": p.land,
           "TIDEMARK_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli.main", "ingest", "run", "--source", p.source,
         "--no-contracts"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def checkpoint(p: Pair) -> str | None:
    with psycopg.connect(p.land) as conn:
        try:
            row = conn.execute("select lsn::text from tidemark.checkpoints where source = %s",
                               (p.source,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(pair: Pair, tmp_path: Path
                                                                ) -> None:
    pair.src_exec("create table items (id bigint primary key, v int not null, pad text)",
                  "insert into items select g, 0, 'seed' from generate_series(-999, 0) g")
    catch_up(pair.src, pair.land, pair.source)  # snapshot first: every later change is counted
    rng = random.Random(7)
    log = tmp_path / "ingest.log"
    writer = Writer(pair.src)
    writer.start()
    kills = 0
    try:
        for _ in range(6):
            proc = start_ingest(pair, tmp_path / "home", log)
            time.sleep(rng.uniform(1.2, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
    finally:
        writer.stop.set()
        writer.join()
    assert kills >= 5
    assert sum(writer.counts.values()) > 100, "the load generator made too few changes"
    with psycopg.connect(pair.src, autocommit=True) as conn:
        target = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    proc = start_ingest(pair, tmp_path / "home", log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ck = checkpoint(pair)
            if ck is not None:
                with psycopg.connect(pair.src) as conn:
                    done = conn.execute("select %s::pg_lsn >= %s::pg_lsn", (ck, target))
                    if done.fetchone()[0]:
                        break
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_mirror_equals(pair, "items")
    rows = changelog(pair.land, pair.source, "items", "_op, _commit_lsn, _seq")
    assert len(rows) == len({r[1:] for r in rows}), "a change landed twice"
    ops = Counter(r[0] for r in rows)
    assert ops["r"] == 1000
    assert {k: ops[k] for k in "cud"} == {k: writer.counts[k] for k in "cud"}
