"""Dagster definitions of Tidemark, split per part.

``ingestion`` (observed CDC tables and their jobs), ``live_views`` (deploy + verify),
``batch`` (dbt assets, nightly schedule), ``checks`` (dbt source freshness), ``freshness``
(mart and ingestion freshness), ``reconciliation`` (live vs truth per day, corrections),
``serving`` (final / provisional views). ``orchestration.definitions:defs`` merges them.
Nothing here connects to a database while the definitions load.
"""
