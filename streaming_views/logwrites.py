# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""The INSERTs a statement's log trigger runs: a statement's transition rows appended to a base
table's change log (:mod:`streaming_views.changelog`), and the settings those triggers pin.

A large statement is logged as one batch row (:func:`log_batch`), a one-row INSERT or DELETE by
one plain statement (:func:`log_one_row`), a one-row UPDATE from the pair of rows it read
(:func:`log_update_single`), a small UPDATE without its pairs of rows the view cannot tell apart
(:func:`log_update_paired`), anything else as it is (:func:`log_insert`).
"""

from __future__ import annotations

import re

from streaming_views.astutil import q
from streaming_views.changelog import (
    BATCH_SIGN,
    batch_columns,
    filtered,
    log_table,
    own_conjuncts,
    pushed_filter,
)
from streaming_views.compiler import CompiledView
from streaming_views.expiry import (
    CLOCK_CTE,
    CLOCK_FROM,
    FROM_CLOCK,
    LOGGED_CLOCK,
    ONCE_CLOCK,
    is_timed,
)
from streaming_views.layers import is_live, transition
from streaming_views.netpair import net_columns, old_column
from streaming_views.reads import ALL
from streaming_views.session import NAMES_ONLY


def _into(cv: CompiledView, j: int) -> str:
    """``INSERT INTO`` table ``j``'s log, after the clock's CTE for a temporal filter's timed
    table (its filter reads the clock from it: see :func:`streaming_views.expiry.is_timed`)."""
    return f"{CLOCK_CTE if is_timed(cv, j) else ''}INSERT INTO {log_table(cv, j)}"


def log_batch(cv: CompiledView, j: int, event: str, marker: str = "false") -> str:
    """The INSERT appending a large statement's transition rows of table ``j`` to its log as ONE
    row (sign :data:`streaming_views.changelog.BATCH_SIGN`) holding an array per column,
    returning how many rows it holds (none inserted when no row passed the view's filter).
    Writing, and at commit deleting, one row instead of thousands (each with its index entry) is
    most of a bulk statement's cost of maintenance; the apply unnests the arrays (see
    :func:`streaming_views.deltas.apply_statement`). Each array is kept uncompressed out of line
    (``STORAGE EXTERNAL``): compressing costs more than it saves.
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
    target = ", ".join(["__tm_tx", "__tm_sign", "__tm_first", *batch_columns(cv, j)])
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
    :func:`streaming_views.changelog.pushed_filter`); those log through :func:`log_insert` only."""
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


def pinned_settings(cv: CompiledView, *, live: bool) -> tuple[str, ...] | None:
    """The settings a generated function pins: None (every pinned setting) when it reads a
    live view or the view's expressions read every setting, else
    :data:`streaming_views.session.NAMES_ONLY` and those they read
    (:attr:`streaming_views.resolve.Resolved.settings`)."""
    if live or cv.resolved.settings >= ALL:
        return None
    return (*NAMES_ONLY, *sorted(cv.resolved.settings))


def log_settings(cv: CompiledView, j: int) -> tuple[str, ...] | None:
    """The settings the log triggers of table ``j`` pin (see :func:`pinned_settings`): a filter
    pushed from WHERE (or a temporal filter) reads what the view's expressions read, a live
    view's SELECT or a column compared by its text (:func:`_same`) printed according to a
    setting (floats, intervals, bytea, money, arrays, records...) every setting; otherwise they
    copy and compare values only: :data:`streaming_views.session.NAMES_ONLY`."""
    if not all(c.log_type in IDENTICAL_BY_EQUALITY
               or (not c.log_type.rstrip().endswith("]")
                   and c.log_type.split("(", 1)[0].strip() in PRINTED_ALIKE)
               for c in cv.resolved.tables[j].columns):
        return None
    if any(pushed_filter(cv, j, sign) is not None for sign in ("1", "-1")):
        return pinned_settings(cv, live=is_live(cv.resolved.tables[j]))
    return None if is_live(cv.resolved.tables[j]) else NAMES_ONLY


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
