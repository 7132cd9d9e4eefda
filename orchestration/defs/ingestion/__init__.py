"""Ingestion in Dagster (``definitions.defs`` merges assets, checks, sensors and jobs)."""
