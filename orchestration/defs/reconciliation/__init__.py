"""Reconciliation and serving in Dagster (``definitions.defs`` merges them)."""
