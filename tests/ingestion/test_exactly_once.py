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
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, drop_slot


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
        [sys.executable, "-m", "tidemark.cli.main", "ingest", "run", "--source", p.source,
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
    pair.register()
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


def count_changes(url: str, slot: str, publication: str) -> Counter:
    """Count every change per (table, op) from an independent pgoutput slot (the oracle)."""
    import select

    import psycopg2
    import psycopg2.extras

    from ingestion.decoder import Commit, Delete, Insert, Relation, Truncate, Update, decode
    with psycopg.connect(url, autocommit=True) as conn:
        end = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    from ingestion.lsn import str_to_lsn
    target = str_to_lsn(str(end))
    repl = psycopg2.connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = repl.cursor()
    cur.start_replication(slot_name=slot, decode=False,
                          options={"proto_version": "1", "publication_names": publication})
    names: dict[int, str] = {}
    counts: Counter = Counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = cur.read_message()
        if msg is None:
            if cur.wal_end >= target:
                break
            select.select([repl], [], [], 0.5)
            cur.send_feedback(reply=True)
            continue
        m = decode(msg.payload)
        if isinstance(m, Relation):
            names[m.oid] = m.name
        elif isinstance(m, (Insert, Update, Delete)):
            counts[(names[m.relid], {Insert: "c", Update: "u", Delete: "d"}[type(m)])] += 1
        elif isinstance(m, Truncate):
            for relid in m.relids:
                counts[(names[relid], "t")] += 1
        elif isinstance(m, Commit) and m.end_lsn >= target:
            break
    repl.close()
    return counts


def test_sigkill_under_demo_load(pair: Pair, tmp_path: Path) -> None:
    from tidemark.demo.load import run_load
    from tidemark.demo.schema import DEMO_TABLES
    from tidemark.demo.seed import seed_history

    seed_history(pair.src, days=1, orders_per_day=100, seed=3)
    catch_up(pair.src, pair.land, pair.source)
    pair.register()
    with psycopg.connect(pair.src, autocommit=True) as conn:
        conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')",
                     (f"verify_{pair.source}",))
    stop = threading.Event()
    load = threading.Thread(target=run_load, args=(pair.src, 400, 60), kwargs={"stop": stop})
    load.start()
    rng = random.Random(11)
    log = tmp_path / "ingest.log"
    try:
        for _ in range(5):
            proc = start_ingest(pair, tmp_path / "home", log)
            time.sleep(rng.uniform(1.5, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        stop.set()
        load.join(30)
    try:
        catch_up(pair.src, pair.land, pair.source)
        expected = count_changes(pair.src, f"verify_{pair.source}", f"tidemark_{pair.source}")
    finally:  # the oracle's walsender may still hold the slot for a moment
        drop_slot(pair.src, f"verify_{pair.source}")
    assert sum(expected.values()) > 200, "the demo load made too few changes"
    landed: Counter = Counter()
    for table in DEMO_TABLES:
        assert_mirror_equals(pair, table)
        rows = changelog(pair.land, pair.source, table, "_op, _commit_lsn, _seq")
        assert len(rows) == len({r[1:] for r in rows}), f"a change of {table} landed twice"
        landed.update((table, r[0]) for r in rows if r[0] != "r")
    assert landed == expected
