"""Errors of the Dagster code location (``orchestration.defs``).

Each says what went wrong, where, and what to do about it; they derive from
:class:`tidemark.errors.TidemarkError` so the CLI prints them without a traceback.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError


class DefinitionsError(TidemarkError):
    """The code location cannot be built (missing dbt manifest, bad setting, bad pair file)."""
