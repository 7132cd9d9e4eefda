# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Generate the maintenance functions of a compiled view and its state DDL.

Per base table ``j`` (and every partition or inheritance child of it) there are three
statement-level AFTER triggers (INSERT, UPDATE, DELETE) with transition tables and one AFTER
TRUNCATE trigger (created by ``tidemark.live_attach_triggers``, :mod:`streaming_views.runtime`):

1. a statement's trigger appends its transition rows to the table's change log
   (:mod:`streaming_views.deltas`) — no lock on the view, no read of other tables — and, the
   first time in the transaction, registers the view with the commit hook; TRUNCATE registers a
   rebuild;
2. at commit, ``<suffix>__apply()`` updates the view's row of ``tidemark.live_changes`` (the
   view's lock: commits of one view are applied one after the other, in view-name order across
   views, so writers never deadlock on a view), then applies the logged changes in one statement
   (or rebuilds after a TRUNCATE), deletes groups whose count fell to zero (and values whose
   multiplicity did) and recomputes the groups marked dirty.

Every function runs with the pinned session settings (:mod:`streaming_views.session`) as its
``SET`` clauses, so maintenance does not depend on the writer's TimeZone, DateStyle, search_path...
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from streaming_views.astutil import q
from streaming_views.auxiliary import aux_build_sql, aux_clear_sql, aux_ddl, aux_zero_sql
from streaming_views.compiler import STATE_SCHEMA, CompiledView
from streaming_views.deltas import (
    BIG_DELTA,
    EVENTS,
    apply_statement,
    log_ddl,
    log_insert,
    log_table,
    masks,
)
from streaming_views.runtime import PENDING, REBUILD
from streaming_views.session import set_clauses


@dataclass(frozen=True)
class Functions:
    """The DDL of a view's maintenance functions."""

    create: list[str]


def function_name(cv: CompiledView, what: str) -> str:
    """The quoted maintenance function ``<suffix>__<what>``."""
    return f"{q(STATE_SCHEMA)}.{q(f'{cv.suffix}__{what}')}"


def _function(name: str, returns: str, declare: str, body: str) -> str:
    tail = "RETURN NULL;" if returns == "trigger" else "RETURN;"
    return (f"CREATE FUNCTION {name}() RETURNS {returns} LANGUAGE plpgsql SECURITY DEFINER "
            f"{set_clauses()} AS $tm$\nDECLARE\n{declare}\nBEGIN\n{body}\n{tail}\nEND\n$tm$")


def _register(cv: CompiledView) -> str:
    """Statements registering the view with the commit hook, once per transaction."""
    token = sql.Literal(f" {cv.suffix} ").as_string(None)
    return (f"v_p := coalesce(current_setting('{PENDING}', true), '');\n"
            f"IF strpos(v_p, {token}) = 0 THEN\n"
            f"  IF v_p = '' THEN INSERT INTO tidemark.live_pending DEFAULT VALUES; END IF;\n"
            f"  PERFORM set_config('{PENDING}', v_p || {token}, true);\nEND IF;")


def log_function(cv: CompiledView, j: int, event: str) -> str:
    """The statement trigger function of base table ``j`` for ``event`` (ins, upd, del)."""
    body = (f"{log_insert(cv, j, event)};\nGET DIAGNOSTICS v_n = ROW_COUNT;\n"
            f"IF v_n > 0 THEN\n{_register(cv)}\nEND IF;")
    return _function(function_name(cv, f"l{j}_{event}"), "trigger", "v_n bigint; v_p text;",
                     body)


def truncate_function(cv: CompiledView) -> str:
    """The TRUNCATE trigger function: rebuild the view when the transaction commits."""
    body = f"PERFORM tidemark.live_rebuild_at_commit({sql.Literal(cv.suffix).as_string(None)});"
    return _function(function_name(cv, "truncate"), "trigger", "", body)


def rebuild_body(cv: CompiledView) -> str:
    """Statements replacing the state with a full build from the base tables."""
    stmts = [f"DELETE FROM {cv.state}", cv.build_sql(), *aux_clear_sql(cv), *aux_build_sql(cv)]
    return "".join(f"{s};\n" for s in stmts)


def _apply_changed(cv: CompiledView, changed: tuple[int, ...]) -> str:
    """Apply the logs of ``changed``: one static statement, or for large deltas a statement
    planned for their real size (the logs read into arrays, whose length the planner sees)."""
    static = apply_statement(cv, changed)
    arrays = {j: f"${n}::{log_table(cv, j)}[]" for n, j in enumerate(changed, start=1)}
    dynamic = sql.Literal(apply_statement(cv, changed, arrays=arrays)).as_string(None)
    big = " OR ".join(f"EXISTS (SELECT 1 FROM {log_table(cv, j)} WHERE __tm_tx = v_tx "
                      f"OFFSET {BIG_DELTA})" for j in changed)
    fill = "".join(f"  v_a{j} := ARRAY(SELECT l FROM {log_table(cv, j)} AS l "
                   f"WHERE l.__tm_tx = v_tx);\n" for j in changed)
    using = ", ".join(f"v_a{j}" for j in changed)
    clear = "".join(f"  DELETE FROM {log_table(cv, j)} WHERE __tm_tx = v_tx;\n" for j in changed)
    return (f"IF {big} THEN\n{fill}  EXECUTE {dynamic} USING {using};\n{clear}"
            f"ELSE\n  {static};\nEND IF;\n")


def apply_body(cv: CompiledView) -> str:
    """The commit-time maintenance of the view (see the module docstring)."""
    name = sql.Literal(cv.name).as_string(None)
    token = sql.Literal(f" {cv.suffix} ").as_string(None)
    clear_all = "".join(f"DELETE FROM {log_table(cv, t.index)} WHERE __tm_tx = v_tx;\n"
                        for t in cv.resolved.tables)
    body = (f"UPDATE tidemark.live_changes SET seq = seq + 1, changed_at = now() "
            f"WHERE name = {name};\n"
            f"IF NOT FOUND THEN INSERT INTO tidemark.live_changes AS c (name, seq, changed_at) "
            f"VALUES ({name}, 1, now()) ON CONFLICT (name) DO UPDATE SET seq = c.seq + 1, "
            f"changed_at = now(); END IF;\n"
            f"v_r := coalesce(current_setting('{REBUILD}', true), '');\n"
            f"IF strpos(v_r, {token}) > 0 THEN\n"
            f"  PERFORM set_config('{REBUILD}', replace(v_r, {token}, ''), true);\n"
            f"{rebuild_body(cv)}{clear_all}  RETURN;\nEND IF;\n")
    if len(cv.tables) == 1:
        body += _apply_changed(cv, (0,))
    else:
        probes = " + ".join(
            f"(CASE WHEN EXISTS (SELECT 1 FROM {log_table(cv, j)} WHERE __tm_tx = v_tx) "
            f"THEN {1 << j} ELSE 0 END)" for j in range(len(cv.tables)))
        body += f"v_m := {probes};\n"
        for n, changed in enumerate(masks(cv)):
            mask = sum(1 << j for j in changed)
            branch = "IF" if n == 0 else "ELSIF"
            body += f"{branch} v_m = {mask} THEN\n{_apply_changed(cv, changed)}"
        body += "END IF;\n"
    if not cv.analysis.is_global:
        body += f"DELETE FROM {cv.state} WHERE __count = 0;\n"  # partial index: only those
    body += "".join(f"{stmt};\n" for stmt in aux_zero_sql(cv))
    if cv.has_recompute:
        body += f"{cv.recompute_sql()};\n"  # partial index on __dirty: only marked groups
    return body


def functions(cv: CompiledView) -> Functions:
    """The CREATE FUNCTION statements of the view's maintenance."""
    arrays = "".join(f"v_a{t.index} {log_table(cv, t.index)}[];" for t in cv.resolved.tables)
    create = [
        _function(function_name(cv, "rebuild"), "void", "", rebuild_body(cv)),
        truncate_function(cv),
        _function(function_name(cv, "apply"), "void",
                  f"v_tx xid8 := pg_current_xact_id(); v_m int; v_r text; {arrays}",
                  apply_body(cv)),
    ]
    for t in cv.resolved.tables:
        create += [log_function(cv, t.index, event) for event in EVENTS]
    return Functions(create)


def state_ddl(cv: CompiledView) -> list[str]:
    """CREATE TABLE of the state and its indexes (unique on the keys, NULLs equal), the
    auxiliary tables and the change logs."""
    cols = ", ".join(f"{q(n)} {t}" for n, t in cv.state_columns())
    keys = ", ".join(q(n) for n, _ in cv.keys)
    stmts = [f"CREATE TABLE {cv.state} ({cols})",
             f"CREATE UNIQUE INDEX {q(cv.suffix + '__keys')} ON {cv.state} ({keys}) "
             f"NULLS NOT DISTINCT"]
    if not cv.analysis.is_global:
        stmts.append(f"CREATE INDEX {q(cv.suffix + '__zero')} ON {cv.state} (__count) "
                     f"WHERE __count = 0")
    if cv.has_recompute:
        stmts.append(f"CREATE INDEX {q(cv.suffix + '__dirty')} ON {cv.state} (__dirty) "
                     f"WHERE __dirty")
    return stmts + aux_ddl(cv) + log_ddl(cv)
