"""Tidemark orchestration: the Dagster code location, the one-machine stack and the CLI."""
