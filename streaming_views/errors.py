"""Errors of the live-view part.

Every error says what went wrong, where (file, line, column when known) and a way forward.
The CLI wraps them into a clear one-line message; nothing here imports orchestration.
"""

from __future__ import annotations


class StreamingViewsError(Exception):
    """Base class of the errors raised by ``streaming_views``."""


class ViewFileError(StreamingViewsError):
    """A view file cannot be read: bad name, bad header setting, not exactly one SELECT."""


class UnsupportedViewError(StreamingViewsError):
    """A view uses SQL outside the supported subset.

    Attributes:
        construct: the construct refused (e.g. ``LEFT JOIN``, ``now()``).
        path: the view file, when known.
        line: 1-based line in the file.
        column: 1-based column in the file.
        rewrite: the nearest supported rewrite, or None when there is none.
        reason: why the construct cannot be maintained incrementally.
    """

    def __init__(self, construct: str, reason: str, *, path: str | None = None,
                 line: int | None = None, column: int | None = None,
                 rewrite: str | None = None) -> None:
        self.construct = construct
        self.reason = reason
        self.path = path
        self.line = line
        self.column = column
        self.rewrite = rewrite
        where = path or "<view>"
        if line is not None:
            where += f":{line}:{column}"
        message = f"{where}: {construct} is not supported: {reason}"
        if rewrite:
            message += f" Rewrite: {rewrite}"
        super().__init__(message)


class ViewDefinitionError(StreamingViewsError):
    """PostgreSQL rejects the view's query (unknown table or column, type error)."""


class DeployError(StreamingViewsError):
    """A deploy could not be completed (target unreachable, object in the way)."""


class ViewNotFoundError(StreamingViewsError):
    """A command names a view that is not deployed."""


class MaterializeError(StreamingViewsError):
    """The Materialize target is misconfigured or failed (hydration timeout, missing secret)."""
