"""Reconciliation and serving: live views against the dbt marts, per closed day.

``pairs`` (the pair file), ``compare`` (one pair over a window of days), ``days`` (the outcome
per day in ``tidemark.reconciled_days``), ``serving`` (``serving.<pair>`` views: final where
reconciled, provisional otherwise). Dagster calls this part; it knows nothing of Dagster.
"""
