# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Generate the maintenance functions of a compiled view and its state DDL.

Per base table ``j`` (and every partition or inheritance child of it) there are three
statement-level AFTER triggers (INSERT, UPDATE, DELETE) with transition tables and one AFTER
TRUNCATE trigger (created by ``tidemark.live_attach_triggers``, :mod:`streaming_views.runtime`):

1. a statement's trigger appends its transition rows to the table's change log
   (:mod:`streaming_views.deltas`) — no lock on the view, no read of other tables — and notes
   the table in the transaction-local ``tidemark.pending``; the first time for the view in the
   transaction it also appends a marker row, which fires the view's deferred constraint trigger
   at commit (or PREPARE TRANSACTION); TRUNCATE asks for a rebuild;
2. at commit, ``<suffix>__apply()`` locks the base tables its apply reads (ACCESS SHARE, by
   OID, :mod:`streaming_views.lockorder`), then takes the view's lock (a transaction-level
   advisory lock: commits of one view are applied one after the other; when a transaction
   changed several views, the first of them to apply locks all of them in key order, so writers
   never deadlock on views), then applies the logged changes in
   one statement (or rebuilds after a TRUNCATE), deletes groups whose count fell to zero (and
   values whose multiplicity did) and recomputes the groups marked dirty.

Every function runs with the pinned session settings (:mod:`streaming_views.session`) as its
``SET`` clauses, so maintenance does not depend on the writer's TimeZone, DateStyle, search_path...
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from psycopg import sql

from streaming_views import onkept
from streaming_views.astutil import q
from streaming_views.auxiliary import aux_build_sql, aux_clear_sql, aux_ddl, aux_zero_sql
from streaming_views.bounds import count_sql
from streaming_views.compiler import STATE_SCHEMA, CompiledView, looped
from streaming_views.deltas import (
    BIG_DELTA,
    EVENTS,
    PAIRED_ROWS,
    apply_settings,
    apply_statement,
    batchable,
    filtered,
    log_batch,
    log_ddl,
    log_insert,
    log_one_row,
    log_settings,
    log_table,
    log_trigger_names,
    log_triggers,
    log_update_paired,
    log_update_single,
    marker_row,
    masks,
    timed_conjuncts,
)
from streaming_views.expiry import is_timed
from streaming_views.layers import READERS, is_live, readers_sql
from streaming_views.lockorder import (
    holder_ddl,
    holder_name,
    holder_sql,
    lock_tables_sql,
    view_lock_sql,
)
from streaming_views.netpair import net_bit, net_columns, net_text, net_token
from streaming_views.onegroup import from_new, one_per_group, single_bit, single_text, single_token
from streaming_views.runtime import BIG, LOCK_ROW_FILLFACTOR, PENDING, REBUILD
from streaming_views.session import set_clauses


@dataclass(frozen=True)
class Functions:
    """The DDL of a view's maintenance functions (after its tables), and of the deferred
    triggers on its change logs (after the functions)."""

    create: list[str]


# The apply plans its statements without sequential scans (see _apply_changed); the function's
# SET clause restores the writer's value when it returns (no save and restore per commit).
# No JIT: before PostgreSQL 18 a disabled scan adds disable_cost (1e10) to a plan that cannot
# avoid it (the recompute's IS NOT DISTINCT FROM branch), far above jit_above_cost, so each
# commit JIT-compiled (inlined and optimised) its statements anew: 0.4-0.6 s a commit on 15
# (round 38, y38). A commit's statements touch the transaction's groups only.
APPLY_SETTINGS = " SET enable_seqscan = off SET jit = off"


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


def _token(cv: CompiledView, j: int | None = None) -> str:
    """The view's token in the transaction-local lists (`` name/j `` or `` name ``)."""
    text = f" {cv.name}/{j} " if j is not None else f" {cv.name} "
    return sql.Literal(text).as_string(None)


def _noted_big(cv: CompiledView) -> str:
    """Note a statement that logged more than :data:`BIG_DELTA` rows (``v_n``) in
    ``tidemark.big``: the view's delta is then planned for its size."""
    return (f"IF v_n > {BIG_DELTA} THEN\n"
            f"  v_b := set_config('{BIG}', coalesce(current_setting('{BIG}', true), '') || "
            f"{_token(cv)}, true);\nEND IF;\n")


def _noted_pending(cv: CompiledView, j: int, guard: str = "") -> str:
    """Note table ``j`` in ``tidemark.pending`` (read into ``v_p``) unless it is there; with
    ``guard`` (a condition and ``AND``), only when that holds too."""
    return (f"IF {guard}strpos(v_p, {_token(cv, j)}) = 0 THEN\n"
            f"  v_p := set_config('{PENDING}', v_p || {_token(cv, j)}, true);\nEND IF;")


def _noted_one(cv: CompiledView, j: int) -> str:
    """:func:`_noted_pending` after a one-row INSERT or DELETE's statement logged ``v_n`` rows:
    the token :func:`_single_token` when that is one row and the view is new in the
    transaction."""
    return (f"IF v_n > 0 AND strpos(v_p, {_token(cv, j)}) = 0 THEN\n"
            f"  v_p := set_config('{PENDING}', v_p || CASE WHEN v_n = 1 AND {_new_view(cv)} "
            f"THEN {single_token(cv, j)} ELSE {_token(cv, j)} END, true);\nEND IF;")


def _noting_net(cv: CompiledView, j: int) -> str:
    """:func:`_noting` for a net pair (:mod:`streaming_views.netpair`): when the view is new in
    the transaction, it notes :func:`streaming_views.netpair.net_token` (and the row is the
    marker); else table ``j`` as usual."""
    return (f"CASE WHEN {_new_view(cv)} THEN set_config('{PENDING}', v_p || "
            f"{net_token(cv, j)}, true) IS NOT NULL WHEN strpos(v_p, {_token(cv, j)}) > 0 "
            f"THEN false ELSE set_config('{PENDING}', v_p || {_token(cv, j)}, true) IS NULL END")


def _register(cv: CompiledView, j: int, *, read: bool = True, marker: bool = True) -> str:
    """After rows were logged for table ``j``: note the table in ``tidemark.pending`` (and a
    large statement in ``tidemark.big``: planned for its size); the first time for the view in
    the transaction, append the marker row that fires its deferred ``apply`` at commit (unless
    ``marker`` is false: the statement that logged the rows appended it, see
    :func:`streaming_views.deltas.appending`). With ``read`` false, ``v_p`` and ``v_first``
    were read before the rows were logged. (After ``SET CONSTRAINTS ALL IMMEDIATE`` a marker
    appended inside a statement's trigger fires the apply at once, at trigger depth 2: the apply
    postpones itself to the commit, where it finds these settings.)"""
    first = _first(cv) if read else ""
    tail = ""
    if marker or cv.readers:
        insert = f"\n  {marker_row(cv, j)};" if marker else ""
        tail = f"\nIF v_first THEN{insert}{readers_sql(cv.readers)}\nEND IF;"
    return f"{first}{_noted_big(cv)}{_noted_pending(cv, j)}{tail}"


register = _register  # a temporal view's tick logs rows like a write (streaming_views.expiry)


def _new_view(cv: CompiledView) -> str:
    """Condition: the view is not in ``tidemark.pending`` (read into ``v_p``) yet."""
    return f"strpos(v_p, {sql.Literal(f' {cv.name}/').as_string(None)}) = 0"


def _noting(cv: CompiledView, j: int) -> str:
    """SQL condition: the view is new in ``tidemark.pending`` (read into ``v_p``) — the
    ``__tm_first`` of the first row a one-row UPDATE's VALUES logs for table ``j`` (the
    marker) — which also notes the table there unless it is noted already. The ``set_config``
    runs inside the statement that logs the rows: no PL/pgSQL ``IF`` nor assignment after it
    (each is set up again in every transaction, and a volatile one takes a new snapshot).
    ``v_p`` is a parameter, read before the statement: the note does not change what the
    condition reads (reading the setting in the statement instead costs more: each function
    call of an expression is set up again in every execution)."""
    return (f"CASE WHEN strpos(v_p, {_token(cv, j)}) > 0 THEN false "
            f"WHEN set_config('{PENDING}', v_p || {_token(cv, j)}, true) IS NULL THEN false "
            f"ELSE {_new_view(cv)} END")


def _first(cv: CompiledView) -> str:
    """Read ``tidemark.pending`` into ``v_p`` and whether the view is new in it into ``v_first``."""
    return (f"v_p := coalesce(current_setting('{PENDING}', true), '');\n"
            f"v_first := {_new_view(cv)};\n")


def log_function(cv: CompiledView, j: int, event: str) -> str:
    """The statement trigger function of base table ``j`` for ``event`` (ins, upd, del); a small
    UPDATE logs only the rows whose columns read by the view changed. When the view is new in
    the transaction, the first row the statement logs is the transaction's marker (it fires the
    deferred apply at commit, see :func:`streaming_views.deltas.appending`): no row of its own.

    Few statements and PL/pgSQL expressions run per statement (each is set up again in every
    transaction): an UPDATE first reads its pair of rows when it changed exactly one row (a
    one-time test in the same SELECT) and logs them only when the view can tell them apart
    (:func:`streaming_views.deltas.log_update_single`: an UPDATE of columns the view does not
    read runs no INSERT, and returns before it reads ``tidemark.pending``; one it can tell
    apart notes its table in the statement that logs the pair, :func:`_noting`, and returns),
    a one-row INSERT or DELETE is logged by one statement
    (:func:`streaming_views.deltas.log_one_row`); whether
    the view is new in the transaction is tested where it is used, and only the branches that can
    log more than :data:`BIG_DELTA` rows test the count for a large delta. A function whose
    expressions read no session setting pins only :data:`streaming_views.session.NAMES_ONLY`
    (and those its filters read: :func:`streaming_views.deltas.log_settings`)."""
    rel = "__tm_old" if event == "del" else "__tm_new"
    live = is_live(cv.resolved.tables[j])  # live view: its rows come from the inner's SELECT
    first = _new_view(cv)
    count = "GET DIAGNOSTICS v_n = ROW_COUNT;"
    exact = f"{count}\n  {_noted_big(cv).rstrip()}"
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
    tail += _noted_one(cv, j) if one and from_new(cv, j) else _noted_pending(cv, j, "v_n > 0 AND ")
    # the tail only notes the table: a one-row UPDATE's VALUES notes it in the statement that
    # logs the pair (_noting) and skips the tail. Not where the pair is logged through a
    # WHERE (a filter pushed to the log), nor by a one-row INSERT or DELETE's INSERT ...
    # SELECT: a volatile call in a SELECT list keeps the planner from flattening the
    # INSERT's SELECT (+12k instructions a statement, +2.5k with the note in WHERE instead)
    folded_pair = single and not cv.readers and not kept and not filtered(cv, j)
    # a net pair (streaming_views.netpair): v_x.__ch is 1, logged with the note, no tail
    net = single and not cv.readers and not kept and bool(net_columns(cv, j))
    branches = []  # (condition, statement); the first whose condition holds runs
    if single:  # the statement changed one row (read into v_x), else none or several
        probe, insert, net_insert = log_update_single(
            cv, j, _noting(cv, j) if folded_pair else first, _noting_net(cv, j) if net else None)

        branches.append((f"NOT EXISTS (SELECT 1 FROM {rel} OFFSET 1)", "NULL;"))
    if batchable(cv, j) and not live:  # a large statement: one batch row, applied as a large delta
        branches.append((f"EXISTS (SELECT 1 FROM {rel} OFFSET {BIG_DELTA})",
                         f"{log_batch(cv, j, event, first)} INTO v_n;\n"
                         f"  v_n := CASE WHEN v_n IS NULL THEN 0 ELSE {BIG_DELTA + 1} END;\n"
                         f"  {_noted_big(cv).rstrip()}"))
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


def rebuild_body(cv: CompiledView) -> str:
    """Statements replacing the state with a full build from the base tables."""
    stmts = [f"DELETE FROM {cv.state}", cv.build_sql(), *aux_clear_sql(cv), *aux_build_sql(cv)]
    t = cv.analysis.temporal
    if t is not None and t.guard is not None:  # after a TRUNCATE: count the table again
        stmts.append(count_sql(t, timed_conjuncts(cv)))
    return "".join(f"{s};\n" for s in stmts)


def _apply_changed(cv: CompiledView, changed: tuple[int, ...], first: bool) -> str:
    """The branches applying the logs of ``changed`` in one statement: when ``v_m`` is their
    mask, as planned once (a transaction's rows are estimated few, see
    :func:`streaming_views.deltas.log_ddl`); when it is their mask plus :func:`_big_bit` (a large
    delta), planned afresh with hash joins instead of one index probe per row. ``first``: the
    first branch (``IF``, else ``ELSIF``). Both delete the groups whose count fell to zero by
    their row ids, which the upsert returned: the small delta's statement returns the rows it
    upserted, looked at one by one (:func:`streaming_views.compiler.looped`: no CTE scan nor
    aggregate over them; PL/pgSQL runs the statement to its end before the loop's first row),
    the large one's the summary of them (:data:`streaming_views.compiler.SUMMARY`). A lone
    one-row write (:func:`from_new`, noted :func:`_single_token`) takes the mask's statement
    with the log's row read from the apply's ``NEW`` (the row that fired it) and deleted unread.

    The statement planned once is planned without sequential scans (the ``apply`` function's
    ``SET enable_seqscan = off``, see :data:`APPLY_SETTINGS`): its plan is cached for the
    session, and made while a log holds a page or two it would read the log by a sequential
    scan — which then visits every page the log has grown to (dead rows of committed
    transactions, until the next vacuum) instead of the transaction's index entries. It reads
    the transaction id from ``pg_current_xact_id()`` (stable: an index condition), not from a
    variable: the plan has no parameter."""
    static = looped(apply_statement(cv, changed, batches=False, tx="pg_current_xact_id()"),
                    cv.has_recompute)
    dynamic = sql.Literal(apply_statement(cv, changed, tx="$1")).as_string(None)
    into, dirty = ("v_tid, v_cnt, v_d", " IF v_d THEN v_dirty := true; END IF;") \
        if cv.has_recompute else ("v_tid, v_cnt", "")
    zero, zeros = "", ""
    if not cv.analysis.is_global:  # by row id (the apply returned them; its row locks hold)
        zero = (f" IF v_cnt = 0 THEN DELETE FROM {cv.state} WHERE ctid = v_tid AND "
                f"__count = 0; END IF;")
        zeros = (f"  IF v_zero IS NOT NULL THEN\n    DELETE FROM {cv.state} "
                 f"WHERE ctid = ANY(v_zero) AND __count = 0;\n  END IF;\n")
    mask = sum(1 << j for j in changed)
    each = f"{zero}{dirty}" or " NULL;"
    if zero and dirty:  # one IF per row returned in the common case (count > 0, not dirty)
        each = f" IF v_cnt = 0 OR v_d THEN{each} END IF;"
    loop = f"FOR {into} IN {static} LOOP{each} END LOOP;"
    if onkept.kept(cv, changed):  # an outer join's NULL-extended table, its ON kept: no recount
        fast = looped(apply_statement(cv, changed, batches=False, tx="pg_current_xact_id()",
                                      kept=True), cv.has_recompute)
        loop = (f"IF current_setting('{onkept.HINT}', true) = 'on' THEN\n"
                f"  IF {onkept.test(cv, changed[0], log_table(cv, changed[0]))} THEN\n"
                f"    FOR {into} IN {fast} LOOP{each} END LOOP;\n"
                f"  ELSE\n    {loop}\n  END IF;\n  ELSE\n    {loop}\n  END IF;")
    one = ""
    if len(changed) == 1 and from_new(cv, changed[0]):  # the log's one row: the apply's NEW,
        # unless NEW is a marker: an apply fired inside the statement that logged the row
        # postponed itself with a marker (a second row) before the statement noted the row
        fast = looped(apply_statement(cv, changed, batches=False, tx="pg_current_xact_id()",
                                      row="NEW", one_row=one_per_group(cv, changed[0])),
                      cv.has_recompute)
        one = (f"ELSIF v_m = {mask + single_bit(cv)} THEN\n"
               f"  IF NEW.__tm_sign <> 0 THEN\n    FOR {into} IN {fast} LOOP{each} END LOOP;\n"
               f"  ELSE\n    {loop}\n  END IF;\n")
    if len(changed) == 1 and net_columns(cv, changed[0]):  # a net pair: its new row alone
        fast = looped(apply_statement(cv, changed, batches=False, tx="pg_current_xact_id()",
                                      net=True), cv.has_recompute)
        one += (f"ELSIF v_m = {mask + net_bit(cv)} THEN\n"
                f"  FOR {into} IN {fast} LOOP{each} END LOOP;\n")
    return (f"{'IF' if first else 'ELSIF'} v_m = {mask} THEN\n"
            f"  {loop}\n{one}"
            f"ELSIF v_m = {mask + _big_bit(cv)} THEN\n"
            "  v_r := current_setting('enable_nestloop');\n"
            "  v_p := set_config('enable_nestloop', 'off', true);\n"
            "  v_p := set_config('enable_seqscan', 'on', true);\n"
            f"  EXECUTE {dynamic} INTO v_zero, v_dirty USING pg_current_xact_id();\n"
            f"  v_p := set_config('enable_nestloop', v_r, true);\n{zeros}")


def _big_bit(cv: CompiledView) -> int:
    """The bit of ``v_m`` telling a large delta (above the bits of the tables changed)."""
    return 1 << len(cv.tables)


def _lock_views(cv: CompiledView) -> str:
    """When other views (or readers) are pending in the transaction too: lock the base tables
    of all of them (:mod:`streaming_views.lockorder`), then the views' locks in key order
    (``tidemark.live_lock_views``); else the view's own base tables. Its tables are
    left out of ``tidemark.pending`` (read into ``v_p``)."""
    rest = "v_p"
    for j in range(len(cv.tables)):
        rest = f"replace({rest}, {_token(cv, j)}, '')"
        if from_new(cv, j):
            rest = f"replace({rest}, {single_token(cv, j)}, '')"
        if net_columns(cv, j):
            rest = f"replace({rest}, {net_token(cv, j)}, '')"
    return (f"v_p := coalesce(current_setting('{PENDING}', true), '');\n"
            f"v_rest := {rest};\n"
            f"v_r := coalesce(current_setting('{READERS}', true), '');\n"
            f"IF v_rest <> '' OR v_r <> '' THEN\n"
            f"  v_names := array(SELECT DISTINCT split_part(x, '/', 1) FROM "
            f"unnest(string_to_array(btrim(v_p || v_r), ' ')) AS x WHERE x <> '');\n"
            f"  PERFORM tidemark.live_lock_tables(v_names);\n"
            f"  PERFORM tidemark.live_lock_views(v_names);\n"
            f"ELSE\n  {lock_tables_sql(cv)};\nEND IF;\n"
            f"v_rest := set_config('{PENDING}', v_rest, true);\n")


def _lock_row(cv: CompiledView, *, checked: bool = True) -> str:
    """Take the view's lock: its transaction-level advisory lock (after the base tables, see
    :func:`_lock_views`; :mod:`streaming_views.lockorder`), and record the transaction in the
    view's holder sequence. It writes no tuple: ``seq`` of ``tidemark.live_changes`` moves only
    while someone subscribes (:mod:`streaming_views.sublog`). Without ``checked`` (the common
    path, READ COMMITTED only: :func:`_alone`) no snapshot check."""
    holder = f"{q(STATE_SCHEMA)}.{q(holder_name(cv.suffix))}"
    return holder_sql(holder, view_lock_sql(cv.name), checked=checked)


READ_COMMITTED = "read committed"  # current_setting('transaction_isolation')


def _alone(cv: CompiledView) -> str:
    """``v_m``: -1 when fired inside a statement (see :func:`_postpone`); the set of tables
    changed (bit ``j``: table ``j``) when the transaction changed one or two of the view's
    tables and nothing else — no other view pending, no reader, no rebuild, no large
    statement, READ COMMITTED (other levels check their snapshot under the view's lock,
    :func:`_lock_row`): the common case, told by ONE expression (the position of the lists'
    text among the common cases' texts); else 0 (read the lists one by one)."""
    # concat(): one call (NULL: empty) for four coalesce() and three ||, in an expression set
    # up again in every transaction; the isolation level last (each common case's text ends
    # with 'read committed'): one more argument, not one more WHEN
    lists = "concat(" + ", ".join([*(f"current_setting('{name}', true)"
                                     for name in (PENDING, READERS, REBUILD, BIG)),
                                   "current_setting('transaction_isolation')"]) + ")"
    orders = [o for size in (1, 2) for o in permutations(range(len(cv.tables)), size)]
    # one array_position() over constant arrays: a CASE's WHEN each cost an expression step
    # (and its set-up) per transaction (~1.7k instructions each, 4 for a two-table view)
    texts = ", ".join(sql.Literal("".join(f" {cv.name}/{j} " for j in o) + READ_COMMITTED)
                      .as_string(None) for o in orders)
    values = ", ".join(str(sum(1 << j for j in o)) for o in orders)
    ones = [j for j in range(len(cv.tables)) if from_new(cv, j)]  # one row: applied from NEW
    texts += "".join(", " + sql.Literal(single_text(cv, j) + READ_COMMITTED).as_string(None)
                     for j in ones)
    values += "".join(f", {(1 << j) + single_bit(cv)}" for j in ones)
    nets = [j for j in range(len(cv.tables)) if net_columns(cv, j)]  # a net pair (netpair.py)
    texts += "".join(", " + sql.Literal(net_text(cv, j) + READ_COMMITTED).as_string(None)
                     for j in nets)
    values += "".join(f", {(1 << j) + net_bit(cv)}" for j in nets)
    return (f"v_m := CASE WHEN pg_trigger_depth() > 1 THEN -1 ELSE coalesce((ARRAY[{values}])"
            f"[array_position(ARRAY[{texts}]::text[], {lists})], 0) END;\n")


def _or_single(cv: CompiledView, j: int) -> str:  # ... or table j's one-row/net token is in v_p
    out = f" OR strpos(v_p, {single_token(cv, j)}) > 0" if from_new(cv, j) else ""
    return out + (f" OR strpos(v_p, {net_token(cv, j)}) > 0" if net_columns(cv, j) else "")


def _postpone(cv: CompiledView) -> str:
    """Fired inside a statement (after ``SET CONSTRAINTS ALL IMMEDIATE``, a marker fires the
    apply at once, from within the statement's triggers): another table the statement changed
    may not be logged yet, so the view's deferred triggers are made deferred again and a new
    marker postpones the apply to the commit. (At commit, and at ``SET CONSTRAINTS ... IMMEDIATE``
    itself, the trigger depth is 1.)"""
    names = ", ".join(f"{q(STATE_SCHEMA)}.{q(trigger)}" for trigger in log_trigger_names(cv))
    return ("  IF v_m < 0 THEN\n"
            f"    SET CONSTRAINTS {names} DEFERRED;\n"
            f"    {marker_row(cv, 0)};\n"
            "    RETURN NULL;\n  END IF;\n")


def apply_body(cv: CompiledView) -> str:
    """The commit-time maintenance of the view (see the module docstring). The common case
    (:func:`_alone`) skips the bookkeeping of the others: few statements and expressions — each
    PL/pgSQL expression is set up again in every transaction (its evaluation state lives for
    the transaction), so the common case evaluates three (``v_m``, ``v_m <= 0``, the branch)
    besides its statements. ``v_m`` then selects the branch applying the changed tables: their
    mask, plus :func:`_big_bit` for a large delta."""
    token = _token(cv)
    clear_all = "".join(f"DELETE FROM {log_table(cv, t.index)} "
                        f"WHERE __tm_tx = pg_current_xact_id();\n" for t in cv.resolved.tables)
    big = f"CASE WHEN v_big THEN {_big_bit(cv)} ELSE 0 END"
    if len(cv.tables) == 1:
        changed = f"1 + {big}"  # applied even if only a marker was logged: an empty delta
    else:
        probes = " + ".join(f"(CASE WHEN strpos(v_p, {_token(cv, j)}) > 0{_or_single(cv, j)} "
                            f"THEN {1 << j} ELSE 0 END)" for j in range(len(cv.tables)))
        changed = f"{probes} + {big}"
    body = (f"{_alone(cv)}IF v_m <= 0 THEN\n{_postpone(cv)}{_lock_views(cv)}{_lock_row(cv)}"
            f"v_r := coalesce(current_setting('{REBUILD}', true), '');\n"
            f"IF strpos(v_r, {token}) > 0 THEN\n"
            f"  v_r := set_config('{REBUILD}', replace(v_r, {token}, ''), true);\n"
            f"  v_r := set_config('enable_seqscan', 'on', true);\n"
            f"{rebuild_body(cv)}{clear_all}  RETURN NULL;\nEND IF;\n"
            f"v_big := strpos(coalesce(current_setting('{BIG}', true), ''), {token}) > 0;\n"
            f"IF v_big THEN\n  v_r := set_config('{BIG}', replace(current_setting('{BIG}'), "
            f"{token}, ''), true);\nEND IF;\n"
            f"v_m := {changed};\n"
            f"ELSE\n  v_p := set_config('{PENDING}', '', true);\n  {lock_tables_sql(cv)};\n"
            f"{_lock_row(cv, checked=False)}END IF;\n")
    for n, changed_tables in enumerate(masks(cv)):
        body += _apply_changed(cv, changed_tables, n == 0)
    body += f"ELSE\n{clear_all}END IF;\n" if len(cv.tables) > 1 else "END IF;\n"
    body += "".join(f"{stmt};\n" for stmt in aux_zero_sql(cv))
    if cv.has_recompute:
        # partial index on __dirty: only marked groups; none marked (the apply's upsert
        # returned none: an insert, or a delete of no group's extreme): not run at all
        body += f"IF v_dirty THEN\n  {cv.recompute_sql()};\nEND IF;\n"
    return body


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
