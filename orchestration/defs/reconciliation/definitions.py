"""Reconciliation and serving in Dagster: checks, the job, sensors, serving views."""

import dagster as dg

from orchestration.defs.reconciliation.assets import serving_views
from orchestration.defs.reconciliation.checks import reconciliation
from orchestration.defs.reconciliation.jobs import reconciliation_job
from orchestration.defs.reconciliation.sensors import (
    reconcile_after_batch,
    reconciliation_corrections,
)

defs = dg.Definitions(assets=[serving_views], asset_checks=[reconciliation],
                      jobs=[reconciliation_job],
                      sensors=[reconciliation_corrections, reconcile_after_batch])
