"""Dagster definitions of Tidemark, split per system (``defs/<system>/``).

Each system holds ``assets``, ``checks``, ``sensors``, ``schedules``, ``jobs`` modules as it
needs them and a ``definitions`` module that gathers them: ``ingestion`` (observed CDC tables,
their checks and jobs), ``live_views`` (deploy + verify), ``dbt`` (dbt assets, batch jobs,
schedule, source and mart freshness), ``reconciliation`` (live vs truth per day, corrections,
serving views). ``orchestration.definitions:defs`` merges them. Nothing here connects to a
database while the definitions load.
"""
