"""A live view that cannot follow a landed row never stops ingestion.

Landing tables may have live views (:mod:`streaming_views`): their triggers run inside the
applier's landing transaction. A row the view cannot compute — a cast of ``'x'`` to integer, an
overflow — makes that transaction fail with the view's error, every time it is replayed: without
this module one view would stop the whole source. Materialize puts such an error in the view,
not in the write; so does Tidemark here: the failing view is marked broken
(``tidemark.live_break``: its triggers go, reading ``live.<view>`` raises with the reason, the
views reading it are broken too, ``tidemark views status`` shows it) and the source transaction
is applied again from the checkpoint, without it. ``tidemark views deploy`` rebuilds the view once
the row or the view's file is fixed.
"""

from __future__ import annotations

import logging
import re

import psycopg

from ingestion.errors import TablesChangedError

log = logging.getLogger("tidemark.ingestion")

# A view's generated functions live in schema tidemark_state and are named <suffix>__<part>,
# where <suffix> is <view>__<hash8> (streaming_views.compiler).
_FUNCTION = re.compile(r"function tidemark_state\.([A-Za-z0-9_]+?__[0-9a-f]{8})__")
# Errors of the data or of the view's SQL; not serialization failures, deadlocks, lock or
# connection trouble, which the ordinary retry handles.
_VIEW_CLASSES = {"22", "23", "42", "54", "P0", "2F"}


class ViewBrokenError(TablesChangedError):
    """A live view failed on a landed row and was marked broken: apply again from the
    checkpoint (the view's triggers are gone)."""


def break_failing_view(landing_dsn: str, source: str, exc: BaseException) -> str | None:
    """If ``exc`` was raised inside a live view's maintenance, mark that view broken.

    Args:
        landing_dsn: landing URL (a role that may run ``tidemark.live_break``).
        source: the source whose landing transaction failed (for the reason).
        exc: the error of the landing transaction.

    Returns:
        The view marked broken, or None when ``exc`` is not a live view's error (or the view
        could not be marked broken: the caller then handles ``exc`` as before).
    """
    if not isinstance(exc, psycopg.Error) or (exc.sqlstate or "")[:2] not in _VIEW_CLASSES:
        return None
    found = _FUNCTION.search(exc.diag.context or "")
    if found is None:
        return None
    reason = (f"a landed row of source {source} cannot be computed by it: "
              f"{exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate}); ingestion went on "
              f"without the view")
    try:
        with psycopg.connect(landing_dsn, autocommit=True) as conn:
            row = conn.execute("select name from tidemark.views where suffix = %s and "
                               "target = 'embedded' and status = 'ok'",
                               (found.group(1),)).fetchone()
            if row is None:
                return None
            conn.execute("select tidemark.live_break(%s, %s)", (row[0], reason))
    except psycopg.Error as err:
        log.error("source %s: live view with functions %s failed (%s) and could not be marked "
                  "broken: %s", source, found.group(1), exc.diag.message_primary, err)
        return None
    log.error("source %s: live view %s is broken: %s. Reading live.%s raises until it is "
              "redeployed: fix the row or the view's file, then run `tidemark views deploy`.",
              source, row[0], reason, row[0])
    return str(row[0])
