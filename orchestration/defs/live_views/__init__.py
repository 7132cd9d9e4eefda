"""Live views in Dagster (``definitions.defs`` merges the assets and their checks)."""
