"""Registering the demo database "shop" as a source, like any other (``tidemark source``).

With the embedded server the URLs are stored as they are (loopback, no password: they name the
home's pgpass file, which holds it); with an external source (``TIDEMARK_SOURCE_URL``) the
registration names that variable, so the URL and its password are read from each process's
environment and never stored.
"""

from __future__ import annotations

from ingestion.sources import SourceSpec, list_sources, save_source
from tidemark.settings import Settings
from tidemark.stack.databases import Databases

DEMO_SOURCE = "shop"


def demo_source_spec(dbs: Databases, settings: Settings) -> SourceSpec:
    """The registration of the demo source for these databases."""
    if settings.source_url is not None:
        return SourceSpec(DEMO_SOURCE, url_env="TIDEMARK_SOURCE_URL")
    return SourceSpec(DEMO_SOURCE, url=dbs.source_ingest, admin_url=dbs.source)


def register_demo_source(dbs: Databases, settings: Settings) -> SourceSpec:
    """Register (or update) the demo source "shop" in landing; return its registration."""
    spec = demo_source_spec(dbs, settings)
    current = {s.name: s for s in list_sources(dbs.landing_app)}.get(DEMO_SOURCE)
    if current is None or (current.url, current.url_env, current.admin_url) != (
            spec.url, spec.url_env, spec.admin_url):
        save_source(dbs.landing_app, spec)
    return spec

