"""``tidemark up`` as a real process for the end-to-end tests: start, stop with Ctrl-C, restart.

One :class:`RunningStack` owns a ``TIDEMARK_HOME`` and fixed ports, so a restart reuses the same
data, the same PostgreSQL port and the same Dagster UI address.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import embedded_url
from tidemark.stack.supervisor import wait_for

TIDEMARK = shutil.which("tidemark")
START_TIMEOUT_S = 420.0  # default scale on a loaded 2-core machine (a minute when quiet)
STOP_TIMEOUT_S = 120.0


class StackError(RuntimeError):
    """``tidemark up`` did not start or stop as expected (its output is in the message)."""


@dataclass
class RunningStack:
    """A ``tidemark up`` process on a fresh home.

    Attributes:
        home: ``TIDEMARK_HOME``.
        pg_port: ``TIDEMARK_PG_PORT`` of the embedded PostgreSQL.
        dagster_port: ``TIDEMARK_DAGSTER_PORT`` of the Dagster UI.
        args: extra ``tidemark up`` arguments used on every start (seed size...).
        process: the running ``tidemark up``, if any.
        output: the file receiving the current run's stdout and stderr.
        settings: extra ``TIDEMARK_*`` variables of every ``tidemark`` command of this stack.
    """

    home: Path
    pg_port: int
    dagster_port: int
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    output: Path | None = None
    starts: int = field(default=0)
    time_to_banner_s: float | None = None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment of ``tidemark`` commands against this stack."""
        env = {**os.environ, "TIDEMARK_HOME": str(self.home), "TIDEMARK_PG_PORT": str(self.pg_port),
               "TIDEMARK_DAGSTER_PORT": str(self.dagster_port), "COLUMNS": "200",
               **self.settings}
        for name in ("TIDEMARK_SOURCE_URL", "TIDEMARK_LANDING_URL", "DAGSTER_HOME"):
            env.pop(name, None)
        return env

    @property
    def source_url(self) -> str:
        """Superuser URL of the demo source database."""
        return embedded_url(self.home, self.pg_port, "shop")

    @property
    def landing_url(self) -> str:
        """Superuser URL of the landing database."""
        return embedded_url(self.home, self.pg_port, "tidemark")

    @property
    def dagster_url(self) -> str:
        """Base URL of the Dagster UI."""
        return f"http://127.0.0.1:{self.dagster_port}"

    def log(self) -> str:
        """The current run's output so far."""
        return self.output.read_text(errors="replace") if self.output else ""

    def start(self, *extra: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start ``tidemark up`` and wait until it prints the Dagster UI URL.

        Raises:
            StackError: it exited or did not come up in time (its output is included).
        """
        if self.process is not None and self.process.poll() is None:
            raise StackError("tidemark up is already running for this stack")
        if TIDEMARK is None:
            raise StackError("the tidemark console script is not installed (pip install -e .)")
        self.starts += 1
        self.output = self.home.parent / f"tidemark-up-{self.starts}.log"
        started = time.monotonic()
        with open(self.output, "wb") as sink:
            self.process = subprocess.Popen([TIDEMARK, "up", *self.args, *extra], env=self.env,
                                            stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        up = wait_for(lambda: "Tidemark is up" in self.log() or self.process.poll() is not None,
                      timeout_s, interval_s=0.5)
        if not up or self.process.poll() is not None:
            output = self.log()
            self.kill()
            raise StackError(f"tidemark up did not come up (start {self.starts}):\n{output}")
        if not re.search(rf"Dagster UI:\s+{re.escape(self.dagster_url)}", self.log()):
            raise StackError(f"tidemark up printed no UI at {self.dagster_url}:\n{self.log()}")
        self.time_to_banner_s = time.monotonic() - started
        print(f"tidemark up start {self.starts}: banner after {self.time_to_banner_s:.1f} s")
        if not wait_for(self._code_location_loaded, 120, interval_s=1.0):
            log = self.home / "logs" / "dagster-webserver.log"
            raise StackError(f"the code location orchestration.definitions did not load in the "
                             f"Dagster UI; see {log}:\n{log.read_text(errors='replace')[-3000:]}")

    def _code_location_loaded(self) -> bool:
        from tests.e2e.dagster_api import graphql

        data = graphql(self.dagster_url, "{ repositoriesOrError { __typename ... on"
                                         " RepositoryConnection { nodes { name } } } }")
        answer = data["repositoriesOrError"]
        return answer["__typename"] == "RepositoryConnection" and bool(answer["nodes"])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int, str]:
        """Ctrl-C (SIGINT to the process group, as a terminal does) and wait for the exit.

        Returns:
            The exit code and the run's full output.
        """
        proc = self.process
        if proc is None:
            raise StackError("tidemark up is not running")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise StackError(f"tidemark up did not stop within {timeout_s:.0f} s after "
                                 f"Ctrl-C:\n{self.log()}") from None
        self.process = None
        return proc.returncode, self.log()

    def kill(self) -> None:
        """Last resort for teardown: SIGKILL the process group and stop the database."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(STOP_TIMEOUT_S)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.process = None
        pg_ctl_stop(self.home, self.pg_port)


def pg_ctl_stop(home: Path, port: int) -> None:
    """Stop the embedded PostgreSQL of ``home`` if it is still running (teardown only)."""
    if not (home / "pgdata" / "postmaster.pid").exists():
        return
    from tidemark.settings import Settings
    from tidemark.stack.embedded import EmbeddedServer

    EmbeddedServer(Settings(home=home, port=port, source_url=None, landing_url=None)).stop()


def run_tidemark(stack: RunningStack, *args: str, timeout_s: float = 120.0
                 ) -> subprocess.CompletedProcess:
    """Run a ``tidemark`` command against ``stack`` and capture its output."""
    started = time.monotonic()
    result = subprocess.run([TIDEMARK or "tidemark", *args], env=stack.env, capture_output=True,
                            text=True, timeout=timeout_s, check=False)
    result.elapsed_s = time.monotonic() - started  # type: ignore[attr-defined]
    return result
