"""Errors of the reconciliation part; each says what is wrong, where, and what to do."""

from __future__ import annotations

from tidemark.errors import TidemarkError


class ReconciliationConfigError(TidemarkError):
    """``dbt_project/reconciliation.yml`` does not describe usable live view / mart pairs."""


class NothingToRetryError(TidemarkError):
    """``tidemark reconcile retry`` named no day whose correction runs failed."""
