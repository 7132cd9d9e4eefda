"""The ``reconciliation`` job: every reconciliation check."""

import dagster as dg

from orchestration.defs.keys import CHECK_RUN_TAGS
from orchestration.defs.reconciliation.checks import reconciliation
from tidemark.reconciliation.days import RECONCILIATION_JOB

reconciliation_job = dg.define_asset_job(
    RECONCILIATION_JOB, tags=CHECK_RUN_TAGS, selection=dg.AssetSelection.checks(reconciliation),
    description="Compare every live view with its mart for each closed day.")
