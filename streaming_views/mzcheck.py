"""Check a view file against what Materialize supports, not against the embedded engine's subset.

The Materialize target parses a view with sqlglot's ``materialize`` dialect (no server needed)
and refuses only what Materialize itself refuses in a materialized view, each with the same error
shape as the embedded analyzer (file:line:col, construct, reason, rewrite). Outer joins,
self-joins, EXISTS/IN subqueries, WITH, FROM subqueries, window functions, DISTINCT ON, LATERAL
and ``mz_now()`` temporal filters are Materialize SQL and pass.

Refused, as Materialize's documentation states (https://materialize.com/docs):

- functions that cannot be materialized (``now()``, ``current_timestamp``, session functions);
- ``mz_now()`` outside a temporal filter: it must be compared (``=``, ``<``, ``<=``, ``>``,
  ``>=``, ``BETWEEN``) to an expression without ``mz_now()``, in WHERE or HAVING, joined to the
  other conditions by AND only (no OR, NOT, arithmetic on ``mz_now()``, aggregate FILTER);
- ``WITH RECURSIVE`` (Materialize has ``WITH MUTUALLY RECURSIVE``, which sqlglot 30 does not
  parse: it is refused here too, as a parser limit);
- ``GROUPING SETS``, ``ROLLUP``, ``CUBE``; locking clauses; ``TABLESAMPLE``.

What sqlglot cannot tell (an unknown function, a type error) Materialize reports when the view is
created; nothing is applied before every view passed this check.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from streaming_views.astutil import keyword_offset, line_col
from streaming_views.errors import UnsupportedViewError, ViewFileError
from streaming_views.viewfile import ViewFile

DIALECT = "materialize"
LIVE_SCHEMA = "live"
TEMPORAL_REWRITE = ("write the temporal filter as a top-level AND term of WHERE: "
                    "mz_now() <= <ts column> + interval '5 minutes'.")
# sqlglot classes of functions Materialize cannot materialize (their value moves without a write).
_UNMATERIALIZABLE_CLASSES = tuple(c for c in (
    getattr(exp, name, None) for name in (
        "CurrentTimestamp", "CurrentDate", "CurrentTime", "CurrentDatetime", "Localtime",
        "Localtimestamp", "CurrentUser", "CurrentRole", "CurrentSchema", "SessionUser",
        "CurrentCatalog", "Rand", "Random")) if c is not None)
# The same, by name, for calls sqlglot keeps as anonymous functions.
_UNMATERIALIZABLE_NAMES = {
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
    "current_timestamp", "localtimestamp", "current_user", "session_user", "current_role",
    "current_database", "current_schema", "current_schemas", "current_setting",
    "pg_backend_pid", "pg_postmaster_start_time", "version", "mz_version", "mz_version_num",
    "mz_uptime", "mz_environment_id", "mz_session_id", "mz_logical_timestamp", "random",
    "setseed", "nextval", "currval", "lastval", "txid_current", "pg_current_xact_id",
}
_COMPARISONS = (exp.EQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
_WRAPPERS = (exp.Paren, exp.Cast)


@dataclass(frozen=True)
class MzAnalysis:
    """A view checked for Materialize.

    Attributes:
        view: the view file.
        tree: the parsed query (sqlglot, ``materialize`` dialect).
        tables: ``(schema, table)`` of every base table read, in order, each once; views read
            as ``live.<name>`` are in ``reads`` instead.
        reads: names of live views this view reads (``live.<name>``).
    """

    view: ViewFile
    tree: exp.Query
    tables: tuple[tuple[str, str], ...]
    reads: tuple[str, ...]


class _Refuser:
    def __init__(self, view: ViewFile) -> None:
        self.view = view

    def __call__(self, construct: str, node: exp.Expression | None, reason: str,
                 rewrite: str | None = None, keyword: str | None = None,
                 fallback: str | None = None) -> UnsupportedViewError:
        offset = None
        if keyword is not None:
            offset = keyword_offset(self.view.text, keyword)
        if offset is None and node is not None:
            start = _start(node)
            if start is not None:
                offset = len(self.view.text[:start].encode("utf-8"))
        if offset is None and fallback is not None:
            offset = keyword_offset(self.view.text, fallback)
        line, column = line_col(self.view.text, offset)
        return UnsupportedViewError(construct, f"Materialize {reason}", path=str(self.view.path),
                                    line=line, column=column, rewrite=rewrite)


def _start(node: exp.Expression) -> int | None:
    """The smallest source offset (characters) sqlglot recorded in ``node``'s subtree."""
    starts = [n.meta["start"] for n in node.walk() if "start" in (n._meta or {})]
    return min(starts) if starts else None


def _source(view: ViewFile, node: exp.Expression) -> str:
    meta = node._meta or {}
    if "start" in meta and "end" in meta:
        return view.text[meta["start"]:meta["end"] + 1].lower()
    return node.sql(dialect=DIALECT).lower()


def parse_materialize(view: ViewFile) -> exp.Query:
    """Parse the file with sqlglot's ``materialize`` dialect; return its one query.

    Raises:
        ViewFileError: a syntax error, or not exactly one statement.
        UnsupportedViewError: the statement is not a query, or uses WITH MUTUALLY RECURSIVE.
    """
    refuse = _Refuser(view)
    if keyword_offset(view.text, "mutually") is not None:
        raise refuse("WITH MUTUALLY RECURSIVE", None,
                     "supports it, but sqlglot (the parser Tidemark checks Materialize SQL with) "
                     "does not parse it yet, so it cannot be checked or deployed from here.",
                     "create that view in Materialize directly and read it as a source.",
                     keyword="mutually")
    try:
        trees = [t for t in sqlglot.parse(view.text, read=DIALECT) if t is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        raise ViewFileError(f"{view.path}:{err.get('line')}:{err.get('col')}: syntax error: "
                            f"{err.get('description') or exc}") from None
    if len(trees) != 1:
        raise ViewFileError(f"{view.path}: a view file holds exactly one SELECT; found "
                            f"{len(trees)} statements.")
    if not isinstance(trees[0], exp.Query):
        raise refuse(type(trees[0]).__name__.upper(), trees[0],
                     "materialized views are defined by one SELECT.",
                     "keep one SELECT in the file.")
    return trees[0]


def check_materialize(view: ViewFile) -> MzAnalysis:
    """Check ``view`` against what Materialize supports; return what the deploy needs.

    Raises:
        UnsupportedViewError: a construct Materialize refuses, with its position.
        ViewFileError: the file does not parse.
    """
    tree = parse_materialize(view)
    refuse = _Refuser(view)
    _check_shape(tree, refuse)
    for node in tree.walk():
        if isinstance(node, exp.Func):
            _check_function(view, node, refuse)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables: dict[tuple[str, str], None] = {}
    reads: dict[str, None] = {}
    for table in tree.find_all(exp.Table):
        if not table.db:
            if table.name.lower() in ctes or not table.name:
                continue
            raise refuse(f"unqualified table {table.name}", table,
                         "views read source tables as <source>.<table>.",
                         f"write <source>.{table.name}, e.g. shop.{table.name}.")
        if table.db.lower() == LIVE_SCHEMA:
            reads.setdefault(table.name, None)
        else:
            tables.setdefault((table.db, table.name), None)
    return MzAnalysis(view=view, tree=tree, tables=tuple(tables), reads=tuple(reads))


def _check_shape(tree: exp.Query, refuse: _Refuser) -> None:
    with_ = tree.args.get("with") or tree.find(exp.With)
    if with_ is not None and with_.args.get("recursive"):
        raise refuse("WITH RECURSIVE", with_, "does not support SQL's WITH RECURSIVE.",
                     "use Materialize's WITH MUTUALLY RECURSIVE (declared column types), or a "
                     "non-recursive WITH.", keyword="recursive")
    for cls, word, construct in ((exp.GroupingSets, "grouping", "GROUPING SETS"),
                                 (exp.Rollup, "rollup", "ROLLUP"), (exp.Cube, "cube", "CUBE")):
        node = tree.find(cls)
        if node is not None:
            raise refuse(construct, node, f"does not support {construct}.",
                         "write one GROUP BY per grouping and combine them with UNION ALL.",
                         keyword=word)
    lock = tree.find(exp.Lock)
    if lock is not None:
        raise refuse("FOR UPDATE/SHARE", lock, "views cannot lock rows.",
                     "drop the locking clause.", keyword="for")
    sample = tree.find(exp.TableSample)
    if sample is not None:
        raise refuse("TABLESAMPLE", sample, "does not support TABLESAMPLE.",
                     "filter on a hash of the key instead, e.g. where hashtext(id::text) % 10 "
                     "= 0.", keyword="tablesample")


def _check_function(view: ViewFile, node: exp.Func, refuse: _Refuser) -> None:
    name = node.name.lower() if isinstance(node, exp.Anonymous) else ""
    if name == "mz_now":
        _check_mz_now(node, refuse)
    elif isinstance(node, _UNMATERIALIZABLE_CLASSES) or name in _UNMATERIALIZABLE_NAMES:
        construct = _source(view, node)
        end = (node._meta or {}).get("end")
        if end is not None and view.text[end + 1:].lstrip().startswith("("):
            construct += "()"
        timely = any(w in construct for w in ("now", "time", "date", "mz_logical"))
        raise refuse(construct, node, "cannot materialize it: its value changes without any "
                     "write to the sources.",
                     "filter on time with a temporal filter (mz_now() <= ts + interval '1 day') "
                     "and compare with now() when you read the view." if timely else
                     "drop it from the view and add the value when you read the view.",
                     fallback=construct.rstrip("()"))


def _check_mz_now(node: exp.Expression, refuse: _Refuser) -> None:
    """``mz_now()`` only as Materialize's temporal filter (see the module docstring)."""
    inner = node
    while isinstance(inner.parent, _WRAPPERS):
        inner = inner.parent
    cmp_ = inner.parent
    if isinstance(cmp_, exp.Between) and cmp_.this is inner:
        other = [cmp_.args.get("low"), cmp_.args.get("high")]
    elif isinstance(cmp_, _COMPARISONS):
        other = [cmp_.expression if cmp_.this is inner else cmp_.this]
    elif isinstance(cmp_, exp.NEQ):
        raise refuse("mz_now() <>", cmp_, "compares mz_now() only with =, <, <=, >, >= or "
                     "BETWEEN.", "use mz_now() < x or mz_now() > x in separate views.")
    elif isinstance(cmp_, exp.Binary) and not isinstance(cmp_, exp.Connector):
        raise refuse("arithmetic on mz_now()", cmp_, "cannot compute with mz_now(); only "
                     "compare it.", "move the arithmetic to the other side: " + TEMPORAL_REWRITE)
    else:
        raise refuse("mz_now() outside a temporal filter", node,
                     "materializes mz_now() only compared to a timestamp in WHERE or HAVING.",
                     TEMPORAL_REWRITE)
    if any(o is not None and o.find(exp.Anonymous) is not None and any(
            a.name.lower() == "mz_now" for a in o.find_all(exp.Anonymous)) for o in other):
        raise refuse("mz_now() on both sides", cmp_, "compares mz_now() only to an expression "
                     "without mz_now().", TEMPORAL_REWRITE)
    up = cmp_
    while isinstance(up.parent, (exp.And, exp.Paren)):
        up = up.parent
    holder = up.parent
    if isinstance(holder, (exp.Where, exp.Having)) and isinstance(holder.parent, exp.Select):
        return
    if isinstance(holder, (exp.Or, exp.Not)):
        word = "OR" if isinstance(holder, exp.Or) else "NOT"
        raise refuse(f"mz_now() under {word}", holder, f"combines temporal filters with the "
                     f"other conditions by AND only (no {word}).",
                     "split the view in two and combine them with UNION ALL, or move the "
                     f"{word} into a subquery; " + TEMPORAL_REWRITE)
    if isinstance(holder, exp.Where) and isinstance(holder.parent, exp.Filter):
        raise refuse("mz_now() in an aggregate FILTER", holder, "does not allow temporal "
                     "filters in FILTER (WHERE ...).", "filter the rows in WHERE; "
                     + TEMPORAL_REWRITE)
    raise refuse("mz_now() outside WHERE/HAVING", cmp_, "applies temporal filters in WHERE or "
                 "HAVING only.", TEMPORAL_REWRITE)
