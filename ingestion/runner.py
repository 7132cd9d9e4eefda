"""Running several registered sources at once, one thread each (``tidemark ingest run``).

A source that fails permanently (wrong password, wal_level, ...) is reported once, its error is
kept in ``tidemark.sources.last_error`` (shown by ``tidemark source list``), and the others keep
streaming; transient failures are retried inside :func:`ingestion.run`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ingestion.engine import run
from ingestion.errors import IngestionError
from ingestion.progress import SnapshotProgress
from ingestion.sources import SourceSpec, record_error

log = logging.getLogger("tidemark.ingestion")


def run_sources(specs: list[SourceSpec], landing_dsn: str, *, contracts: Any = None,
                stop: threading.Event | None = None,
                on_progress: Callable[[SnapshotProgress], None] | None = None,
                **options: Any) -> dict[str, str]:
    """Stream every source in ``specs`` until ``stop`` is set or every one of them ended.

    Args:
        specs: the sources.
        landing_dsn: landing URL.
        contracts: the contract set (each source reloads it when its files change).
        stop: set it to stop all sources cleanly.
        on_progress: snapshot progress of any source (``progress.source`` names it).
        **options: passed to :func:`ingestion.run` (``heartbeat_s``, ``refresh_s``...).

    Returns:
        Source name -> the error that stopped it, for the sources that failed.
    """
    stop = stop or threading.Event()
    errors: dict[str, str] = {}

    def one(spec: SourceSpec) -> None:
        record_error(landing_dsn, spec.name, None)
        try:
            run(spec.dsn(), landing_dsn, spec.name, contracts=contracts, stop=stop,
                setup_dsn=spec.admin_dsn(), schemas=list(spec.schemas or []) or None,
                publication_tables=list(spec.tables) if spec.tables else None,
                on_progress=on_progress, **options)
        except IngestionError as exc:
            errors[spec.name] = str(exc)
            log.error("source %s stopped: %s", spec.name, exc)
            record_error(landing_dsn, spec.name, str(exc))
        except Exception as exc:  # an unexpected failure still stops only its source
            errors[spec.name] = f"{type(exc).__name__}: {exc}"
            log.exception("source %s stopped by an unexpected error", spec.name)
            record_error(landing_dsn, spec.name, errors[spec.name])

    threads = [threading.Thread(target=one, args=(spec,), name=f"tidemark-source-{spec.name}",
                                daemon=True) for spec in specs]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    return errors
