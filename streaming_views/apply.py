# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""The body of a view's commit-time ``<suffix>__apply()``: the deferred trigger its change logs'
marker fires at commit (:mod:`streaming_views.triggers`, step 2).

It locks the base tables its apply reads (ACCESS SHARE, by OID, :mod:`streaming_views.lockorder`),
then takes the view's lock (a transaction-level advisory lock: commits of one view are applied
one after the other; when a transaction changed several views, the first of them to apply locks
all of them in key order, so writers never deadlock on views), then applies the logged changes
in one statement (:func:`streaming_views.deltas.apply_statement`; or rebuilds after a
TRUNCATE), deletes groups whose count fell to zero (and values whose multiplicity did) and
recomputes the groups marked dirty.
"""

from __future__ import annotations

from itertools import permutations

from psycopg import sql

from streaming_views import onkept
from streaming_views.astutil import q
from streaming_views.auxiliary import aux_build_sql, aux_clear_sql, aux_zero_sql
from streaming_views.bounds import count_sql
from streaming_views.changelog import log_table, log_trigger_names, marker_row, timed_conjuncts
from streaming_views.compiler import STATE_SCHEMA, CompiledView, looped
from streaming_views.deltas import apply_statement, masks
from streaming_views.layers import READERS
from streaming_views.lockorder import holder_name, holder_sql, lock_tables_sql, view_lock_sql
from streaming_views.netpair import net_bit, net_columns, net_text, net_token
from streaming_views.notes import view_token
from streaming_views.onegroup import from_new, one_per_group, single_bit, single_text, single_token
from streaming_views.runtime import BIG, PENDING, REBUILD

# The apply plans its statements without sequential scans (see _apply_changed); the function's
# SET clause restores the writer's value when it returns (no save and restore per commit).
# No JIT: before PostgreSQL 18 a disabled scan adds disable_cost (1e10) to a plan that cannot
# avoid it (the recompute's IS NOT DISTINCT FROM branch), far above jit_above_cost, so each
# commit JIT-compiled (inlined and optimised) its statements anew: 0.4-0.6 s a commit on 15
# (round 38, y38). A commit's statements touch the transaction's groups only.
APPLY_SETTINGS = " SET enable_seqscan = off SET jit = off"


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
    :func:`streaming_views.changelog.log_ddl`); when it is their mask plus :func:`_big_bit` (a large
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
        rest = f"replace({rest}, {view_token(cv, j)}, '')"
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
    token = view_token(cv)
    clear_all = "".join(f"DELETE FROM {log_table(cv, t.index)} "
                        f"WHERE __tm_tx = pg_current_xact_id();\n" for t in cv.resolved.tables)
    big = f"CASE WHEN v_big THEN {_big_bit(cv)} ELSE 0 END"
    if len(cv.tables) == 1:
        changed = f"1 + {big}"  # applied even if only a marker was logged: an empty delta
    else:
        probes = " + ".join(f"(CASE WHEN strpos(v_p, {view_token(cv, j)}) > 0{_or_single(cv, j)} "
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
