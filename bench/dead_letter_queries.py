"""Every dead-letter read of the applier and of the `dlq` commands, at a week of letters.

Seeds, by SQL, ``--letters`` dead letters (a demo letter's size, first seen and committed over
the last 7 days; ``--waiting-share`` of them waiting, the rest resolved) of two tables of source
``h``: ``t`` (keyed, under a contract: its waiting letters) and ``gone`` (its resolved ones).
Then times, with the heap pages of ``tidemark.dead_letters`` each read (load-independent):

- the applier's per-batch lookups of a row's letters by key: a bad row fixed at the source with
  its TOAST value unchanged (:func:`ingestion.side_tables.fill_from_letters`), and a bad key
  change of a row that is a letter only (:func:`ingestion.side_tables.complete_letters`);
- `dlq replay --table gone` (its count of the letters replayed before), `dlq replay --since
  10m`, `dlq list` (a page), `dlq list --all`'s count and the waiting count of `status`;
- the first pass of the declared-index keeper over the landing as seeded (an upgraded landing).

It prints the plans (EXPLAIN ANALYZE, BUFFERS) of the statements behind them, as main and this
branch write them, and ends with one JSON line. Runs against the tree on PYTHONPATH: A/B main
against a branch with the same command.

    flock /work/brief/bench.lock nice -n -10 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \\
        python bench/dead_letter_queries.py --letters 700000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import count_dead_letters, list_dead_letters, replay
from ingestion.landing_indexes import ensure_declared_indexes
from tests.support import await_ended_sessions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server

SOURCE = "h"
CONTRACT = ("version: 1\nfreshness: {warn_after: 15m, error_after: 1h}\n"
            "compatibility: backward\nallowed_lateness: 1h\nprimary_key: [id]\ncolumns:\n"
            "  id: {type: integer}\n  status: {type: text, allowed_values: [a, b]}\n"
            "  big: {type: text, nullable: true}\n")
PLANS = {
    "letter of a key (fill_from_letters, complete_letters)":
        "select d.raw_row ->> 'big' from tidemark.dead_letters d where d.source = 'h' and"
        " d.table_name = 't' and d.replayed_at is null and d.raw_row ? 'big' and"
        " (d.raw_row ->> 'id')::integer = 1000001 order by d.commit_lsn desc, d.seq desc limit 1",
    "replayed before, counted (main's dlq replay --table gone)":
        "select count(*) from tidemark.dead_letters where source = 'h' and table_name = 'gone'"
        " and replayed_at is not null",
    "replayed before, counted (e37: the counts)":
        "select coalesce(sum(resolved), 0) from tidemark.dead_letter_counts where source = 'h'"
        " and table_name = 'gone'",
    "--since 10m, waiting letters (main: clock_timestamp() in the filter)":
        "select id from tidemark.dead_letters d where source = 'h' and coalesce(commit_at,"
        " first_seen_at) >= clock_timestamp() - interval '10 minutes' and replayed_at is null"
        " order by d.commit_lsn, d.seq",
    "--since 10m, waiting letters (e37: a bound cutoff)":
        "select id from tidemark.dead_letters d where source = 'h' and coalesce(commit_at,"
        " first_seen_at) >= now() - interval '10 minutes' and replayed_at is null"
        " order by d.commit_lsn, d.seq",
}


def seed(land: str, letters: int, waiting_share: float) -> None:
    """The letters (see the module's docstring): waiting ones of ``t`` with keys 1,000,001 on,
    resolved ones of ``gone``; every one committed after the stream's changes (the lookups'
    worst case: a backward walk in commit order meets them first)."""
    waiting = int(letters * waiting_share)
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, violations, contract_version, raw_row, commit_at, first_seen_at,"
            " replayed_at, replay_result)"
            " select %(s)s, case when i <= %(w)s then 't' else 'gone' end, lsn, lsn, 0, 'c',"
            " 'status: not one of [a, b]', '[{\"rule\": \"allowed_values\"}]', '1',"
            " jsonb_build_object('id', (1000000 + i)::text, 'status', 'x', 'big',"
            " repeat('b', 500)), ts, ts, case when i > %(w)s then ts end,"
            " case when i > %(w)s then 'superseded' end"
            " from (select i, ('F0/0'::pg_lsn + i * 100) lsn, now() - interval '7 days'"
            " + (i::float8 / %(n)s) * (interval '7 days' - interval '1 hour') ts"
            " from generate_series(1, %(n)s) i) g", {"s": SOURCE, "w": waiting, "n": letters})
        conn.execute("vacuum analyze tidemark.dead_letters")


def letter_pages(land: str) -> int:
    """Heap pages of the letters read so far, every other session ended (tests.support's
    ``letter_heap_reads``, which main's tree has not)."""
    with psycopg.connect(land, autocommit=True) as conn:
        await_ended_sessions(conn)
        return conn.execute("select heap_blks_read + heap_blks_hit from pg_statio_user_tables"
                            " where relid = 'tidemark.dead_letters'::regclass").fetchone()[0]


def measured(land: str, fn: Callable[[], object], repeat: int) -> tuple[float, int, object]:
    """(median seconds, median heap pages of the letters read, the last result) of ``fn``."""
    times, pages, out = [], [], None
    for _ in range(repeat):
        before = letter_pages(land)
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
        pages.append(letter_pages(land) - before)
    return round(statistics.median(times), 4), int(statistics.median(pages)), out


def explain(conn: psycopg.Connection, query: str) -> tuple[str, int]:
    """The plan of ``query`` and the shared buffers it touched."""
    lines = [r[0] for r in conn.execute("explain (analyze, buffers, costs off) " + query)]
    buffers = 0
    for part in lines[0:1] + [x for x in lines if x.strip().startswith("Buffers:")][:1]:
        for word in part.replace(",", " ").split():
            if "=" in word and word.split("=")[0] in ("hit", "read"):
                buffers += int(word.split("=")[1])
    return "\n".join(lines), buffers


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default in (("--letters", int, 700_000), ("--waiting-share", float, 0.3),
                                ("--repeat", int, 3)):
        parser.add_argument(flag, type=kind, default=default)
    return parser.parse_args()


def main() -> None:
    args = _args()
    report: dict[str, object] = {"letters": args.letters, "waiting_share": args.waiting_share}
    with bench_server() as (src, land), tempfile.TemporaryDirectory() as root:
        (Path(root) / SOURCE).mkdir()
        (Path(root) / SOURCE / "t.yml").write_text(CONTRACT)
        contracts = load_contracts(Path(root))
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table t (id int primary key, status text, big text)")
            conn.execute("alter table t alter column big set storage external")
        catch_up(src, land, SOURCE, contracts=contracts)
        with psycopg.connect(land, autocommit=True) as conn:  # a landing older than its indexes
            for (name,) in conn.execute(
                    "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
                    " where i.indrelid = 'tidemark.dead_letters'::regclass and"
                    " obj_description(c.oid) like 'tidemark: waiting dead letters by key%'"
                    ).fetchall():
                conn.execute(f'drop index tidemark."{name}"')
        started = time.perf_counter()
        seed(land, args.letters, args.waiting_share)
        report["seed_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        report["index_pass"] = ensure_declared_indexes(land, SOURCE, contracts)
        report["index_pass_s"] = round(time.perf_counter() - started, 2)
        rows = iter(range(2, 10_000))

        def fix() -> None:  # a bad row (a letter), then fixed with its TOAST value unchanged
            row = next(rows)
            _source(src, f"insert into t values ({row}, 'x', repeat('u', 9000))")
            catch_up(src, land, SOURCE, contracts=contracts)
            _source(src, f"update t set status = 'a' where id = {row}")
            catch_up(src, land, SOURCE, contracts=contracts)

        def move() -> None:  # a bad row, then a bad key change of it (TOAST value unchanged)
            row = next(rows)
            _source(src, f"insert into t values ({row}, 'x', repeat('u', 9000))")
            catch_up(src, land, SOURCE, contracts=contracts)
            _source(src, f"update t set id = {row + 500_000}, status = 'y' where id = {row}")
            catch_up(src, land, SOURCE, contracts=contracts)

        base_s, base_pages, _ = measured(land, lambda: catch_up(src, land, SOURCE,
                                                                contracts=contracts), 1)
        for name, fn in (
                ("fix_bad_row", fix), ("bad_key_change", move),
                ("replay_table_gone", lambda: replay(land, SOURCE, contracts=contracts,
                                                     table="gone")),
                ("replay_since_10m", lambda: replay(land, SOURCE, contracts=contracts,
                                                    since=timedelta(minutes=10))),
                ("list_first_50", lambda: len(list_dead_letters(land, SOURCE, limit=50))),
                ("count_all", lambda: count_dead_letters(land, SOURCE, include_replayed=True)),
                ("count_waiting", lambda: count_dead_letters(land, SOURCE))):
            seconds, pages, out = measured(land, fn, args.repeat)
            report[name] = {"s": seconds, "heap_pages": pages,
                            **({"result": out} if out is not None else {})}
        report["catch_up_alone"] = {"s": base_s, "heap_pages": base_pages}
        plans = {}
        with psycopg.connect(land, autocommit=True) as conn:
            for label, query in PLANS.items():
                try:
                    plan, buffers = explain(conn, query)
                except psycopg.errors.UndefinedColumn:  # main's counts have no resolved
                    plan, buffers = "(not on this tree)", 0
                plans[label] = plan
                report.setdefault("plan_buffers", {})[label] = buffers
    for label, plan in plans.items():
        print(f"--- {label}\n{plan}\n")
    print(json.dumps({"bench": "dead_letter_queries", **report}))  # last line: JSON


def _source(src: str, statement: str) -> None:
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(statement)


if __name__ == "__main__":
    main()
