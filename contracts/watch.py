"""Noticing changed contract files, so a long-running ingestion picks them up without a restart."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from contracts.errors import ContractsError
from contracts.loader import ContractSet, load_contracts

log = logging.getLogger("tidemark.contracts")


class ContractWatcher:
    """Reloads a contracts folder when its files change (checked at most every ``interval_s``).

    A change is any file added, removed, or with another modification time or size. A folder
    that no longer loads (a typo being saved) is reported once and the previous contracts stay
    in force until it loads again.

    Args:
        root: the contracts folder.
        interval_s: least time between two looks at the folder.
    """

    def __init__(self, root: Path, interval_s: float = 2.0) -> None:
        self.root = Path(root)
        self.interval_s = interval_s
        self.checked_at = time.monotonic()
        self.stamp = self._stamp()
        self.broken: str | None = None

    def _stamp(self) -> tuple:
        files = []
        for path in sorted(self.root.rglob("*")):
            if path.suffix in (".yml", ".yaml") and path.is_file():
                st = path.stat()
                files.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(files)

    def poll(self) -> ContractSet | None:
        """The reloaded contracts if the files changed since the last successful load, else None."""
        now = time.monotonic()
        if now - self.checked_at < self.interval_s:
            return None
        self.checked_at = now
        try:
            stamp = self._stamp()
        except OSError:
            return None
        if stamp == self.stamp:
            return None
        try:
            contracts = load_contracts(self.root)
        except ContractsError as exc:
            if str(exc) != self.broken:
                log.error("contracts in %s changed but do not load; the previous contracts stay "
                          "in force: %s", self.root, exc)
                self.broken = str(exc)
            return None
        self.stamp = stamp
        self.broken = None
        log.info("contracts in %s changed: reloaded (%d table contracts)", self.root,
                 len(contracts))
        return contracts
