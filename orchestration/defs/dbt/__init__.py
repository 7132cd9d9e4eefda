"""dbt in Dagster (``definitions.defs`` merges assets, checks, jobs, schedules, sensors)."""
