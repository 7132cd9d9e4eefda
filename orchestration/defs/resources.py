"""The ``tidemark`` resource: where the databases are, resolved when a run starts.

Every URL may be given explicitly (tests point them at their own databases); an unset URL is
taken from the stack settings (``load_settings`` + ``locate_databases``) when first used, never
while the definitions load, so loading the code location never connects to a database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg

from orchestration.defs.errors import DefinitionsError
from tidemark.stack.dbt import dbt_connection_env, environment

LIVE_TARGETS = ("embedded", "materialize")


def live_target_from_env() -> str:
    """``TIDEMARK_LIVE_TARGET`` (``embedded`` or ``materialize``), default ``embedded``.

    Raises:
        DefinitionsError: the variable holds another value.
    """
    value = os.environ.get("TIDEMARK_LIVE_TARGET", "").strip() or "embedded"
    if value not in LIVE_TARGETS:
        raise DefinitionsError(f"TIDEMARK_LIVE_TARGET must be embedded or materialize; got "
                               f"{value!r}. Unset it to use the embedded engine.")
    return value


def env_float(name: str, default: float) -> float:
    """A positive number from the environment variable ``name``, or ``default``.

    Raises:
        DefinitionsError: the value is not a positive number.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DefinitionsError(f"{name} must be a positive number of seconds; got {raw!r}.")
    return value


@dataclass(frozen=True)
class Urls:
    """The resolved connection URLs a run uses.

    Attributes:
        source: source admin URL (publication, heartbeats, resync setup).
        source_ingest: source URL the replication stream reads with.
        landing: landing admin URL.
        landing_app: landing URL that writes (dbt, live views, reconciliation).
    """

    source: str
    source_ingest: str
    landing: str
    landing_app: str


class TidemarkResource(dg.ConfigurableResource):
    """Connections and thresholds of the Tidemark stack.

    Attributes:
        source_url: source admin URL (default: from the stack settings).
        source_ingest_url: source replication URL (default: from the stack settings).
        landing_url: landing admin URL (default: from the stack settings).
        landing_app_url: landing URL for dbt and the platform writes (default: stack settings).
        source: the replicated source's name (mirror schema, slot, publication).
        live_target: ``embedded`` or ``materialize`` (default ``TIDEMARK_LIVE_TARGET``).
        materialize_url: Materialize URL (default ``TIDEMARK_MATERIALIZE_URL``).
        lag_warn_s: ingestion lag above which the lag check warns.
        lag_error_s: ingestion lag above which the lag check fails.
        materialize_lag_s: largest Materialize lag the live view check accepts.
        reconcile_days: how many closed days back reconciliation compares.
    """

    source_url: str | None = None
    source_ingest_url: str | None = None
    landing_url: str | None = None
    landing_app_url: str | None = None
    source: str = "shop"
    live_target: str | None = None
    materialize_url: str | None = None
    lag_warn_s: float | None = None
    lag_error_s: float | None = None
    materialize_lag_s: float = 5.0
    reconcile_days: int = 30

    def urls(self) -> Urls:
        """The URLs to use: explicit ones, else those of the stack settings."""
        explicit = (self.source_url, self.source_ingest_url, self.landing_url,
                    self.landing_app_url)
        if all(explicit):
            return Urls(*explicit)  # type: ignore[arg-type]
        from tidemark.settings import load_settings
        from tidemark.stack.databases import locate_databases

        dbs = locate_databases(load_settings())
        return Urls(source=self.source_url or dbs.source,
                    source_ingest=self.source_ingest_url or dbs.source_ingest,
                    landing=self.landing_url or dbs.landing,
                    landing_app=self.landing_app_url or dbs.landing_app)

    def target(self) -> str:
        """The live-view target: ``embedded`` or ``materialize``."""
        target = self.live_target or live_target_from_env()
        if target not in LIVE_TARGETS:
            raise DefinitionsError(f"live_target must be embedded or materialize; got "
                                   f"{target!r}.")
        return target

    def mz_url(self) -> str:
        """The Materialize URL.

        Raises:
            DefinitionsError: none is configured.
        """
        url = self.materialize_url or os.environ.get("TIDEMARK_MATERIALIZE_URL", "").strip()
        if not url:
            raise DefinitionsError("the live-view target is materialize but no Materialize is "
                                   "configured: set TIDEMARK_MATERIALIZE_URL.")
        return url

    def lag_thresholds(self) -> tuple[float, float]:
        """(warn, error) ingestion lag in seconds: resource values, else
        ``TIDEMARK_INGEST_LAG_WARN_S`` / ``TIDEMARK_INGEST_LAG_ERROR_S`` (60 / 300)."""
        warn = self.lag_warn_s or env_float("TIDEMARK_INGEST_LAG_WARN_S", 60.0)
        error = self.lag_error_s or env_float("TIDEMARK_INGEST_LAG_ERROR_S", 300.0)
        return min(warn, error), error

    @contextmanager
    def dbt_environment(self) -> Iterator[None]:
        """Point ``dbt_project/profiles.yml`` at the landing database for the block.

        The profile reads only ``TIDEMARK_DBT_*`` variables; they are set from
        :attr:`Urls.landing_app` and restored afterwards.
        """
        with environment(dbt_connection_env(self.urls().landing_app)):
            yield
