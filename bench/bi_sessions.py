"""A BI session holding a live view open while that view is redeployed: does ingestion stall?

On a running stack (``tidemark up``; settings from the environment, ``TIDEMARK_HOME``...), with
the demo's load generator writing: a reader (``application_name`` 'bench-bi-tab') runs
``select * from live.<view>`` in a transaction and idles; ``--hold`` seconds later it commits.
Meanwhile a thread redeploys ``<view>`` changed (its description line), and every
``--every`` seconds this samples ``ingestion.status`` of the demo source: lag and seconds since
the last apply. Printed: the samples, then one JSON line (max/mean lag while held, deploy time,
deploy outcome). Run it once per tree with that tree on PYTHONPATH (the deploy is what differs).

Usage: python bench/bi_sessions.py [--view daily_store_revenue] [--hold 30] [--every 1]
       [--read shop.orders]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

import ingestion
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import load_views, parse_view_text
from tidemark.settings import load_settings
from tidemark.stack.databases import locate_databases


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--view", default="daily_store_revenue")
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--read", default=None, help="what the reader reads (schema.table; "
                        "default live.<view>), e.g. shop.orders: a base table of the view")
    args = parser.parse_args()
    dbs = locate_databases(load_settings())
    dsn = dbs.landing_app  # as `tidemark up` deploys (the views' owner)
    shipped = {v.name: v for v in load_views(None)}[args.view]
    text = f"-- bench {time.time()}\n{shipped.text}"
    outcome: dict[str, object] = {}

    def redeploy() -> None:
        t0 = time.monotonic()
        try:
            view = parse_view_text(args.view, text, Path(tempfile.gettempdir()) / "v.sql")
            outcome["action"] = deploy_embedded(dsn, [view])[0].action
        except Exception as exc:  # reported in the JSON line, not raised
            outcome["action"] = f"error: {str(exc)[:200]}"
        outcome["deploy_s"] = round(time.monotonic() - t0, 2)

    samples: list[tuple[float, float | None, float | None]] = []
    with psycopg.connect(dsn, application_name="bench-bi-tab") as reader:
        reader.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(*(args.read or f"live.{args.view}").split(".", 1)))).fetchall()
        start = time.monotonic()
        worker = threading.Thread(target=redeploy)
        worker.start()
        while time.monotonic() - start < args.hold:
            s = ingestion.status(dbs.source, dbs.landing, "shop")
            samples.append((round(time.monotonic() - start, 1), s.get("lag_seconds"),
                            s.get("seconds_since_last_apply")))
            print(samples[-1], flush=True)
            time.sleep(args.every)
    worker.join()
    lags = [lag for _, lag, _ in samples if lag is not None]
    idle = [i for _, _, i in samples if i is not None]
    print(json.dumps({"view": args.view, "read": args.read or f"live.{args.view}",
                      "hold_s": args.hold, "samples": len(samples),
                      "max_lag_s": max(lags, default=None),
                      "mean_lag_s": round(statistics.mean(lags), 2) if lags else None,
                      "max_since_last_apply_s": max(idle, default=None), **outcome}))


if __name__ == "__main__":
    try:
        main()
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"bench/bi_sessions.py measures a running stack and could not reach "
                         f"its landing database ({first}). Start one with `tidemark up` (the "
                         f"same TIDEMARK_HOME / TIDEMARK_PG_PORT in this shell), let the demo "
                         f"load run, then run this again.") from None
