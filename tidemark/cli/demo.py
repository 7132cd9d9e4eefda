"""``tidemark demo``: the demo source "shop" (schema, seed, load)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.demo.catalog import (
    DEFAULT_DUPLICATE_SHARE,
    DEFAULT_LATE_SHARE,
    DEFAULT_MALFORMED_SHARE,
)
from tidemark.demo.load import LoadStats, run_load
from tidemark.demo.schema import apply_schema
from tidemark.demo.seed import seed_history
from tidemark.settings import load_settings
from tidemark.stack.databases import ensure_databases

app = typer.Typer(help="The demo source 'shop': a grocery-delivery OLTP database.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Generator seed: same seed, same rows.")]


@app.command()
def schema() -> None:
    """Create the demo tables in the source database (idempotent)."""
    from tidemark.demo.source import register_demo_source

    settings = load_settings()
    dbs = ensure_databases(settings)
    apply_schema(dbs.source)
    register_demo_source(dbs, settings)
    console.print("Demo schema is in place; it is registered as source \"shop\" "
                  "(`tidemark source list`).")


@app.command()
def seed(
    days: Annotated[int, typer.Option(help="Days of history, ending now.")] = 7,
    orders_per_day: Annotated[int, typer.Option(help="Orders per day.")] = 2000,
    seed_value: SeedOpt = 42,
    json_out: JsonOpt = False,
) -> None:
    """Write N days of consistent order history (refuses if the demo tables hold data)."""
    dbs = ensure_databases(load_settings())
    if json_out:
        stats = seed_history(dbs.source, days, orders_per_day, seed_value)
        emit_json(stats.as_dict())
        return
    with Progress(TextColumn("seeding"), BarColumn(), TextColumn("{task.completed}/{task.total}"
                                                                  " days"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("seed", total=days)
        stats = seed_history(dbs.source, days, orders_per_day, seed_value,
                             progress=lambda done, _total: bar.update(task, completed=done))
    console.print(f"Seeded {days} days ({stats.start:%Y-%m-%d %H:%M} to "
                  f"{stats.end:%Y-%m-%d %H:%M} UTC) in {stats.elapsed_s:.1f} s.", highlight=False)
    emit_table("rows written", ["table", "rows"],
               [(table, f"{rows:,}") for table, rows in stats.rows.items()])


@app.command()
def load(
    rate: Annotated[float, typer.Option(help="Row changes per second.")] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds to run (Ctrl-C stops earlier).")
                        ] = 60.0,
    seed_value: SeedOpt = 42,
    late_share: Annotated[float, typer.Option(
        help="Share of outbox events whose event time is minutes to hours late.")
                          ] = DEFAULT_LATE_SHARE,
    duplicate_share: Annotated[float, typer.Option(
        help="Share of outbox events emitted twice (same event_id).")
                               ] = DEFAULT_DUPLICATE_SHARE,
    malformed_share: Annotated[float, typer.Option(
        help="Share of outbox events whose payload breaks its contract.")
                               ] = DEFAULT_MALFORMED_SHARE,
    json_out: JsonOpt = False,
) -> None:
    """Run the OLTP workload: orders, payments, deliveries, deletes and outbox events."""
    dbs = ensure_databases(load_settings())
    kwargs = {"seed": seed_value, "late_share": late_share, "duplicate_share": duplicate_share,
              "malformed_share": malformed_share}
    if json_out:
        emit_json(run_load(dbs.source, rate, duration, **kwargs).as_dict())
        return
    with Progress(TextColumn("load"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("load", total=duration, status="starting")

        def show(stats: LoadStats) -> None:
            bar.update(task, completed=min(stats.elapsed_s, duration),
                       status=f"{stats.changes:,} changes, {stats.achieved_rate:,.0f}/s "
                              f"(asked {rate:,.0f}/s)")

        stats = run_load(dbs.source, rate, duration, progress=show, **kwargs)
    ended = "stopped early" if stats.stopped else "done"
    console.print(f"Load {ended}: {stats.changes:,} row changes in {stats.elapsed_s:.1f} s = "
                  f"{stats.achieved_rate:,.0f}/s (asked {rate:,.0f}/s).", highlight=False)
    emit_table("what the load did", ["count", "value"],
               [(name, f"{value:,}") for name, value in stats.as_dict().items()
                if isinstance(value, int) and not isinstance(value, bool)
                and name not in ("seed", "changes")])
