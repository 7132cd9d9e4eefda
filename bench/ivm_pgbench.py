"""Single-row UPDATE latency under pgbench: no view, the live view, and a hand-written ideal.

Why pgbench: the Python benchmark (``ivm_vs_refresh.py``) times each UPDATE from a Python
client, whose own overhead (tens of µs per statement, with the interpreter's jitter) is in
every sample; pgbench runs prepared statements from C, back to back, so its average latency
holds the server's work and little else, and is steady to a few µs on a quiet machine.

Workload: ``bench/ivm_vs_refresh.py``'s tables (:func:`ivm_vs_refresh.load`) and views
(``--view inner_join|left_join``); pgbench runs ``update bench.orders set amount = amount +
0.01 where order_id = :id`` (a random order, each its own transaction) from one client for
``--seconds`` per case. The cases alternate in ``--rounds`` rounds on one server, by enabling
only the case's triggers (the others are disabled: ``none`` has none), and each case's median
is reported with its ratio to ``none``:

* ``none``: no trigger;
* ``live``: the view deployed by ``deploy_embedded``;
* ``ideal`` (``--ideal``, left_join only): a hand-written maintenance with the engine's
  architecture — a statement trigger logging changed rows, a deferred constraint trigger fired
  by the transaction's first log row, and at commit a lock row update and one ``DELETE ...
  RETURNING`` of the log upserted into a state of the five aggregates. It is not exact (no
  NaN/NULL bookkeeping, no group deletes, no TRUNCATE, no other views): a floor to compare
  the engine's overheads with, not an alternative.

Usage: python bench/ivm_pgbench.py [--view inner_join|left_join] [--ideal] [--rows N]
       [--seconds S] [--rounds R]. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ivm_vs_refresh import VIEWS, load, server

from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text
from tidemark.stack.embedded import server_binary, server_env

# The hand-written floor of bench/ivm_vs_refresh.py's left_join view (schema "ideal").
IDEAL = """
create schema ideal;
create table ideal.log (tx xid8 default pg_current_xact_id(), sign int,
  first boolean default false, order_id bigint, store_id int, amount numeric(12,2),
  status text, placed_at timestamptz);
create index on ideal.log (tx);
create table ideal.lk (name text primary key, seq bigint);
insert into ideal.lk values ('v', 0);
create table ideal.st (store_id int, order_date date, cnt bigint, s1 numeric, n2 bigint,
  s3 numeric, n4 bigint);
create unique index on ideal.st (store_id, order_date);
insert into ideal.st select o.store_id, (o.placed_at at time zone 'UTC')::date, count(*),
  sum(o.amount), count(p.payment_id), sum(p.amount), count(*) filter (where p.payment_id is null)
  from bench.orders o left join bench.payments p on p.order_id = o.order_id
  where o.status <> 'cancelled' group by 1, 2;
create function ideal.apply() returns trigger language plpgsql
  set search_path = pg_catalog, pg_temp as $$begin
  update ideal.lk set seq = seq + 1 where name = 'v';
  with d as materialized (delete from ideal.log where tx = pg_current_xact_id()
    returning sign, order_id, store_id, amount, status, placed_at)
  insert into ideal.st as s select o.store_id, (o.placed_at at time zone 'UTC')::date,
    sum(o.sign), sum(o.sign * o.amount),
    sum(case when p.payment_id is not null then o.sign else 0 end),
    coalesce(sum(o.sign * p.amount), 0),
    sum(case when p.payment_id is null then o.sign else 0 end)
    from d o left join bench.payments p on p.order_id = o.order_id
    where o.status <> 'cancelled' group by 1, 2
    on conflict (store_id, order_date) do update set cnt = s.cnt + excluded.cnt,
      s1 = s.s1 + excluded.s1, n2 = s.n2 + excluded.n2, s3 = s.s3 + excluded.s3,
      n4 = s.n4 + excluded.n4;
  return null; end$$;
create constraint trigger ideal_apply after insert on ideal.log deferrable initially deferred
  for each row when (new.first) execute function ideal.apply();
create function ideal.log() returns trigger language plpgsql as $$begin
  insert into ideal.log (sign, first, order_id, store_id, amount, status, placed_at)
    select -1, true, o.* from o join n using (order_id)
     where (o.amount, o.store_id, o.status, o.placed_at)
       is distinct from (n.amount, n.store_id, n.status, n.placed_at)
    union all select 1, false, n.* from o join n using (order_id)
     where (o.amount, o.store_id, o.status, o.placed_at)
       is distinct from (n.amount, n.store_id, n.status, n.placed_at);
  return null; end$$;
create trigger ideal_log after update on bench.orders referencing old table as o
  new table as n for each statement execute function ideal.log();
"""


def _triggers(conn: psycopg.Connection) -> dict[str, list[tuple[str, str]]]:
    """The user triggers on the bench tables: (table, trigger) per case."""
    rows = conn.execute(
        "select c.oid::regclass::text, t.tgname from pg_trigger t join pg_class c "
        "on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'bench' and not t.tgisinternal").fetchall()
    cases: dict[str, list[tuple[str, str]]] = {"live": [], "ideal": []}
    for table, name in rows:
        cases["ideal" if name.startswith("ideal_") else "live"].append((table, name))
    return cases


def _enable(conn: psycopg.Connection, case: str) -> None:
    """Enable exactly the triggers of ``case`` on the bench tables."""
    for owner, triggers in _triggers(conn).items():
        for table, name in triggers:
            action = "enable" if owner == case else "disable"
            conn.execute(f'alter table {table} {action} trigger "{name}"')


def latency_us(url: str, script: Path, seconds: int) -> float:
    """pgbench's average latency (µs) of ``script`` from one client for ``seconds``."""
    out = subprocess.run([str(server_binary("pgbench")), "-n", "-c1", f"-T{seconds}",
                          "-Mprepared", "-f", str(script), url],
                         capture_output=True, text=True, env=server_env(), check=False)
    found = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    if found is None:
        raise RuntimeError(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    return float(found.group(1)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", choices=sorted(VIEWS), default="left_join")
    parser.add_argument("--ideal", action="store_true", help="also the hand-written floor")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=6, help="pgbench run per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.ideal and args.view != "left_join":
        parser.error("--ideal is written for --view left_join")
    cases = ["none", "live", *(["ideal"] if args.ideal else [])]
    runs: dict[str, list[float]] = {case: [] for case in cases}
    with server() as url, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(url, autocommit=True) as conn:
            load(conn, args.rows, payments=args.view == "left_join")
            if args.ideal:
                conn.execute(IDEAL)
        deploy_embedded(url, [parse_view_text("bench_view", VIEWS[args.view],
                                              "bench_view.sql")])
        script = Path(tmp) / "update.sql"
        script.write_text(f"\\set id random(1, {args.rows})\n"
                          "update bench.orders set amount = amount + 0.01 where order_id = :id;\n")
        for _ in range(args.rounds):
            for case in cases:
                with psycopg.connect(url, autocommit=True) as conn:
                    _enable(conn, case)
                    conn.execute("vacuum bench.orders")
                runs[case].append(latency_us(url, script, args.seconds))
    medians = {case: statistics.median(v) for case, v in runs.items()}
    for case in cases:
        print(f"{case:6s} latency median {medians[case]:7.1f} µs  ratio "
              f"{medians[case] / medians['none']:.2f}  runs {[round(x, 1) for x in runs[case]]}")
    print(json.dumps({"view": args.view, "rows": args.rows, "seconds": args.seconds,
                      "latency_us": {c: round(m, 1) for c, m in medians.items()},
                      "ratio": {c: round(m / medians["none"], 3) for c, m in medians.items()},
                      "runs_us": runs}))


if __name__ == "__main__":
    main()
