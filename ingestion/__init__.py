"""Tidemark ingestion: CDC from PostgreSQL logical replication (pgoutput) into landing.

Public API::

    from ingestion import catch_up, run, status, resync
    catch_up(source_dsn, landing_dsn, "mydb")        # one-shot: snapshot if needed, then stream
    run(source_dsn, landing_dsn, "mydb", stop=event) # long-running loop (`tidemark ingest run`)
    status(source_dsn, landing_dsn, "mydb")          # JSON-able dict (`tidemark ingest status`)

    from ingestion.sources import get_source        # the source registry (`tidemark source`)
    from ingestion.runner import run_sources         # every registered source at once

Landing layout: mirror ``<source>.<table>``, changelog ``cdc.<source>__<table>``, platform state
in schema ``tidemark``. See the README section "Ingestion".
"""

from __future__ import annotations

from ingestion.dead_letters import list_dead_letters, replay, show_dead_letter
from ingestion.engine import CatchUpStats, catch_up, run
from ingestion.resync import resync
from ingestion.status import status

__all__ = ["CatchUpStats", "catch_up", "list_dead_letters", "replay", "resync", "run",
           "show_dead_letter", "status"]
