# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Generate the maintenance functions and triggers of a compiled view.

Per base table there are three statement-level AFTER triggers (INSERT, UPDATE, DELETE) with
transition tables and one AFTER TRUNCATE trigger that rebuilds the view. Each trigger function:

1. (multi-table views only) keeps track of statements still open on the view's other tables —
   a BEFORE STATEMENT trigger notes the table in a transaction-local setting — and when another
   base table of the view changed in the same statement (a writable CTE, an ON DELETE CASCADE) it
   defers to the last AFTER trigger, which rebuilds the view (the delta of one table joined with
   another table's post-statement state would be wrong);
2. (multi-table views only) takes a transaction-level advisory lock on the view, so concurrent
   writers maintain it one after the other, each statement reading the others' commits;
3. groups the transition table's rows (joined to the other base tables) per group key and adds
   them in one INSERT ... ON CONFLICT DO UPDATE (row locks on the touched groups, in key order);
   with distinct aggregates the same statement first updates their (group, value,
   multiplicity) tables (:mod:`streaming_views.auxiliary`, row locks in (group, value) order);
4. deletes groups whose count fell to zero (and values whose multiplicity did), and recomputes
   the min/max aggregates of the groups marked dirty — in a new statement, so it sees every
   commit up to the row locks;
5. notifies channel ``tidemark_views`` with the view name (for ``views subscribe``).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from streaming_views.auxiliary import (
    aux_build_sql,
    aux_clear_sql,
    aux_ddl,
    aux_zero_sql,
    delta_statement,
)
from streaming_views.compiler import STATE_SCHEMA, CompiledView, q

CHANNEL = "tidemark_views"
BIG_DELTA = 1000  # rows in a transition table above which the delta is planned afresh
EVENTS = {"ins": "INSERT", "upd": "UPDATE", "del": "DELETE"}


@dataclass(frozen=True)
class TriggerSet:
    """The DDL of a view's maintenance: functions, triggers, and their drop statements."""

    create: list[str]
    drop: list[str]


def _fn(cv: CompiledView, what: str) -> str:
    return f"{q(STATE_SCHEMA)}.{q(f'{cv.suffix}__{what}')}"


def _trigger_name(cv: CompiledView, what: str) -> str:
    return q(f"tm_{cv.suffix}_{what}")


def _setting(cv: CompiledView) -> str:
    return f"tidemark.open_{cv.hash[:12]}"


def _function(name: str, declare: str, body: str) -> str:
    return (f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path = pg_catalog, pg_temp AS $tm$\nDECLARE\n{declare}\nBEGIN\n"
            f"{body}\nRETURN NULL;\nEND\n$tm$")


def rebuild_body(cv: CompiledView) -> str:
    """Statements replacing the state with a full build from the base tables."""
    lock = (f"PERFORM pg_advisory_xact_lock({cv.lock_key});\n"
            if len(cv.tables) > 1 else "")
    aux = "".join(f"{stmt};\n" for stmt in aux_clear_sql(cv) + aux_build_sql(cv))
    return (f"{lock}DELETE FROM {cv.state};\n{cv.build_sql()};\n{aux}"
            f"PERFORM pg_notify('{CHANNEL}', '{cv.name}');")


def _guard(cv: CompiledView, index: int) -> str:
    """Multi-table bookkeeping at the start of an AFTER trigger (see module docstring).

    The transaction-local setting lists the statements still open on the view's tables as
    ``<table index>;`` entries, prefixed with ``!`` once the view must be rebuilt.
    """
    setting = _setting(cv)
    mark = f"{index};"
    return f"""v_open := coalesce(current_setting('{setting}', true), '');
IF v_open = '{mark}' THEN
  PERFORM set_config('{setting}', '', true);
ELSE
  v_stale := starts_with(v_open, '!');
  v_open := ';' || ltrim(v_open, '!');
  v_pos := strpos(v_open, ';{mark}');
  IF v_pos > 0 THEN
    v_open := overlay(v_open placing ';' from v_pos for {len(mark) + 1});
  END IF;
  v_open := ltrim(v_open, ';');
  IF v_open <> '' AND (v_stale OR EXISTS (
      SELECT 1 FROM unnest(string_to_array(rtrim(v_open, ';'), ';')) AS t(i)
      WHERE i <> '{index}')) THEN
    PERFORM set_config('{setting}', '!' || v_open, true);
    RETURN NULL;
  END IF;
  PERFORM set_config('{setting}', v_open, true);
  IF v_stale THEN
    {rebuild_body(cv)}
    RETURN NULL;
  END IF;
END IF;
IF current_setting('transaction_isolation') <> 'read committed' THEN
  RAISE EXCEPTION 'live view {cv.name} joins several tables and is maintained only by '
    'READ COMMITTED writers; this transaction is %', current_setting('transaction_isolation')
    USING HINT = 'write to its base tables at READ COMMITTED isolation';
END IF;
PERFORM pg_advisory_xact_lock({cv.lock_key});
"""


def delta_body(cv: CompiledView, index: int, event: str) -> str:
    """Statements applying one statement's transition tables of base table ``index``."""
    upsert = delta_statement(cv, cv.delta_select(index, event))
    dynamic = sql.Literal(upsert).as_string(None)
    # The cached plan is made for the first (usually small) statement; a large one is planned
    # for its real size (hash joins instead of index probes per row).
    probe = "__tm_old" if event == "del" else "__tm_new"
    body = (f"IF EXISTS (SELECT 1 FROM {probe} OFFSET {BIG_DELTA}) THEN\n"
            f"  EXECUTE {dynamic};\n  GET DIAGNOSTICS v_n = ROW_COUNT;\n"
            f"ELSE\n  {upsert};\n  GET DIAGNOSTICS v_n = ROW_COUNT;\nEND IF;\n")
    if not cv.analysis.is_global and event != "ins":
        # cheap: a partial index holds exactly the groups whose count fell to zero
        body += f"DELETE FROM {cv.state} WHERE __count = 0;\n"
    if event != "ins":  # multiplicities only fall on delete or update
        body += "".join(f"{stmt};\n" for stmt in aux_zero_sql(cv))
    if cv.has_recompute:
        body += f"{cv.recompute_sql()};\n"  # partial index on __dirty: only marked groups
    body += f"IF v_n > 0 THEN PERFORM pg_notify('{CHANNEL}', '{cv.name}'); END IF;"
    return body


def trigger_set(cv: CompiledView) -> TriggerSet:
    """Functions and triggers maintaining ``cv``, and the statements dropping them."""
    create: list[str] = []
    drop: list[str] = []
    multi = len(cv.tables) > 1
    declare = "v_n bigint; v_open text; v_pos int; v_stale boolean;"
    rebuild = _fn(cv, "rebuild")
    create.append(_function(rebuild, "", rebuild_body(cv)))
    drop.append(f"DROP FUNCTION IF EXISTS {rebuild}() CASCADE")
    for index, table in enumerate(cv.tables):
        rel = f"{q(table.schema)}.{q(table.name)}"
        if multi:
            fn = _fn(cv, f"t{index}_before")
            setting = _setting(cv)
            create.append(_function(fn, "", (
                f"PERFORM set_config('{setting}', coalesce(current_setting('{setting}', true), "
                f"'') || '{index};', true);")))
            drop.append(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
            create.append(f"CREATE TRIGGER {_trigger_name(cv, f't{index}_before')} BEFORE "
                          f"INSERT OR UPDATE OR DELETE ON {rel} FOR EACH STATEMENT EXECUTE "
                          f"FUNCTION {fn}()")
        for event, verb in EVENTS.items():
            fn = _fn(cv, f"t{index}_{event}")
            body = (_guard(cv, index) if multi else "") + delta_body(cv, index, event)
            create.append(_function(fn, declare, body))
            drop.append(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
            refs = {"ins": "NEW TABLE AS __tm_new", "del": "OLD TABLE AS __tm_old",
                    "upd": "OLD TABLE AS __tm_old NEW TABLE AS __tm_new"}[event]
            create.append(f"CREATE TRIGGER {_trigger_name(cv, f't{index}_{event}')} AFTER "
                          f"{verb} ON {rel} REFERENCING {refs} FOR EACH STATEMENT EXECUTE "
                          f"FUNCTION {fn}()")
        create.append(f"CREATE TRIGGER {_trigger_name(cv, f't{index}_truncate')} AFTER "
                      f"TRUNCATE ON {rel} FOR EACH STATEMENT EXECUTE FUNCTION {rebuild}()")
    return TriggerSet(create, drop)


def state_ddl(cv: CompiledView) -> list[str]:
    """CREATE TABLE of the state and its indexes (unique on the keys, NULLs equal)."""
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
    return stmts + aux_ddl(cv)
