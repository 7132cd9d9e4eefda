# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""Change logs, and how a transaction's changes are applied to a view when it commits.

Each base table ``j`` of a view has an UNLOGGED change log ``tidemark_state.<suffix>__l<j>``:
the transaction (``__tm_tx``), a sign (+1 added, -1 removed) and the columns of the table the
view reads. Statement-level triggers append every statement's transition rows to it (for a
single-table view, only rows passing the view's WHERE; a statement of more than
:data:`BIG_DELTA` rows as one batch row of arrays, see :func:`log_batch`); the first in a
transaction also appends a marker row (sign 0), which fires the view's deferred constraint
trigger when the transaction commits: it applies the view's changes under a per-view lock (see
:mod:`streaming_views.triggers`).

A transaction may change several base tables of a join. With ``N_t`` a table now (the
transaction's changes included) and ``D_t`` its change log, the view's change is the
inclusion-exclusion sum over the non-empty sets ``S`` of changed tables::

    sum over S: (-1)^(|S|+1) * join(D_t for t in S, N_t for t not in S)

(for one changed table: its log joined to the others as they are). Because the lock serialises
the views' commits and each statement of the commit-time maintenance sees every transaction
committed before, the view moves from the query over the committed tables to the query over
the tables with this transaction's changes — exactly (this replaces pg_ivm's pre-statement
states and needs no rebuild for writable CTEs or cascades).
"""

from __future__ import annotations

import re
from itertools import combinations

from pglast import ast, enums

from streaming_views import onkept, pregroup
from streaming_views.astutil import deparse, q, walk
from streaming_views.auxiliary import delta_statement
from streaming_views.compiler import STATE_SCHEMA, CompiledView, Term, with_upsert
from streaming_views.expiry import (
    CLOCK_CTE,
    CLOCK_FROM,
    FROM_CLOCK,
    LOGGED_CLOCK,
    ONCE_CLOCK,
    is_timed,
    log_filter,
)
from streaming_views.layers import is_live, transition
from streaming_views.netpair import net_columns, net_select, old_column
from streaming_views.onegroup import single_select
from streaming_views.outer import delta as outer_delta
from streaming_views.reads import ALL
from streaming_views.session import NAMES_ONLY

BIG_DELTA = 1000  # logged rows above which a delta is planned for its real size
BATCH_SIGN = 2  # a log row holding a large statement's rows as one array per column
LOG_OPTIONS = ("autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0, "
               "autovacuum_analyze_threshold = 2147483647")
EVENTS = {"ins": "INSERT", "upd": "UPDATE", "del": "DELETE"}


def log_name(cv: CompiledView, j: int) -> str:
    """The unquoted name of base table ``j``'s change log."""
    return f"{cv.suffix}__l{j}"


def log_table(cv: CompiledView, j: int) -> str:
    """The quoted change log of base table ``j``."""
    return f"{q(STATE_SCHEMA)}.{q(log_name(cv, j))}"


def _into(cv: CompiledView, j: int) -> str:
    """``INSERT INTO`` table ``j``'s log, after the clock's CTE for a temporal filter's timed
    table (its filter reads the clock from it: see :func:`streaming_views.expiry.is_timed`)."""
    return f"{CLOCK_CTE if is_timed(cv, j) else ''}INSERT INTO {log_table(cv, j)}"


def log_ddl(cv: CompiledView) -> list[str]:
    """CREATE the change logs (UNLOGGED) and their index on the transaction.

    The planner must always think a transaction's rows are few (so that they are joined by index
    probes), whatever the log's physical size — it grows with dead rows between vacuums, and
    PostgreSQL estimates from the current size. So the log is analysed once, holding one dummy
    row (transaction 0, which never exists) and with ``n_distinct = -1`` on ``__tm_tx``: an
    equality on it is then estimated at one row. Auto-analyse is off; vacuum stays on.
    """
    stmts = []
    for t in cv.resolved.tables:
        cols = ["__tm_tx xid8 NOT NULL", "__tm_sign smallint NOT NULL", "__tm_first boolean"]
        cols += [f"{q(c.name)} {c.log_type}" + (f" COLLATE {c.collation}" if c.collation else "")
                 for c in t.columns]
        cols += [f"{old_column(k)} {t.columns[k].log_type}" + (  # a net pair's old values
            f" COLLATE {t.columns[k].collation}" if t.columns[k].collation else "")
            for k in net_columns(cv, t.index)]
        storage = []
        if batchable(cv, t.index):
            cols += ["__tm_bs smallint[]"]
            cols += [f"__tm_b{k} {c.log_type}[]" + (f" COLLATE {c.collation}" if c.collation
                                                      else "") for k, c in enumerate(t.columns)]
            storage = [f"ALTER TABLE {log_table(cv, t.index)} ALTER COLUMN {name} SET STORAGE "
                       f"EXTERNAL" for name in _batch_columns(cv, t.index)]
        stmts += [f"CREATE UNLOGGED TABLE {log_table(cv, t.index)} ({', '.join(cols)}) "
                  f"WITH ({LOG_OPTIONS})", *storage,
                  f"CREATE INDEX {q(log_name(cv, t.index) + '__tx')} ON "
                  f"{log_table(cv, t.index)} (__tm_tx)",
                  f"ALTER TABLE {log_table(cv, t.index)} ALTER COLUMN __tm_tx "
                  f"SET (n_distinct = -1)",
                  f"INSERT INTO {log_table(cv, t.index)} (__tm_tx, __tm_sign) "
                  f"VALUES ('0', 0)",
                  f"ANALYZE {log_table(cv, t.index)}"]
    return stmts


def log_trigger_names(cv: CompiledView) -> list[str]:
    """The names of the deferred triggers on the view's change logs."""
    return [f"tm_{log_name(cv, t.index)}_apply" for t in cv.resolved.tables]


def log_triggers(cv: CompiledView, apply_function: str) -> list[str]:
    """The deferred trigger a log's marker fires at commit: ``apply_function``. The marker is
    the first row a transaction logged for the view (``__tm_first``: no row of its own, see
    :func:`appending`), or a row of sign 0 (:func:`marker_row`). The WHEN clause is a column,
    not an expression: PostgreSQL parses and prepares it again in every logging statement."""
    return [f"CREATE CONSTRAINT TRIGGER {q(name)} "
            f"AFTER INSERT ON {log_table(cv, t.index)} DEFERRABLE INITIALLY DEFERRED "
            f"FOR EACH ROW WHEN (NEW.__tm_first) EXECUTE FUNCTION {apply_function}()"
            for t, name in zip(cv.resolved.tables, log_trigger_names(cv), strict=True)]


def marker_row(cv: CompiledView, j: int) -> str:
    """The INSERT of a marker row (sign 0) into table ``j``'s log: it fires the view's apply
    at commit without logging a change (a postponed apply, a temporal tick)."""
    return (f"INSERT INTO {log_table(cv, j)} (__tm_tx, __tm_sign, __tm_first) "
            f"VALUES (pg_current_xact_id(), 0, true)")


def pushed_filter(cv: CompiledView, j: int, sign: str = "1",
                  clock: str = LOGGED_CLOCK) -> str | None:
    """The conjuncts of WHERE that read only base table ``j`` (views without UNION ALL): rows
    failing them cannot change the view and are not logged. ``sign``: of the transition table
    filtered (1: new rows, -1: old ones), for the temporal filter's count of rows whose bound
    cannot be computed (:mod:`streaming_views.bounds`): a row is counted only when those
    conjuncts hold for it (tested first, in a CASE: the count has a side effect, and the
    planner may reorder the conjuncts of an AND) — as :func:`own_conjuncts` for the count
    of a deploy or a TRUNCATE's rebuild. ``clock``: as :func:`streaming_views.expiry.log_filter`.
    """
    timed = log_filter(cv, j, sign, clock)  # the timed table's: rows valid at the clock
    own = own_conjuncts(cv, j)
    if timed is None:
        return own
    return timed if own is None else f"(CASE WHEN {own} THEN {timed} ELSE false END)"


def own_conjuncts(cv: CompiledView, j: int) -> str | None:
    """The conjuncts of WHERE (temporal filter left out) that read only base table ``j``, AND-ed;
    None when there are none, or for views with UNION ALL or an outer join (NULL-extended rows
    pass WHERE)."""
    an = cv.analysis
    if an.branches or an.where is None or an.outer is not None:
        return None
    where = an.where
    if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        conjuncts = list(where.args)
    else:
        conjuncts = [where]
    ref = cv.tables[j].ref
    single = len(cv.tables) == 1
    kept = []
    for conj in conjuncts:
        refs = [n for n in walk(conj) if isinstance(n, ast.ColumnRef)]
        ok = all((len(r.fields) == 2 and getattr(r.fields[0], "sval", None) == ref)
                 or (len(r.fields) == 1 and single) for r in refs)
        if ok:
            kept.append(f"({deparse(conj)})")
    return " AND ".join(kept) or None


def timed_conjuncts(cv: CompiledView) -> str | None:
    """:func:`own_conjuncts` of the view's timed table (a temporal filter's): only the rows
    passing them count as rows whose bound cannot be computed."""
    return next(own_conjuncts(cv, j) for j in range(len(cv.tables)) if is_timed(cv, j))


def batchable(cv: CompiledView, j: int) -> bool:
    """Whether table ``j``'s log can keep a large statement as one row of arrays (a column that
    is an array itself cannot: ``unnest`` would flatten it)."""
    table = cv.resolved.tables[j]  # a live view's log holds rows of its SELECT (layers.py)
    return not is_live(table) and not any(c.log_type.rstrip().endswith("]")
                                          for c in table.columns)


def _batch_columns(cv: CompiledView, j: int) -> list[str]:
    return ["__tm_bs", *(f"__tm_b{k}" for k in range(len(cv.resolved.tables[j].columns)))]


def log_batch(cv: CompiledView, j: int, event: str, marker: str = "false") -> str:
    """The INSERT appending a large statement's transition rows of table ``j`` to its log as ONE
    row (sign :data:`BATCH_SIGN`) holding an array per column, returning how many rows it holds
    (none inserted when no row passed the view's filter). Writing, and at commit deleting, one
    row instead of thousands (each with its index entry) is most of a bulk statement's cost of
    maintenance; the apply unnests the arrays (see :func:`apply_statement`). Each array is kept
    uncompressed out of line (``STORAGE EXTERNAL``): compressing costs more than it saves.
    When the PL/pgSQL condition ``marker`` holds, the batch row is the transaction's marker."""
    table = cv.resolved.tables[j]
    ref = q(cv.tables[j].ref)
    named = "".join(f", {ref}.{q(c.name)} AS __x{k}" for k, c in enumerate(table.columns))
    parts = []
    for sign, relation, wanted in (("1", "__tm_new", {"ins", "upd"}),
                                   ("-1", "__tm_old", {"del", "upd"})):
        if event in wanted:
            condition = pushed_filter(cv, j, sign)
            parts.append(f"SELECT {sign}::smallint AS __tm_sign{named} FROM {relation} AS {ref}"
                         + (f" WHERE {condition}" if condition else ""))
    aggs = ", ".join(["array_agg(__tm_sign)",
                      *(f"array_agg(__x{k})" for k in range(len(table.columns)))])
    target = ", ".join(["__tm_tx", "__tm_sign", "__tm_first", *_batch_columns(cv, j)])
    return (f"{_into(cv, j)} ({target}) SELECT pg_current_xact_id(), "
            f"{BATCH_SIGN}, {marker}, {aggs} FROM ({' UNION ALL '.join(parts)}) AS __r "
            f"HAVING count(*) > 0 RETURNING cardinality(__tm_bs)")


def appending(cv: CompiledView, j: int, target: list[str], query: str,
              marker: str | None) -> str:
    """The INSERT of ``query``'s rows into table ``j``'s log (columns ``target``); with
    ``marker`` (a PL/pgSQL condition), the first row logged is the transaction's marker (its
    ``__tm_first`` fires the view's deferred apply) when the condition holds — no marker row of
    its own to write and delete."""
    if marker is None:
        return f"{_into(cv, j)} ({', '.join(target)}) {query}"
    return (f"{_into(cv, j)} ({', '.join([*target, '__tm_first'])}) "
            f"SELECT *, {marker} AND row_number() OVER () = 1 FROM ({query}) AS __r")


def log_insert(cv: CompiledView, j: int, event: str, marker: str | None = None) -> str:
    """The INSERT appending one statement's transition rows of table ``j`` to its log (and with
    ``marker``, the marker row: see :func:`appending`)."""
    table = cv.resolved.tables[j]
    ref = q(cv.tables[j].ref)
    cols = [q(c.name) for c in table.columns]
    values = ", ".join([f"{ref}.{c}" for c in cols])
    parts = []
    for sign, relation, wanted in (("1", "__tm_new", {"ins", "upd"}),
                                   ("-1", "__tm_old", {"del", "upd"})):
        if event in wanted:
            condition = pushed_filter(cv, j, sign)
            select = (f"SELECT pg_current_xact_id(), {sign}" + (f", {values}" if values else "")
                      + f" FROM {transition(table, relation)} AS {ref}")
            parts.append(select + (f" WHERE {condition}" if condition else ""))
    return appending(cv, j, ["__tm_tx", "__tm_sign", *cols], " UNION ALL ".join(parts), marker)


def log_one_row(cv: CompiledView, j: int, event: str, marker: str) -> str:
    """The INSERT logging a one-row INSERT or DELETE (``event``) of table ``j``: its row, when
    it passes the filter pushed to the table, with ``__tm_first`` = ``marker`` (the row is the
    transaction's marker when the condition holds: no row numbering); nothing unless the
    statement changed exactly one row (a one-time filter). A plain ``INSERT ... SELECT`` with
    no window aggregate and no separate size probe: the commonest write's log costs one
    statement (``bench/ivm_contention_cost.py``: the probe and the numbering of the general
    form cost ~17k instructions per statement). Not for a live view's rows nor a temporal
    filter's timed table (their filter reads the clock and counts rows: see
    :func:`pushed_filter`); those log through :func:`log_insert` only."""
    table = cv.resolved.tables[j]
    ref = q(cv.tables[j].ref)
    rel, sign = ("__tm_old", "-1") if event == "del" else ("__tm_new", "1")
    cols = [q(c.name) for c in table.columns]
    values = "".join(f", {ref}.{c}" for c in cols)
    target = ", ".join(["__tm_tx", "__tm_sign", *cols, "__tm_first"])
    condition = pushed_filter(cv, j, sign)
    where = f"NOT EXISTS (SELECT 1 FROM {rel} OFFSET 1)" + (f" AND ({condition}) IS TRUE"
                                                              if condition else "")
    return (f"INSERT INTO {log_table(cv, j)} ({target}) SELECT pg_current_xact_id(), {sign}"
            f"{values}, {marker} FROM {rel} AS {ref} WHERE {where}")


IDENTICAL_BY_EQUALITY = {"smallint", "integer", "bigint", "boolean", "date", "uuid", "oid",
                         "timestamp without time zone", "timestamp with time zone"}
# A numeric with a declared scale: its values all have that display scale (NaN and the
# infinities none), so equal ones print alike.
FIXED_SCALE = re.compile(r"numeric\(\d+,\s*-?\d+\)")
PAIRED_ROWS = 64  # UPDATEs of at most this many rows have their unchanged rows left out


# Types whose text (what _same compares for types outside IDENTICAL_BY_EQUALITY) reads no
# session setting: no TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output, lc_*
PRINTED_ALIKE = {"numeric", "text", "character varying", "character", "name"}


def _pins(cv: CompiledView, *, live: bool) -> tuple[str, ...] | None:
    """The settings a generated function pins: None (every pinned setting) when it reads a
    live view or the view's expressions read every setting, else
    :data:`streaming_views.session.NAMES_ONLY` and those they read
    (:attr:`streaming_views.resolve.Resolved.settings`)."""
    if live or cv.resolved.settings >= ALL:
        return None
    return (*NAMES_ONLY, *sorted(cv.resolved.settings))


def log_settings(cv: CompiledView, j: int) -> tuple[str, ...] | None:
    """The settings the log triggers of table ``j`` pin (see :func:`_pins`): a filter pushed
    from WHERE (or a temporal filter) reads what the view's expressions read, a live view's
    SELECT or a column compared by its text (:func:`_same`) printed according to a setting
    (floats, intervals, bytea, money, arrays, records...) every setting; otherwise they copy and
    compare values only: :data:`streaming_views.session.NAMES_ONLY`."""
    if not all(c.log_type in IDENTICAL_BY_EQUALITY
               or (not c.log_type.rstrip().endswith("]")
                   and c.log_type.split("(", 1)[0].strip() in PRINTED_ALIKE)
               for c in cv.resolved.tables[j].columns):
        return None
    if any(pushed_filter(cv, j, sign) is not None for sign in ("1", "-1")):
        return _pins(cv, live=is_live(cv.resolved.tables[j]))
    return None if is_live(cv.resolved.tables[j]) else NAMES_ONLY


def apply_settings(cv: CompiledView) -> tuple[str, ...] | None:
    """The settings the commit-time ``apply`` pins (see :func:`_pins`): it evaluates the view's
    expressions (and its temporal filter's bounds) over the logs and the base tables."""
    return _pins(cv, live=any(is_live(t) for t in cv.resolved.tables))


def _same(a: str, b: str, typ: str) -> str:
    """Condition: values ``a`` and ``b`` cannot be told apart by any expression. Equality is not
    enough for every type (1.0 = 1.00, '1 day' = '24 hours', -0 = 0, collations): those are
    compared by their text under the pinned settings, a numeric by its value and scale."""
    if typ in IDENTICAL_BY_EQUALITY or FIXED_SCALE.fullmatch(typ):
        return f"{a} IS NOT DISTINCT FROM {b}"
    if typ == "numeric":  # a numeric's text is its value and its display scale
        return f"{a} IS NOT DISTINCT FROM {b} AND scale({a}) IS NOT DISTINCT FROM scale({b})"
    return f'({a})::text COLLATE "C" IS NOT DISTINCT FROM ({b})::text COLLATE "C"'


def _side(cv: CompiledView, j: int, rel: str, sign: str, number: bool = False,
          clock: str = LOGGED_CLOCK) -> str:
    """SELECT over transition table ``rel`` of table ``j``: ``__tm_ok`` (the row passes the
    filter pushed to the table for ``sign``, reading ``clock``) and the columns the view reads
    as ``__c<k>`` (numbered ``__tm_n`` with ``number``)."""
    ref = q(cv.tables[j].ref)
    named = "".join(f", {ref}.{q(c.name)} AS __c{k}"
                    for k, c in enumerate(cv.resolved.tables[j].columns))
    condition = pushed_filter(cv, j, sign, clock)
    ok = f"({condition}) IS TRUE" if condition else "true"
    return (f"SELECT {'row_number() OVER () AS __tm_n, ' if number else ''}{ok} AS __tm_ok"
            f"{named} FROM {rel} AS {ref}")


def _changed(cv: CompiledView, j: int) -> str:
    """Condition on a pair ``o`` (old), ``w`` (new) of :func:`_side` rows: the view can tell
    them apart (either fails the filter, or a column it reads changed)."""
    same = " AND ".join(_same(f"o.__c{k}", f"w.__c{k}", c.log_type)
                        for k, c in enumerate(cv.resolved.tables[j].columns)) or "true"
    return f"NOT (o.__tm_ok AND w.__tm_ok AND {same})"


def log_update_paired(cv: CompiledView, j: int, *, marker: str | None = None) -> str:
    """The INSERT logging a small UPDATE of table ``j`` without the rows whose columns read by
    the view did not change (an update of other columns then logs nothing).

    Old and new rows are paired by their position in the transition tables (PostgreSQL fills
    them together); whatever the pairing, leaving out a pair of identical rows leaves the change
    (new rows minus old rows, as multisets) the same, so the view's delta is exact. With
    ``marker``, the first row logged is the marker when the condition holds (see
    :func:`appending`). A one-row UPDATE is logged by :func:`log_update_single` instead.
    """
    cols = [q(c.name) for c in cv.resolved.tables[j].columns]
    values = "".join(f", {{side}}.__c{k}" for k in range(len(cols)))
    outs = "".join(f", x.__v{k}" for k in range(len(cols)))
    names = "".join(f", __v{k}" for k in range(len(cols)))
    # each changed pair gives its old row (sign -1) and its new row (+1), those passing the
    # filter, from one scan of the pairs (no materialised pair list read twice)
    query = (f"WITH __o AS ({_side(cv, j, '__tm_old', '-1', number=True)}), "
             f"__w AS ({_side(cv, j, '__tm_new', '1', number=True)}) "
             f"SELECT pg_current_xact_id(), x.__s{outs} FROM __o AS o "
             "JOIN __w AS w USING (__tm_n) "
             f"CROSS JOIN LATERAL (VALUES (-1, o.__tm_ok{values.format(side='o')}), "
             f"(1, w.__tm_ok{values.format(side='w')})) "
             f"AS x(__s, __ok{names}) WHERE {_changed(cv, j)} AND x.__ok")
    return appending(cv, j, ["__tm_tx", "__tm_sign", *cols], query, marker)


def filtered(cv: CompiledView, j: int) -> bool:
    """Whether a filter is pushed to the log of table ``j`` (its old or its new rows)."""
    return any(pushed_filter(cv, j, sign) is not None for sign in ("1", "-1"))


def log_update_single(cv: CompiledView, j: int, marker: str, net_marker: str | None = None
                      ) -> tuple[str, str, str | None]:
    """A one-row UPDATE of table ``j``: the SELECT reading the statement's pair of rows into
    the record ``v_x`` (none unless the statement changed exactly one row: a one-time filter),
    with ``v_x.__ch`` true when the view can tell the rows apart; the INSERT logging them
    from ``v_x`` (run only then; the old row is the marker when ``marker`` holds, else the new
    row when the old one fails the filter); and with ``net_marker`` (table ``j`` has
    aggregated-only columns, :func:`streaming_views.netpair.net_columns`), ``v_x.__ch`` is 1
    when only those changed (both rows pass), 2 when others did, 0 when none did, and the
    INSERT of such a net pair: the new row also holds the old values (``__tm_v<k>``), the old
    one is the marker when ``net_marker`` holds (it notes the transaction).

    An UPDATE of columns the view does not read (the commonest write to a dimension row) then
    runs one SELECT and no INSERT; one that changes them runs a plain VALUES insert. Both cost
    fewer instructions than one INSERT ... SELECT of the pair whose plan is set up in every
    transaction (``bench/ivm_instructions.py``: the INSERT's set-up dominates either way)."""
    columns = cv.resolved.tables[j].columns
    cols = [q(c.name) for c in columns]
    olds = "".join(f", o.__c{k} AS __o{k}" for k in range(len(cols)))
    news = "".join(f", w.__c{k} AS __w{k}" for k in range(len(cols)))
    pushed = filtered(cv, j)
    # without a filter both rows pass: no __ook/__wok (each output column of the record costs
    # a type lookup in every transaction, ~1.7k instructions: bench/ivm_contention_cost.py)
    passes = ", o.__tm_ok AS __ook, w.__tm_ok AS __wok" if pushed else ""
    changed = _changed(cv, j)
    net = net_columns(cv, j) if net_marker is not None else []
    if net:  # one CASE: the deciding columns, then the aggregated-only ones, each compared once
        same = [_same(f"o.__c{k}", f"w.__c{k}", c.log_type) for k, c in enumerate(columns)]
        deciding = "".join(f" AND {e}" for k, e in enumerate(same) if k not in net)
        changed = (f"CASE WHEN NOT (o.__tm_ok AND w.__tm_ok{deciding}) THEN 2 WHEN "
                   f"{' AND '.join(e for k, e in enumerate(same) if k in net)} THEN 0 ELSE 1 END")
    # a timed table's filter reads the clock: from a FROM item, or on demand (expiry.CLOCK_FROM)
    timed = is_timed(cv, j) and own_conjuncts(cv, j) is None
    clock, lateral = (FROM_CLOCK, f"{CLOCK_FROM}, LATERAL ") if timed else (ONCE_CLOCK, "")
    cte = CLOCK_CTE if is_timed(cv, j) and not timed else ""
    probe = (f"{cte}SELECT {changed} AS __ch{passes}{olds}{news} INTO v_x FROM "
             f"{lateral}({_side(cv, j, '__tm_old', '-1', clock=clock)}) AS o, "
             f"{'LATERAL ' if timed else ''}({_side(cv, j, '__tm_new', '1', clock=clock)}) AS w "
             "WHERE NOT EXISTS (SELECT 1 FROM __tm_new OFFSET 1)")
    target = ", ".join(["__tm_tx", "__tm_sign", *cols, "__tm_first"])
    old = "".join(f", v_x.__o{k}" for k in range(len(cols)))
    new = "".join(f", v_x.__w{k}" for k in range(len(cols)))
    net_insert = None
    if net:  # both rows pass; the new one also holds the old values of the net columns
        net_insert = (f"INSERT INTO {log_table(cv, j)} ({target}"
                      f"{''.join(', ' + old_column(k) for k in net)}) VALUES "
                      f"(pg_current_xact_id(), -1{old}, {net_marker}"
                      f"{''.join(f', NULL::{columns[k].log_type}' for k in net)}), "
                      f"(pg_current_xact_id(), 1{new}, false"
                      f"{''.join(f', v_x.__o{k}' for k in net)})")
    if not pushed:  # both rows pass: the old one is logged, and the marker when it is one
        insert = (f"INSERT INTO {log_table(cv, j)} ({target}) VALUES "
                  f"(pg_current_xact_id(), -1{old}, {marker}), "
                  f"(pg_current_xact_id(), 1{new}, false)")
    else:
        outs = "".join(f", x.__v{k}" for k in range(len(cols)))
        names = "".join(f", __v{k}" for k in range(len(cols)))
        insert = (f"INSERT INTO {log_table(cv, j)} ({target}) SELECT pg_current_xact_id(), "
                  f"x.__s{outs}, x.__f FROM (VALUES (-1, v_x.__ook{old}, {marker}), "
                  f"(1, v_x.__wok{new}, {marker} AND NOT v_x.__ook)) "
                  f"AS x(__s, __ok{names}, __f) WHERE x.__ok")
    return probe, insert, net_insert


def _subsets(items: list[int]) -> list[tuple[int, ...]]:
    return [c for size in range(1, len(items) + 1) for c in combinations(items, size)]


def terms(cv: CompiledView, changed: tuple[int, ...]) -> list[Term]:
    """The inclusion-exclusion terms of a transaction that changed base tables ``changed``."""
    an = cv.analysis
    if not an.branches:
        return [Term(None, tuple((j, f"__l{j}") for j in s)) for s in _subsets(list(changed))]
    out = []
    for b, branch in enumerate(an.branches):
        mine = sorted({cv._index(t) for t in branch.tables} & set(changed))
        out += [Term(b, tuple((j, f"__l{j}") for j in s)) for s in _subsets(mine)]
    return out


def apply_statement(cv: CompiledView, changed: tuple[int, ...], *, tx: str = "v_tx",
                    batches: bool = True, kept: bool = False, row: str | None = None,
                    one_row: bool = False, net: bool = False) -> str:
    """The one statement applying (and deleting) the logged changes of tables ``changed``; it
    returns whether some group's count fell to zero.

    Args:
        cv: the view.
        changed: the base tables whose logs hold rows of this transaction.
        tx: the transaction id expression.
        batches: whether the logs may hold batch rows (only after a large statement, which
            marks the transaction's delta large: the statement planned for small deltas
            leaves them out).
        kept: the outer join's kept-ON delta (:mod:`streaming_views.onkept`).
        row: the PL/pgSQL record (``NEW``) holding the only row the log of the one table
            ``changed`` holds for the transaction (not a marker): read from the record, the
            log's row deleted unread (no CTE scan of the deleted rows).
        one_row: the delta is at most one flat row (:func:`streaming_views.onegroup.one_per_group`):
            upserted without an aggregate when :func:`streaming_views.onegroup.single_select`
            can rewrite the view's.
        net: the log of the one table ``changed`` holds a net pair
            (:mod:`streaming_views.netpair`): its new row read alone, without an aggregate.
    """
    ctes = []
    for j in changed:  # the log's rows, the transaction's marker (sign 0) left out
        if row is not None:
            names = ["__tm_tx", "__tm_sign", *(q(c.name) for c in cv.resolved.tables[j].columns)]
            values = ", ".join(f"{row}.{n} AS {n}" for n in names)
            ctes += [f"__m{j} AS (DELETE FROM {log_table(cv, j)} WHERE __tm_tx = {tx})",
                     f"__l{j} AS (SELECT {values})"]
            continue
        cols = ", ".join(["__tm_tx", "__tm_sign", *(q(c.name) for c in
                                                    cv.resolved.tables[j].columns),
                          *(map(old_column, net_columns(cv, j)) if net else ())])
        rows = f"SELECT {cols} FROM __m{j} WHERE __tm_sign " + ("= 1" if net else "IN (-1, 1)")
        returned = cols  # only what is read (not the batch arrays a small delta has not)
        if batches and batchable(cv, j):  # set-returning functions in the SELECT list (one
            # ProjectSet, zipped element by element) cost less than ROWS FROM (unnest(...)),
            # which copies every column into a tuplestore first
            arrays = ", ".join(f"unnest(m.{c})" for c in _batch_columns(cv, j))
            rows += (f" UNION ALL SELECT m.__tm_tx, {arrays} FROM __m{j} AS m "
                     f"WHERE m.__tm_sign = {BATCH_SIGN}")
            returned += ", " + ", ".join(_batch_columns(cv, j))
        ctes += [f"__m{j} AS MATERIALIZED (DELETE FROM {log_table(cv, j)} "
                 f"WHERE __tm_tx = {tx} RETURNING {returned})",
                 f"__l{j} AS ({rows})"]
    if net:  # one net row: no aggregate (streaming_views.netpair)
        return with_upsert(ctes, cv.upsert_sql(net_select(cv, changed[0]) or ""))
    if batches and len(changed) == 1:  # a large delta of one table: grouped first
        grouped = pregroup.statement(cv, changed[0], ctes)
        if grouped is not None:
            return grouped
    if kept:
        return delta_statement(cv, onkept.delta(cv, changed[0]), ctes)
    if cv.analysis.outer is not None:  # outer/semi-joins, two levels: see outer.py
        more, flat = outer_delta(cv, changed, restrict=batches)
        return delta_statement(cv, flat, ctes + more)
    flat = " UNION ALL ".join(cv.flat_select(t) for t in terms(cv, changed))
    if one_row:  # at most one flat row: no aggregate (streaming_views.onegroup)
        select = single_select(cv.aggregate_select(flat, delta=True))
        if select is not None:
            return with_upsert(ctes, cv.upsert_sql(select))
    return delta_statement(cv, flat, ctes)


def masks(cv: CompiledView) -> list[tuple[int, ...]]:
    """Every non-empty set of base tables a transaction can have changed."""
    return _subsets(list(range(len(cv.tables))))
