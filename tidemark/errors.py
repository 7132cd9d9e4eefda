"""Errors raised by the orchestration part (stack, demo, CLI).

Every error says what went wrong, where, and what to do about it; the CLI prints the message
and exits non-zero without a traceback.
"""

from __future__ import annotations


class TidemarkError(Exception):
    """Base class of the errors Tidemark reports to a person."""


class SettingsError(TidemarkError):
    """An environment variable holds a value Tidemark cannot use."""


class PortInUseError(TidemarkError):
    """The TCP port chosen for the embedded PostgreSQL is taken by another process."""


class DatabaseStartError(TidemarkError):
    """The embedded PostgreSQL server did not start."""


class DatabaseNotRunningError(TidemarkError):
    """A command needs the embedded PostgreSQL server and it is not running."""


class ExternalServerError(TidemarkError):
    """An external PostgreSQL server (TIDEMARK_SOURCE_URL / TIDEMARK_LANDING_URL) is unusable."""


class DemoInputError(TidemarkError):
    """A demo seed or load parameter is out of range (days, rate, duration, shares)."""


class DemoStateError(TidemarkError):
    """The demo source database is not in a state the demo seed or load can work with."""


class DagsterStartError(TidemarkError):
    """The Dagster webserver or daemon of ``tidemark up`` could not be started."""


class AlreadyRunningError(TidemarkError):
    """Another ``tidemark up`` runs on the same ``TIDEMARK_HOME``."""


class DagsterRetentionError(TidemarkError):
    """Dagster's run history cannot be pruned safely (an unsupported storage)."""
