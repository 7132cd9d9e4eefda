"""Tidemark ingestion: CDC from PostgreSQL logical replication (pgoutput) into landing.

Public API::

    from ingestion import catch_up, run, status, resync
    catch_up(source_dsn, landing_dsn, "shop")        # one-shot: snapshot if needed, then stream
    run(source_dsn, landing_dsn, "shop", stop=event) # long-running loop (`tidemark ingest run`)
    status(source_dsn, landing_dsn, "shop")          # JSON-able dict (`tidemark ingest status`)

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
