"""Child processes of ``tidemark up``: started with logs in files, stopped cleanly together.

Each child gets its own process group so that Ctrl-C in the terminal reaches only ``tidemark up``,
which then stops the children in reverse start order: SIGTERM, a grace period, then SIGKILL. On
Linux each child is also asked to get SIGTERM when ``tidemark up`` itself dies (``kill -9``, the
OOM killer): else it would go on as an orphan, the ingestion holding the replication slot and the
webserver the UI's port, and the next ``tidemark up`` would be refused by both.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
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
                                       start_new_session=True,
                                       preexec_fn=_die_with_parent())
        finally:
            out.close()
        child = Child(name, argv, log, process)
        self.children.append(child)
        return child

    def restart(self, child: Child) -> Child:
        """Start ``child``'s command again (after it exited), appending to the same log."""
        self.children.remove(child)
        return self.start(child.name, child.argv, child.log)

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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child get SIGTERM when its parent dies (Linux), else None.

    The kernel sends it when the thread that started the child ends, so children must be
    started from the main thread (as ``tidemark up`` does). The C function is looked up here,
    before the fork: the child runs only the call, then checks that the parent did not die in
    between (it would then be re-parented already and get no signal).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@dataclass
class Restarts:
    """When a child that exited on its own is started again instead of stopping the stack.

    Only the named children, only when a signal killed them (``kill -9``, the OOM killer): a
    child that exits with a status said why itself (the ingestion's status 2: every source
    stopped for a reason retrying cannot fix), and restarting it would only repeat that. At
    most ``limit`` restarts of one child within ``window_s``; the n-th waits ``2**(n-1)``
    seconds, at most 30.

    Attributes:
        names: children that may be restarted (they resume from their own state).
        limit: restarts of one child allowed within ``window_s``.
        window_s: the window of ``limit``.
        history: each child's restart times (monotonic).
    """

    names: frozenset[str]
    limit: int = 5
    window_s: float = 600.0
    history: dict[str, list[float]] = field(default_factory=dict)

    def delay(self, child: Child, now: float | None = None) -> float | None:
        """Seconds to wait before restarting ``child``, or None: do not restart it."""
        code = child.process.returncode if child.process is not None else None
        if child.name not in self.names or code is None or code >= 0:
            return None
        now = time.monotonic() if now is None else now
        recent = [t for t in self.history.get(child.name, []) if now - t < self.window_s]
        if len(recent) >= self.limit:
            return None
        self.history[child.name] = [*recent, now]
        return float(min(2 ** len(recent), 30))

    def count(self, name: str) -> int:
        """Restarts of ``name`` within the window so far."""
        return len(self.history.get(name, []))


def describe_exit(code: int | None) -> str:
    """``exited with 2`` or ``was killed by SIGKILL``."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


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
