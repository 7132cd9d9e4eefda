"""The ``tidemark`` resource: where the databases are, resolved when a run starts.

Every URL may be given explicitly (tests point them at their own databases); an unset URL or
threshold is taken from the settings (:func:`tidemark.settings.load_settings` and
``locate_databases``) when first used, never while the definitions load, so loading the code
location never connects to a database.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import psycopg

from orchestration.defs.errors import DefinitionsError
from tidemark.session_env import unpinned
from tidemark.settings import Settings, load_settings
from tidemark.stack.dbt import dbt_child_executable, dbt_connection_env, environment


@dataclass(frozen=True)
class Urls:
    """The resolved connection URLs a run uses.

    Attributes:
        source: source admin URL (publication, heartbeats, resync setup).
        source_ingest: source URL the replication stream reads with.
        landing: landing admin URL.
        landing_app: landing URL that writes (live views, reconciliation).
        landing_dbt: landing URL dbt builds with (``tidemark_dbt`` when embedded).
    """

    source: str
    source_ingest: str
    landing: str
    landing_app: str
    landing_dbt: str


class TidemarkResource(dg.ConfigurableResource):
    """Connections and thresholds of the Tidemark stack (unset: from the settings).

    Attributes:
        source_url: source admin URL.
        source_ingest_url: source replication URL.
        landing_url: landing admin URL.
        landing_app_url: landing URL for the platform writes.
        landing_dbt_url: landing URL for dbt (unset: the settings', or with explicit URLs
            ``landing_app_url``).
        live_target: ``embedded`` or ``materialize`` (``TIDEMARK_LIVE_TARGET``).
        materialize_url: Materialize URL (``TIDEMARK_MATERIALIZE_URL``).
        lag_warn_s: ingestion lag above which the lag check warns.
        lag_error_s: ingestion lag above which the lag check fails.
        materialize_lag_s: largest Materialize lag the live view check accepts.
        reconcile_days: how many closed days back reconciliation compares.
    """

    source_url: str | None = None
    source_ingest_url: str | None = None
    landing_url: str | None = None
    landing_app_url: str | None = None
    landing_dbt_url: str | None = None
    live_target: str | None = None
    materialize_url: str | None = None
    lag_warn_s: float | None = None
    lag_error_s: float | None = None
    materialize_lag_s: float | None = None
    reconcile_days: int | None = None

    def settings(self) -> Settings:
        """The settings of this process (read from the environment)."""
        return load_settings()

    def urls(self) -> Urls:
        """The URLs to use: explicit ones, else those of the settings."""
        explicit = (self.source_url, self.source_ingest_url, self.landing_url,
                    self.landing_app_url)
        if all(explicit):
            return Urls(*explicit, landing_dbt=self.landing_dbt_url  # type: ignore[arg-type]
                        or self.landing_app_url)
        from tidemark.stack.databases import locate_databases

        dbs = locate_databases(self.settings())
        return Urls(source=self.source_url or dbs.source,
                    source_ingest=self.source_ingest_url or dbs.source_ingest,
                    landing=self.landing_url or dbs.landing,
                    landing_app=self.landing_app_url or dbs.landing_app,
                    landing_dbt=self.landing_dbt_url or dbs.landing_dbt)

    def target(self) -> str:
        """The live-view target: ``embedded`` or ``materialize``."""
        target = self.live_target or self.settings().live_target
        if target not in ("embedded", "materialize"):
            raise DefinitionsError(f"live_target must be embedded or materialize; got "
                                   f"{target!r}.")
        return target

    def mz_url(self) -> str:
        """The Materialize URL, without Tidemark's PostgreSQL session settings.

        Raises:
            DefinitionsError: none is configured.
        """
        url = self.materialize_url or self.settings().materialize_url
        if not url:
            raise DefinitionsError("the live-view target is materialize but no Materialize is "
                                   "configured: set TIDEMARK_MATERIALIZE_URL.")
        return unpinned(url)

    def lag_thresholds(self) -> tuple[float, float]:
        """(warn, error) ingestion lag in seconds (resource values, else the settings)."""
        warn, error = self.settings().lag_thresholds
        warn, error = self.lag_warn_s or warn, self.lag_error_s or error
        return min(warn, error), error

    def mz_lag_limit(self) -> float:
        """The largest Materialize lag (seconds) the live view check accepts."""
        return self.materialize_lag_s or self.settings().materialize_lag_s

    def reconcile_window(self) -> int:
        """How many closed days back reconciliation compares."""
        return self.reconcile_days or self.settings().reconcile_days

    def dbt_cli(self, dbt: Any, args: list[str], env: dict[str, str] | None = None,
                **kwargs: Any) -> Any:
        """Start ``dbt.cli(args, **kwargs)`` with the profile pointed at the landing database.

        The profile reads only ``TIDEMARK_DBT_*`` variables, set from :attr:`Urls.landing_dbt`;
        ``DBT_TARGET_PATH`` names the prepared target, so each invocation starts from its
        partial-parse file instead of a full parse. dagster-dbt 0.29 gives the dbt child a copy
        of ``os.environ`` and takes no environment of its own, so these (and ``env``) are added
        to ``os.environ`` while the child is started (the adapter dagster-dbt prepares in this
        process reads the profile too). Nothing is removed: the ``dbt`` resource's executable
        is ``dbt-child`` (:func:`~tidemark.stack.dbt.dbt_child_executable`), which starts dbt
        without the environment's secrets (``PGPASSWORD``, ``TIDEMARK_SOURCE_*``, URLs with a
        password), so the other threads of this process never see them missing.

        Args:
            dbt: the ``DbtCliResource``; its ``dbt_executable`` must be ``dbt-child``.
            args: dbt's command line.
            env: more variables for the child (e.g. ``DBT_INDIRECT_SELECTION``).
            **kwargs: passed to ``DbtCliResource.cli``.

        Returns:
            The started ``DbtCliInvocation``.

        Raises:
            DefinitionsError: the resource would start dbt with the environment's secrets.
        """
        if dbt.dbt_executable != dbt_child_executable():
            raise DefinitionsError(
                f"The dbt resource runs {dbt.dbt_executable!r}, which would give dbt every "
                f"secret of this environment. Configure it with dbt_executable="
                f"tidemark.stack.dbt.dbt_child_executable() (orchestration/definitions.py "
                f"does).")
        values = {**dbt_connection_env(self.urls().landing_dbt),
                  "DBT_TARGET_PATH": str(self.settings().dbt_target_dir),
                  "TIDEMARK_PYTHON": sys.executable, **(env or {})}
        with environment(values):
            return dbt.cli(args, **kwargs)


def unreachable(exc: Exception) -> str:
    """A sensor's skip reason when the databases do not answer (e.g. ``dagster dev`` on a fresh
    clone, before ``tidemark up``): what failed and how to get them."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"The Tidemark databases are not reachable ({reason}). Start them with `tidemark "
            f"up` (or `tidemark db start`), or point TIDEMARK_SOURCE_URL / TIDEMARK_LANDING_URL "
            f"at yours.")


def observe(context: dg.SensorEvaluationContext, compute: Callable[[], tuple[list, str]],
            idle: str) -> dg.SensorResult | dg.SkipReason:
    """The result of an observing sensor: ``compute()`` gives its asset events and new cursor.

    Failing check evaluations are also logged as warnings (the sensor's log is where an
    operator looks first).

    Args:
        context: the sensor's context.
        compute: reads the databases; returns (asset events, cursor).
        idle: the skip reason when nothing changed.

    Returns:
        The events and cursor; ``idle`` when there are none; why the databases do not answer
        (:func:`unreachable`) when they do not.
    """
    try:
        events, cursor = compute()
    except psycopg.OperationalError as exc:
        return dg.SkipReason(unreachable(exc))
    for event in events:
        if isinstance(event, dg.AssetCheckEvaluation) and not event.passed:
            context.log.warning(event.description)
    if not events:
        return dg.SkipReason(idle)
    return dg.SensorResult(asset_events=events, cursor=cursor)
