"""How much changelog a keyless table keeps while one dead letter of it waits for ever.

``tidemark ingest prune`` stops, on a keyless table with waiting letters, before the table's last
truncate or resync (a keyless letter's replay counts its row's copies in the changelog since
then, round 38); round 39 deletes, after that point, inserts and removals of equal rows that
cancel out. This measures what is kept: a ``pgbench_history``-shaped keyless table (``mtime
timestamptz``, ``filler text``: the contract's types) under a contract, one row that breaks it
(its letter is never replayed), then ``--txns`` source transactions that each insert ``--rows``
rows and delete as many of the oldest (the table stays at ``--table-rows`` rows: steady
writes). After a catch-up, ``prune --older-than 0`` (everything old) with the letter waiting,
then again after the letter is purged. Prints the changelog's rows and bytes (heap, TOAST and
indexes, after ``VACUUM FULL``: what the rows take) at each point, against the mirror's. Last
line: JSON. Runs against the tree on PYTHONPATH (A/B: the same script, PYTHONPATH at main).

    nice -n 19 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \\
        python bench/keyless_letter_retention.py --txns 400 --rows 1000 --table-rows 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import purge_dead_letters
from ingestion.retention import prune_changelog
from ingestion.tables import load_tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

SOURCE = "kl"
CONTRACT = """version: 1
freshness: {warn_after: 15m, error_after: 1h}
compatibility: backward
allowed_lateness: 1h
primary_key: []
columns:
  tid: {type: integer}
  bid: {type: integer}
  aid: {type: integer}
  delta: {type: integer, min: -5000, max: 5000}
  mtime: {type: timestamptz}
  filler: {type: text, nullable: true}
"""
ROWS = ("insert into h select i %% 10, i %% 100, i, (i %% 10001) - 5000,"
        " timestamptz '2026-12-01' + i * interval '1 ms', null"
        " from generate_series(%s::int, %s::int) i")


def sizes(land: str) -> dict[str, int]:
    """Rows and bytes of the table's changelog and mirror."""
    with psycopg.connect(land) as conn:
        info = load_tables(conn, SOURCE)["h"]
        out = {}
        for name, table in (("changelog", info.changelog), ("mirror", info.mirror)):
            rows, size = conn.execute(sql.SQL(
                "select (select count(*) from {t}), pg_total_relation_size(%s::regclass)"
            ).format(t=table), (table.as_string(conn),)).fetchone()
            out[f"{name}_rows"], out[f"{name}_bytes"] = rows, size
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txns", type=int, default=400)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--table-rows", type=int, default=20_000)
    args = parser.parse_args()
    report: dict[str, object] = vars(args).copy()
    with bench_server() as (src, land), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / SOURCE
        folder.mkdir()
        (folder / "h.yml").write_text(CONTRACT)
        contracts = load_contracts(Path(tmp))
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table h (tid int, bid int, aid int, delta int,"
                         " mtime timestamptz, filler text)")
            conn.execute("alter table h replica identity full")
            conn.execute(ROWS, (1, args.table_rows))
        catch_up(src, land, SOURCE, contracts=contracts)
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("insert into h values (0, 0, 0, 99999, now(), null)")  # the letter
            started = time.perf_counter()
            top = args.table_rows
            for _ in range(args.txns):
                with conn.transaction():
                    conn.execute(ROWS, (top + 1, top + args.rows))
                    conn.execute("delete from h where aid between %s and %s",
                                 (top - args.table_rows + 1, top - args.table_rows + args.rows))
                top += args.rows
            report["write_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        catch_up(src, land, SOURCE, contracts=contracts)
        report["catch_up_s"] = round(time.perf_counter() - started, 1)
        report["before_prune"] = sizes(land)
        started = time.perf_counter()
        pruned = prune_changelog(land, SOURCE, timedelta(0))["h"]
        report["prune_s"] = round(time.perf_counter() - started, 1)
        with psycopg.connect(land, autocommit=True) as conn:
            conn.execute("vacuum full " + load_tables(conn, SOURCE)["h"].changelog.as_string(
                conn))
        report["letter_waits"] = {"pruned": pruned.get("deleted"),
                                  "kept_for": pruned.get("kept_for"), **sizes(land)}
        report["purged"] = purge_dead_letters(land, SOURCE, timedelta(0), waiting=True)
        pruned = prune_changelog(land, SOURCE, timedelta(0))["h"]
        with psycopg.connect(land, autocommit=True) as conn:
            conn.execute("vacuum full " + load_tables(conn, SOURCE)["h"].changelog.as_string(
                conn))
        report["letter_purged"] = {"pruned": pruned.get("deleted"), **sizes(land)}
    kept = report["letter_waits"]
    per_row = kept["changelog_bytes"] / max(kept["changelog_rows"], 1)
    report["changelog_bytes_per_row"] = round(per_row, 1)
    print(f"kept while the letter waits: {kept['changelog_rows']:,} changelog rows,"
          f" {kept['changelog_bytes'] / 2**20:.1f} MiB ({per_row:.0f} B a row), against a mirror"
          f" of {kept['mirror_rows']:,} rows ({kept['mirror_bytes'] / 2**20:.1f} MiB)")
    print(json.dumps({"bench": "keyless_letter_retention", **report}))  # last line: JSON


if __name__ == "__main__":
    main()
