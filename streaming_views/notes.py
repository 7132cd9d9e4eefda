"""What a statement's log trigger notes in the transaction-local lists, and how it tells
whether the view is new in the transaction.

A statement that logged rows for base table ``j`` notes the view's token `` name/j `` in
``tidemark.pending`` (:data:`streaming_views.runtime.PENDING`; `` name/j! `` for a lone one-row
write, :func:`streaming_views.onegroup.single_token`, and a net pair's token,
:func:`streaming_views.netpair.net_token`), and a large statement `` name `` in ``tidemark.big``;
the view is new in the transaction while none of its tokens is there. The commit-time apply
(:mod:`streaming_views.apply`) reads these lists.
"""

from __future__ import annotations

from psycopg import sql

from streaming_views.changelog import BIG_DELTA, marker_row
from streaming_views.compiler import CompiledView
from streaming_views.layers import readers_sql
from streaming_views.netpair import net_token
from streaming_views.onegroup import single_token
from streaming_views.runtime import BIG, PENDING


def view_token(cv: CompiledView, j: int | None = None) -> str:
    """The view's token in the transaction-local lists (`` name/j `` or `` name ``)."""
    text = f" {cv.name}/{j} " if j is not None else f" {cv.name} "
    return sql.Literal(text).as_string(None)


def noted_big(cv: CompiledView) -> str:
    """Note a statement that logged more than :data:`streaming_views.changelog.BIG_DELTA` rows
    (``v_n``) in ``tidemark.big``: the view's delta is then planned for its size."""
    return (f"IF v_n > {BIG_DELTA} THEN\n"
            f"  v_b := set_config('{BIG}', coalesce(current_setting('{BIG}', true), '') || "
            f"{view_token(cv)}, true);\nEND IF;\n")


def noted_pending(cv: CompiledView, j: int, guard: str = "") -> str:
    """Note table ``j`` in ``tidemark.pending`` (read into ``v_p``) unless it is there; with
    ``guard`` (a condition and ``AND``), only when that holds too."""
    return (f"IF {guard}strpos(v_p, {view_token(cv, j)}) = 0 THEN\n"
            f"  v_p := set_config('{PENDING}', v_p || {view_token(cv, j)}, true);\nEND IF;")


def noted_one(cv: CompiledView, j: int) -> str:
    """:func:`noted_pending` after a one-row INSERT or DELETE's statement logged ``v_n`` rows:
    the token :func:`streaming_views.onegroup.single_token` when that is one row and the view is
    new in the transaction."""
    return (f"IF v_n > 0 AND strpos(v_p, {view_token(cv, j)}) = 0 THEN\n"
            f"  v_p := set_config('{PENDING}', v_p || CASE WHEN v_n = 1 AND {new_view(cv)} "
            f"THEN {single_token(cv, j)} ELSE {view_token(cv, j)} END, true);\nEND IF;")


def noting_net(cv: CompiledView, j: int) -> str:
    """:func:`noting` for a net pair (:mod:`streaming_views.netpair`): when the view is new in
    the transaction, it notes :func:`streaming_views.netpair.net_token` (and the row is the
    marker); else table ``j`` as usual."""
    return (f"CASE WHEN {new_view(cv)} THEN set_config('{PENDING}', v_p || "
            f"{net_token(cv, j)}, true) IS NOT NULL WHEN strpos(v_p, {view_token(cv, j)}) > 0 "
            f"THEN false ELSE set_config('{PENDING}', v_p || {view_token(cv, j)}, true) "
            "IS NULL END")


def register(cv: CompiledView, j: int, *, read: bool = True, marker: bool = True) -> str:
    """After rows were logged for table ``j``: note the table in ``tidemark.pending`` (and a
    large statement in ``tidemark.big``: planned for its size); the first time for the view in
    the transaction, append the marker row that fires its deferred ``apply`` at commit (unless
    ``marker`` is false: the statement that logged the rows appended it, see
    :func:`streaming_views.logwrites.appending`). With ``read`` false, ``v_p`` and ``v_first``
    were read before the rows were logged. (After ``SET CONSTRAINTS ALL IMMEDIATE`` a marker
    appended inside a statement's trigger fires the apply at once, at trigger depth 2: the apply
    postpones itself to the commit, where it finds these settings.) A temporal view's tick logs
    rows like a write and registers them so (:mod:`streaming_views.expiry`)."""
    first = _first(cv) if read else ""
    tail = ""
    if marker or cv.readers:
        insert = f"\n  {marker_row(cv, j)};" if marker else ""
        tail = f"\nIF v_first THEN{insert}{readers_sql(cv.readers)}\nEND IF;"
    return f"{first}{noted_big(cv)}{noted_pending(cv, j)}{tail}"


def new_view(cv: CompiledView) -> str:
    """Condition: the view is not in ``tidemark.pending`` (read into ``v_p``) yet."""
    return f"strpos(v_p, {sql.Literal(f' {cv.name}/').as_string(None)}) = 0"


def noting(cv: CompiledView, j: int) -> str:
    """SQL condition: the view is new in ``tidemark.pending`` (read into ``v_p``) — the
    ``__tm_first`` of the first row a one-row UPDATE's VALUES logs for table ``j`` (the
    marker) — which also notes the table there unless it is noted already. The ``set_config``
    runs inside the statement that logs the rows: no PL/pgSQL ``IF`` nor assignment after it
    (each is set up again in every transaction, and a volatile one takes a new snapshot).
    ``v_p`` is a parameter, read before the statement: the note does not change what the
    condition reads (reading the setting in the statement instead costs more: each function
    call of an expression is set up again in every execution)."""
    return (f"CASE WHEN strpos(v_p, {view_token(cv, j)}) > 0 THEN false "
            f"WHEN set_config('{PENDING}', v_p || {view_token(cv, j)}, true) IS NULL THEN false "
            f"ELSE {new_view(cv)} END")


def _first(cv: CompiledView) -> str:
    """Read ``tidemark.pending`` into ``v_p`` and whether the view is new in it into ``v_first``."""
    return (f"v_p := coalesce(current_setting('{PENDING}', true), '');\n"
            f"v_first := {new_view(cv)};\n")
