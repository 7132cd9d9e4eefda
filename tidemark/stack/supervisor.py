"""Child processes of ``tidemark up``: started with logs in files, stopped cleanly together.

Each child gets its own process group so that Ctrl-C in the terminal reaches only ``tidemark up``,
which then stops the children in reverse start order: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    """One supervised process.

    Attributes:
        name: short name shown to the user (``ingest``, ``dagster``...).
        argv: the command line.
        log: file receiving the child's stdout and stderr.
        process: the running process, once started.
    """

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen | None = None


@dataclass
class Supervisor:
    """Start children, watch them, stop them all.

    Attributes:
        env: environment for the children (the caller's, plus Tidemark settings).
        children: the started children, in start order.
    """

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log: Path) -> Child:
        """Start ``argv`` in its own process group with output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=self.env,
                                       start_new_session=True)
        finally:
            out.close()
        child = Child(name, argv, log, process)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        """Children that have exited on their own."""
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def stop_all(self, grace_s: float = 20.0) -> dict[str, int | None]:
        """Stop every child, newest first: SIGTERM, wait up to ``grace_s``, then SIGKILL.

        Returns:
            Each child's exit code (negative: killed by that signal).
        """
        codes: dict[str, int | None] = {}
        for child in reversed(self.children):
            proc = child.process
            if proc is None:
                continue
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(10)
            codes[child.name] = proc.returncode
        return codes


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
