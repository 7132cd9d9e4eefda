"""Create the demo source schema ("shop") in a source database."""

from __future__ import annotations

from importlib.resources import files

import psycopg

SCHEMA_SQL = files("orchestration.demo").joinpath("schema.sql")

DEMO_TABLES = ("stores", "customers", "products", "orders", "order_items", "payments",
               "deliveries", "app_events")


def apply_schema(source_dsn: str) -> None:
    """Create the demo tables if they do not exist (idempotent).

    Args:
        source_dsn: URL of the source database, as a role allowed to create tables.
    """
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text())
