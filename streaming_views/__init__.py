"""Live SQL views maintained incrementally: one SELECT per file, two engines.

* the embedded engine compiles a view into a state table and statement-level triggers inside
  PostgreSQL (:func:`deploy` with ``target="embedded"``);
* the Materialize target generates and applies sources, tables and materialized views
  (:mod:`streaming_views.materialize`).

Public API: :func:`load_views`, :func:`deploy`, :func:`verify`, :func:`list_views`,
:func:`subscribe`, and the errors in :mod:`streaming_views.errors`.
"""

from __future__ import annotations

from streaming_views.deploy import DeployResult, deploy, rebuild
from streaming_views.errors import (
    StreamingViewsError,
    UnsupportedViewError,
    ViewDefinitionError,
    ViewFileError,
)
from streaming_views.status import ViewStatus, list_views
from streaming_views.subscribe import Change, subscribe
from streaming_views.verify import VerifyResult, verify
from streaming_views.viewfile import ViewFile, load_views

__all__ = [
    "Change",
    "DeployResult",
    "StreamingViewsError",
    "UnsupportedViewError",
    "VerifyResult",
    "ViewDefinitionError",
    "ViewFile",
    "ViewFileError",
    "ViewStatus",
    "deploy",
    "list_views",
    "load_views",
    "rebuild",
    "subscribe",
    "verify",
]
