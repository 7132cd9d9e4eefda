# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Generate the maintenance functions of a compiled view and its state DDL.

Per base table ``j`` (and every partition or inheritance child of it) there are three
statement-level AFTER triggers (INSERT, UPDATE, DELETE) with transition tables and one AFTER
TRUNCATE trigger (created by ``tidemark.live_attach_triggers``, :mod:`streaming_views.runtime`):

1. a statement's trigger (:func:`log_function`) appends its transition rows to the table's
   change log (:mod:`streaming_views.changelog`, :mod:`streaming_views.logwrites`) — no lock on
   the view, no read of other tables — and notes the table in the transaction-local
   ``tidemark.pending`` (:mod:`streaming_views.notes`); the first time for the view in the
   transaction it also appends a marker row, which fires the view's deferred constraint trigger
   at commit (or PREPARE TRANSACTION); TRUNCATE asks for a rebuild;
2. at commit, ``<suffix>__apply()`` locks the base tables its apply reads (ACCESS SHARE, by
   OID, :mod:`streaming_views.lockorder`), then takes the view's lock (a transaction-level
   advisory lock: commits of one view are applied one after the other; when a transaction
   changed several views, the first of them to apply locks all of them in key order, so writers
   never deadlock on views), then applies the logged changes in
   one statement (or rebuilds after a TRUNCATE), deletes groups whose count fell to zero (and
   values whose multiplicity did) and recomputes the groups marked dirty
   (:mod:`streaming_views.apply`).

Every function runs with the pinned session settings (:mod:`streaming_views.session`) as its
``SET`` clauses, so maintenance does not depend on the writer's TimeZone, DateStyle, search_path...
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from streaming_views import onkept
from streaming_views.apply import APPLY_SETTINGS, apply_body, rebuild_body
from streaming_views.astutil import q
from streaming_views.auxiliary import aux_ddl
from streaming_views.changelog import BIG_DELTA, EVENTS, batchable, filtered, log_ddl, log_triggers
from streaming_views.compiler import STATE_SCHEMA, CompiledView
from streaming_views.deltas import apply_settings
from streaming_views.expiry import is_timed
from streaming_views.layers import is_live, readers_sql
from streaming_views.lockorder import holder_ddl, holder_name
from streaming_views.logwrites import (
    PAIRED_ROWS,
    log_batch,
    log_insert,
    log_one_row,
    log_settings,
    log_update_paired,
    log_update_single,
)
from streaming_views.netpair import net_columns
from streaming_views.notes import new_view, noted_big, noted_one, noted_pending, noting, noting_net
from streaming_views.onegroup import from_new
from streaming_views.runtime import LOCK_ROW_FILLFACTOR, PENDING
from streaming_views.session import set_clauses


@dataclass(frozen=True)
class Functions:
    """The DDL of a view's maintenance functions (after its tables), and of the deferred
    triggers on its change logs (after the functions)."""

    create: list[str]


def function_name(cv: CompiledView, what: str) -> str:
    """The quoted maintenance function ``<suffix>__<what>``."""
    return f"{q(STATE_SCHEMA)}.{q(f'{cv.suffix}__{what}')}"


def _function(name: str, returns: str, declare: str, body: str, settings: str = "",
              pinned: tuple[str, ...] | None = None) -> str:
    tail = "RETURN NULL;" if returns == "trigger" else "RETURN;"
    clauses = set_clauses(pinned, declare + body)  # (no backslash: no standard_conforming_strings)
    return (f"CREATE FUNCTION {name}() RETURNS {returns} LANGUAGE plpgsql SECURITY DEFINER "
            f"{clauses}{settings} AS $tm$\nDECLARE\n{declare}\nBEGIN\n{body}\n"
            f"{tail}\nEND\n$tm$")


def log_function(cv: CompiledView, j: int, event: str) -> str:
    """The statement trigger function of base table ``j`` for ``event`` (ins, upd, del); a small
    UPDATE logs only the rows whose columns read by the view changed. When the view is new in
    the transaction, the first row the statement logs is the transaction's marker (it fires the
    deferred apply at commit, see :func:`streaming_views.logwrites.appending`): no row of its
    own.

    Few statements and PL/pgSQL expressions run per statement (each is set up again in every
    transaction): an UPDATE first reads its pair of rows when it changed exactly one row (a
    one-time test in the same SELECT) and logs them only when the view can tell them apart
    (:func:`streaming_views.logwrites.log_update_single`: an UPDATE of columns the view does
    not read runs no INSERT, and returns before it reads ``tidemark.pending``; one it can tell
    apart notes its table in the statement that logs the pair,
    :func:`streaming_views.notes.noting`, and returns), a one-row INSERT or DELETE is logged by
    one statement (:func:`streaming_views.logwrites.log_one_row`); whether the view is new in
    the transaction is tested where it is used, and only the branches that can log more than
    :data:`streaming_views.changelog.BIG_DELTA` rows test the count for a large delta. A
    function whose expressions read no session setting pins only
    :data:`streaming_views.session.NAMES_ONLY` (and those its filters read:
    :func:`streaming_views.logwrites.log_settings`)."""
    rel = "__tm_old" if event == "del" else "__tm_new"
    live = is_live(cv.resolved.tables[j])  # live view: its rows come from the inner's SELECT
    first = new_view(cv)
    count = "GET DIAGNOSTICS v_n = ROW_COUNT;"
    exact = f"{count}\n  {noted_big(cv).rstrip()}"
    single = event == "upd" and not live  # one row (the commonest UPDATE), tried first
    # a one-row INSERT or DELETE: logged first, as the marker when the view is new (no probe,
    # no numbering); any other size finds v_n = 0 (none logged) and takes the branches below
    one = event != "upd" and not live and not is_timed(cv, j)
    kept = event == "upd" and onkept.kept(cv, (j,))
    # after a statement logged v_n rows: its readers, the apply's hint, the note of the table
    tail = ""
    if cv.readers:  # before the view is noted in tidemark.pending
        tail += f"IF v_n > 0 AND {first} THEN{readers_sql(cv.readers)}\nEND IF;\n"
    if kept:  # the apply's hint (streaming_views.onkept)
        tail += f"IF v_n > 0 THEN\n  v_b := set_config('{onkept.HINT}', 'on', true);\nEND IF;\n"
    tail += noted_one(cv, j) if one and from_new(cv, j) else noted_pending(cv, j, "v_n > 0 AND ")
    # the tail only notes the table: a one-row UPDATE's VALUES notes it in the statement that
    # logs the pair (noting) and skips the tail. Not where the pair is logged through a
    # WHERE (a filter pushed to the log), nor by a one-row INSERT or DELETE's INSERT ...
    # SELECT: a volatile call in a SELECT list keeps the planner from flattening the
    # INSERT's SELECT (+12k instructions a statement, +2.5k with the note in WHERE instead)
    folded_pair = single and not cv.readers and not kept and not filtered(cv, j)
    # a net pair (streaming_views.netpair): v_x.__ch is 1, logged with the note, no tail
    net = single and not cv.readers and not kept and bool(net_columns(cv, j))
    branches = []  # (condition, statement); the first whose condition holds runs
    if single:  # the statement changed one row (read into v_x), else none or several
        probe, insert, net_insert = log_update_single(
            cv, j, noting(cv, j) if folded_pair else first, noting_net(cv, j) if net else None)

        branches.append((f"NOT EXISTS (SELECT 1 FROM {rel} OFFSET 1)", "NULL;"))
    if batchable(cv, j) and not live:  # a large statement: one batch row, applied as a large delta
        branches.append((f"EXISTS (SELECT 1 FROM {rel} OFFSET {BIG_DELTA})",
                         f"{log_batch(cv, j, event, first)} INTO v_n;\n"
                         f"  v_n := CASE WHEN v_n IS NULL THEN 0 ELSE {BIG_DELTA + 1} END;\n"
                         f"  {noted_big(cv).rstrip()}"))
    if event == "upd" and not live:  # at most 2 * PAIRED_ROWS rows: never a large delta
        branches.append((f"NOT EXISTS (SELECT 1 FROM {rel} OFFSET {PAIRED_ROWS})",
                         f"{log_update_paired(cv, j, marker=first)};\n  {count}"))
    # after the batch branch an INSERT or DELETE logs at most BIG_DELTA rows: never large
    small = batchable(cv, j) and not live and event != "upd"
    plain = f"{log_insert(cv, j, event, marker=first)};\n  {count if small else exact}"
    read = f"v_p := coalesce(current_setting('{PENDING}', true), '');\n"
    body = "" if single else read
    if one:
        body += f"{log_one_row(cv, j, event, first)};\n{count}\nIF v_n = 0 THEN\n"
    if not branches:
        body += f"{plain}\n"
    else:
        body += "".join(f"{'IF' if n == 0 else 'ELSIF'} {condition} THEN\n  {statement}\n"
                        for n, (condition, statement) in enumerate(branches))
        body += f"ELSE\n  {plain}\nEND IF;\n"
    if one:
        body += "END IF;\n"
    # a one-row UPDATE: v_x.__ch is true when the view can tell its rows apart, false when it
    # cannot (nothing to read nor note), NULL when the statement changed no row or several
    # (v_x is then a row of NULLs, and FOUND false)
    changed = "v_x.__ch = 2" if net else "v_x.__ch"
    if net:
        probe += f";\nIF v_x.__ch = 1 THEN\n  {read}  {net_insert};\n  RETURN NULL;\nEND IF"
    if folded_pair:
        body = (f"{probe};\nIF {changed} THEN\n  {read}  {insert};\n  RETURN NULL;\nEND IF;\n"
                f"IF FOUND THEN\n  RETURN NULL;\nEND IF;\n{read}{body}")
    elif single:
        body = (f"{probe};\nIF {changed} THEN\n  {read}  {insert};\n  {count}\n"
                f"ELSIF FOUND THEN\n  RETURN NULL;\nELSE\n{read}{body}END IF;\n")
    body += tail
    # v_n: the rows logged
    return _function(function_name(cv, f"l{j}_{event}"), "trigger",
                     "v_n bigint; v_p text; v_b text;" + (" v_x record;" if single else ""), body,
                     pinned=log_settings(cv, j))


def truncate_function(cv: CompiledView) -> str:
    """The TRUNCATE trigger function: rebuild the view when the transaction commits."""
    body = (f"PERFORM tidemark.live_rebuild_at_commit("
            f"{sql.Literal(cv.suffix).as_string(None)}, {sql.Literal(cv.name).as_string(None)});")
    return _function(function_name(cv, "truncate"), "trigger", "", body)


def functions(cv: CompiledView) -> Functions:
    """The CREATE FUNCTION statements of the view's maintenance."""
    create = [
        _function(function_name(cv, "rebuild"), "void", "", rebuild_body(cv)),
        truncate_function(cv),
        _function(function_name(cv, "apply"), "trigger",
                  "v_m int; v_r text; v_p text; v_rest text; v_names text[]; v_big boolean; "
                  "v_zero tid[]; v_dirty boolean; v_tid tid; v_cnt bigint; v_d boolean;",
                  apply_body(cv), APPLY_SETTINGS, apply_settings(cv)),
    ]
    for t in cv.resolved.tables:
        create += [log_function(cv, t.index, event) for event in EVENTS]
    return Functions(create + log_triggers(cv, function_name(cv, "apply")))


def state_ddl(cv: CompiledView) -> list[str]:
    """CREATE TABLE of the state and its indexes (unique on the keys, NULLs equal), the
    auxiliary tables and the change logs.

    No index reads ``__count`` (nor any other aggregate column): every commit updates its
    groups' counts, and an update that changes no indexed column is HOT — no new index entries
    in the keys index, the old version pruned in its page. Under 4 writers on 20 hot groups a
    partial index ``(__count) WHERE __count = 0`` made every such update non-HOT (the state of
    20 rows grew to 40 pages in 11,000 commits). Groups whose count fell to zero are deleted
    by the row ids the apply returns (:data:`streaming_views.compiler.SUMMARY`)."""
    cols = ", ".join(f"{q(n)} {t}" for n, t in cv.state_columns())
    keys = ", ".join(q(n) for n, _ in cv.keys)
    # a view without GROUP BY keeps one row, updated by every commit: pruned early, its chain
    # of dead versions stays short (streaming_views.runtime.LOCK_ROW_FILLFACTOR); not for
    # groups, whose rows share a page: one pruned at every access cost more than it saved
    fill = f" WITH (fillfactor = {LOCK_ROW_FILLFACTOR})" if cv.analysis.is_global else ""
    stmts = [f"CREATE TABLE {cv.state} ({cols}){fill}",
             holder_ddl(f"{q(STATE_SCHEMA)}.{q(holder_name(cv.suffix))}"),
             f"CREATE UNIQUE INDEX {q(cv.suffix + '__keys')} ON {cv.state} ({keys}) "
             f"NULLS NOT DISTINCT"]
    if cv.has_recompute:
        stmts.append(f"CREATE INDEX {q(cv.suffix + '__dirty')} ON {cv.state} (__dirty) "
                     f"WHERE __dirty")
    return stmts + aux_ddl(cv) + log_ddl(cv)
