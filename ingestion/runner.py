"""Running several registered sources at once, one thread each (``tidemark ingest run``).

A source that fails permanently (wrong password, wal_level, ...) is reported once, its error is
kept in ``tidemark.sources.last_error`` (shown by ``tidemark source list``), and the others keep
streaming; transient failures are retried inside :func:`ingestion.run`. Given ``discover``
(``tidemark ingest run`` of every source, which ``tidemark up`` runs), a source registered while
it runs (``tidemark source add``) is streamed within ``discover_every_s``, without a restart,
and so is a source that failed for good once its error is cleared: what its message said to run
(``tidemark ingest resync --all``, ``tidemark source add`` again) clears it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ingestion.engine import run
from ingestion.errors import IngestionError, IngestionRunningError
from ingestion.progress import SnapshotProgress
from ingestion.sources import SourceSpec, record_error

log = logging.getLogger("tidemark.ingestion")


def run_sources(specs: list[SourceSpec], landing_dsn: str, *, contracts: Any = None,
                stop: threading.Event | None = None,
                on_progress: Callable[[SnapshotProgress], None] | None = None,
                discover: Callable[[], list[SourceSpec]] | None = None,
                discover_every_s: float = 30.0, **options: Any) -> dict[str, str]:
    """Stream every source in ``specs`` until ``stop`` is set or every one of them ended.

    Args:
        specs: the sources.
        landing_dsn: landing URL.
        contracts: the contract set (each source reloads it when its files change).
        stop: set it to stop all sources cleanly.
        on_progress: snapshot progress of any source (``progress.source`` names it).
        discover: the registered sources now; one not streamed yet is started, and one that
            failed is started again once its ``last_error`` is cleared (a failure to read them
            is logged and tried again at the next look).
        discover_every_s: how often ``discover`` is called.
        **options: passed to :func:`ingestion.run` (``heartbeat_s``, ``refresh_s``...).

    Returns:
        Source name -> the error that stopped it, for the sources that failed.
    """
    stop = stop or threading.Event()
    errors: dict[str, str] = {}

    elsewhere: set[str] = set()  # discovered sources another process streams: looked at again

    def one(spec: SourceSpec) -> None:
        if spec.name not in elsewhere:
            record_error(landing_dsn, spec.name, None)
        try:
            run(spec.dsn(), landing_dsn, spec.name, contracts=contracts, stop=stop,
                setup_dsn=spec.admin_dsn(), schemas=list(spec.schemas or []) or None,
                publication_tables=list(spec.tables) if spec.tables else None,
                on_progress=on_progress, **options)
        except IngestionRunningError as exc:
            if discover is None:  # named on the command line: as any other refusal
                errors[spec.name] = str(exc)
                log.error("source %s stopped: %s", spec.name, exc)
                record_error(landing_dsn, spec.name, str(exc))
            else:  # e.g. `tidemark ingest run --source x` in another terminal: let it work
                if spec.name not in elsewhere:
                    log.info("source %s is streamed by another process; taken over once that "
                             "one stops", spec.name)
                elsewhere.add(spec.name)
        except IngestionError as exc:
            errors[spec.name] = str(exc)
            log.error("source %s stopped: %s", spec.name, exc)
            record_error(landing_dsn, spec.name, str(exc))
        except Exception as exc:  # an unexpected failure still stops only its source
            errors[spec.name] = f"{type(exc).__name__}: {exc}"
            log.exception("source %s stopped by an unexpected error", spec.name)
            record_error(landing_dsn, spec.name, errors[spec.name])

    threads: dict[str, threading.Thread] = {}

    def start(spec: SourceSpec) -> None:
        thread = threading.Thread(target=one, args=(spec,), name=f"tidemark-source-{spec.name}",
                                  daemon=True)
        threads[spec.name] = thread
        thread.start()

    for spec in specs:
        start(spec)
    next_look = time.monotonic() + discover_every_s
    while any(t.is_alive() for t in threads.values()):
        for thread in list(threads.values()):
            thread.join(timeout=0.5)
        if discover is not None and not stop.is_set() and time.monotonic() >= next_look:
            next_look = time.monotonic() + discover_every_s
            for name in [n for n in elsewhere if n in threads and not threads[n].is_alive()]:
                del threads[name]  # its other process may have stopped: try again
            for spec in _new_sources(discover, threads, errors):
                if spec.name in errors:
                    log.info("source %s: its error was cleared (a resync, or `tidemark source "
                             "add` again): streaming it again", spec.name)
                    del errors[spec.name]
                elif spec.name not in elsewhere:
                    log.info("source %s was registered: streaming it too", spec.name)
                start(spec)
            # one not started again (no longer registered) is forgotten: it was looked up in
            # threads at the next look, a KeyError that ended `ingest run` (and `tidemark up`)
            elsewhere.intersection_update(threads)
    return errors


def _new_sources(discover: Callable[[], list[SourceSpec]], running: dict[str, threading.Thread],
                 failed: dict[str, str]) -> list[SourceSpec]:
    """Registered sources not streamed yet, and failed ones whose error was cleared since."""
    try:
        return [spec for spec in discover() if spec.name not in running or (
            spec.name in failed and spec.last_error is None
            and not running[spec.name].is_alive())]
    except Exception as exc:  # landing away for a moment: the streams retry on their own
        log.warning("could not read the registered sources (tried again in a while): %s", exc)
        return []
