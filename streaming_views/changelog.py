# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""The change logs of a view's base tables: their tables, the deferred triggers their markers
fire, and the filters pushed to them.

Each base table ``j`` of a view has an UNLOGGED change log ``tidemark_state.<suffix>__l<j>``:
the transaction (``__tm_tx``), a sign (+1 added, -1 removed) and the columns of the table the
view reads. Statement-level triggers append every statement's transition rows to it (for a
single-table view, only rows passing the view's WHERE, :func:`pushed_filter`; a statement of
more than :data:`BIG_DELTA` rows as one batch row of arrays, see
:func:`streaming_views.logwrites.log_batch`); the first in a transaction also appends a marker
row (sign 0), which fires the view's deferred constraint trigger when the transaction commits:
it applies the view's changes under a per-view lock (see :mod:`streaming_views.apply`, and
:mod:`streaming_views.deltas` for the statement).
"""

from __future__ import annotations

from pglast import ast, enums

from streaming_views.astutil import deparse, q, walk
from streaming_views.compiler import STATE_SCHEMA, CompiledView
from streaming_views.expiry import LOGGED_CLOCK, is_timed, log_filter
from streaming_views.layers import is_live
from streaming_views.netpair import net_columns, old_column

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
                       f"EXTERNAL" for name in batch_columns(cv, t.index)]
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
    :func:`streaming_views.logwrites.appending`), or a row of sign 0 (:func:`marker_row`). The
    WHEN clause is a column, not an expression: PostgreSQL parses and prepares it again in every
    logging statement."""
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


def batch_columns(cv: CompiledView, j: int) -> list[str]:
    """The columns of table ``j``'s log holding a batch row's arrays (its signs first)."""
    return ["__tm_bs", *(f"__tm_b{k}" for k in range(len(cv.resolved.tables[j].columns)))]


def filtered(cv: CompiledView, j: int) -> bool:
    """Whether a filter is pushed to the log of table ``j`` (its old or its new rows)."""
    return any(pushed_filter(cv, j, sign) is not None for sign in ("1", "-1"))
