"""What grows with history: dead letters and the changelog at scale, and the commands that
bound them (`dlq list`, `dlq purge`, `dlq replay`'s superseded check, `ingest prune`).

Seeds, by SQL, ``--changelog`` rows of one table's changelog (keys among ``--keys``, landed
over the last 180 days in commit order) and ``--letters`` dead letters (every tenth waiting, the
rest replayed, first seen over the last 60 days; 200 waiting letters spread over the whole
history are of the table, with keys of it: the superseded check's worst case, its range is the
whole changelog). Then prints the plan (EXPLAIN ANALYZE) and time of each statement the
commands run per page or batch, and each command's time. Runs against the tree on PYTHONPATH:
on main (no limit, no purge, no prune) it times what main has (every letter listed, the
per-letter superseded check).

    flock /work/brief/bench.lock nice -n -10 env PATH=/work/venv/bin:$PATH PYTHONPATH=$PWD \\
        python bench/history.py --changelog 5000000 --letters 600000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ingestion import catch_up
from ingestion.lsn import str_to_lsn
from ingestion.tables import load_tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdc_common import bench_server


def seed(src: str, land: str, source: str, rows: int, keys: int, letters: int) -> None:
    """The table, its changelog rows and the dead letters (see the module's docstring)."""
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("create table t (id int primary key, v text)")
    catch_up(src, land, source)
    spread = max(1, letters // 200)  # every spread-th letter is of the table, and waiting
    with psycopg.connect(land, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "insert into {} (id, v, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid, _ingested_at)"
            " select ((i::bigint * 7919) %% %s)::int, 'value ' || i, 'u', lsn, lsn, 0, ts, i,"
            " ts from"
            " (select i, ('1/0'::pg_lsn + i * 100) lsn, now() - interval '180 days'"
            " + (i::float8 / %s) * interval '180 days' ts from generate_series(1, %s) i) g"
        ).format(sql.Identifier("cdc", f"{source}__t")), (keys, rows, rows))
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, first_seen_at, replayed_at, replay_result)"
            " select %s, case when i %% %s = 0 then 't' else 'other' end, lsn, lsn, 1, 'u',"
            " 'region not allowed', jsonb_build_object('id', ((i * 31) %% %s)::text, 'v', 'x'),"
            " now() - interval '60 days' + (i::float8 / %s) * interval '60 days',"
            " case when i %% 10 <> 0 and i %% %s <> 0 then now() end,"
            " case when i %% 10 <> 0 and i %% %s <> 0 then 'superseded' end"
            " from (select i, ('1/0'::pg_lsn + (i::float8 / %s * %s)::bigint * 100) lsn"
            " from generate_series(1, %s) i) g",
            (source, spread, keys, letters, spread, spread, letters, rows, letters))
        conn.execute("vacuum analyze tidemark.dead_letters")
        conn.execute(sql.SQL("vacuum analyze {}").format(sql.Identifier("cdc", f"{source}__t")))


def cli_list(src: str, land: str, source: str) -> float:
    """Seconds `tidemark dlq list --source NAME` takes, its output to /dev/null (a pipe: the
    width of a piped table)."""
    from ingestion.sources import SourceSpec, save_source

    save_source(land, SourceSpec(source, url=src))
    env = {**os.environ, "TIDEMARK_SOURCE_URL": src, "TIDEMARK_LANDING_URL": land}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tidemark.cli.main", "dlq", "list", "--source",
                    source], env=env, stdout=subprocess.DEVNULL, check=True, timeout=3600)
    return time.perf_counter() - started


def explain(conn: psycopg.Connection, query: sql.Composable | str, params: tuple) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a statement, rolled back."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute(sql.SQL("explain (analyze, buffers, costs off) ") + (
            sql.SQL(query) if isinstance(query, str) else query), params).fetchall()
    return "\n".join(r[0] for r in rows)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changelog", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--letters", type=int, default=600_000)
    args = parser.parse_args()
    import ingestion.dead_letters as dl

    report: dict[str, object] = {"changelog_rows": args.changelog, "letters": args.letters}
    with bench_server() as (src, land):
        started = time.perf_counter()
        seed(src, land, "h", args.changelog, args.keys, args.letters)
        report["seed_s"] = round(time.perf_counter() - started, 1)
        on_main = not hasattr(dl, "purge_dead_letters")
        report["cli_dlq_list_s"] = cli_list(src, land, "h")
        report["tree"] = "main" if on_main else "branch"
        if on_main:
            report["list_all_s"], letters = timed(dl.list_dead_letters, land, "h")
            report["listed"] = len(letters)
        else:
            report["list_100_s"], letters = timed(dl.list_dead_letters, land, "h", limit=100)
            report["count_s"], report["waiting"] = timed(dl.count_dead_letters, land, "h")
        with psycopg.connect(land, autocommit=True) as conn:
            info = load_tables(conn, "h")["t"]
            ids = [r[0] for r in conn.execute(
                "select id from tidemark.dead_letters where table_name = 't' and"
                " replayed_at is null order by id")]
            if on_main:  # its check, one letter at a time, as its replay runs it
                started = time.perf_counter()
                for lid in ids:
                    raw = conn.execute("select raw_row, commit_lsn::text, seq from"
                                       " tidemark.dead_letters where id = %s", (lid,)
                                       ).fetchone()
                    dl._superseded(conn, info, *raw)
                report["superseded_200_letters_s"] = time.perf_counter() - started
            else:
                plans = report.setdefault("plans", {})
                plans["dlq list"] = explain(conn, sql.SQL(
                    "select id from tidemark.dead_letters where source = 'h' and replayed_at"
                    " is null order by first_seen_at, id limit 100"), ())
                # the whole history, and a recent window (the last 10% of the changelog)
                for label, some in (("200 letters", ids), ("20 recent letters", ids[-20:])):
                    oldest = conn.execute(
                        "select min(commit_lsn)::text from tidemark.dead_letters where"
                        " id = any(%s)", (some,)).fetchone()[0]
                    plans[f"superseded ({label})"] = explain(
                        conn, *dl.superseded_query(info, some, str_to_lsn(oldest)))
                plans["dlq purge batch"] = explain(conn, sql.SQL(
                    "delete from tidemark.dead_letters where id = any(array(select id from"
                    " tidemark.dead_letters where source = 'h' and first_seen_at < now() -"
                    " interval '30 days' and (first_seen_at, id) > ('-infinity', 0) and"
                    " replayed_at is not null order by first_seen_at, id limit 10000))"
                    " returning first_seen_at, id"), ())
                import ingestion.retention as rt

                cutoff = conn.execute("select now() - interval '90 days'").fetchone()[0]
                plans["prune boundary"] = explain(conn, rt._BOUNDARY.format(info.changelog),
                                                  (cutoff,))
                bound = conn.execute(rt._BOUNDARY.format(info.changelog),
                                     (cutoff,)).fetchone()
                where, params = rt._range(None, bound)
                plans["prune batch end"] = explain(conn, rt._BATCH_END.format(
                    info.changelog, where), (*params, rt.BATCH_ROWS - 1))
                end = conn.execute(rt._BATCH_END.format(info.changelog, where),
                                   (*params, rt.BATCH_ROWS - 1)).fetchone()
                if end is not None:
                    where = sql.SQL("{} and (_commit_lsn, _seq) <= (%s::pg_lsn, %s)"
                                    ).format(where)
                    params = (*params, *end)
                plans["prune batch delete"] = explain(
                    conn, rt._DELETE.format(info.changelog, where), params)
        if not on_main:  # main: 200 letters x one changelog scan each
            report["replay_200_s"], report["replay"] = timed(dl.replay, land, "h")
            report["purge_30d_s"], report["purged"] = timed(
                dl.purge_dead_letters, land, "h", timedelta(days=30))
            from ingestion.retention import prune_changelog

            report["prune_90d_s"], report["pruned"] = timed(
                prune_changelog, land, "h", timedelta(days=90))
    for key, value in report.items():
        if isinstance(value, float):
            report[key] = round(value, 3)
    plans = report.pop("plans", {})
    for name, plan in plans.items():
        print(f"--- {name}\n{plan}\n")
    print(json.dumps({"bench": "history", **report}, default=str))  # last line: JSON


if __name__ == "__main__":
    main()
