"""``tidemark up``: the whole stack on one machine, in the foreground until Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer

from tidemark.cli.output import console
from tidemark.errors import SettingsError
from tidemark.settings import load_settings
from tidemark.stack.up import UpOptions, run_up


def up(
    rate: Annotated[float, typer.Option(help="Demo workload, row changes per second (0: none).")
                    ] = 200.0,
    seed_days: Annotated[int, typer.Option(help="Days of history seeded on first start.")] = 7,
    orders_per_day: Annotated[int, typer.Option(help="Orders per seeded day.")] = 2000,
    duration: Annotated[float | None, typer.Option(
        help="Stop by itself after this many seconds (default: run until Ctrl-C).")] = None,
    keep_db: Annotated[bool, typer.Option(
        help="Leave PostgreSQL running on exit (stop it later with `tidemark db stop`).")
                       ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the demo generator.")] = 42,
    dagster: Annotated[bool, typer.Option(
        help="Run the Dagster UI and daemon (port TIDEMARK_DAGSTER_PORT, default 3000); the "
             "builds are Dagster runs either way.")] = True,
) -> None:
    """Start PostgreSQL, the demo source and its workload, build everything through Dagster,
    and print the psql URL and the Dagster UI."""
    if rate < 0:
        raise SettingsError(f"--rate must be 0 or more changes per second; got {rate:g}.")
    if seed_days < 0 or orders_per_day < 1:
        raise SettingsError("--seed-days must be 0 or more and --orders-per-day at least 1.")
    if duration is not None and duration <= 0:
        raise SettingsError(f"--duration must be a positive number of seconds; got {duration:g}.")
    options = UpOptions(seed_days=seed_days, orders_per_day=orders_per_day, rate=rate,
                        duration_s=duration, keep_db=keep_db, seed=seed, dagster=dagster)
    raise typer.Exit(run_up(load_settings(), options, console))
