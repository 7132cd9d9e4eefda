"""Deploying live views that read live views: order, redeploys of an inner view, pruning.

* **Order**: views are deployed inner first (a topological order of "reads ``live.<x>``",
  otherwise by name). A cycle, or a view reading ``live.<x>`` that is neither among the files
  nor deployed, is an error naming the files, raised before anything is deployed.
* **Redeploy of an inner view** (blue/green: a new state table): every view reading it,
  transitively, is rebuilt *in the same transaction* (compiled against the new ``live.<x>``,
  its triggers attached to the new state table), so readers never see an outer view that lags
  behind its inner one and no commit falls between the two. Action ``rebuilt``.
* **Prune**: dropping a view that a remaining view reads is refused, naming its readers.
* **Lock order**: a view's log functions carry its transitive readers
  (:attr:`CompiledView.readers`, see :mod:`streaming_views.layers`); deploying a new reader
  re-creates the log functions of the views under it with the new list, in its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from streaming_views.analyzer import analyze
from streaming_views.catalog import CatalogEntry
from streaming_views.changelog import EVENTS
from streaming_views.compiler import CompiledView, compile_view
from streaming_views.errors import DeployError, StreamingViewsError
from streaming_views.layers import inner_names
from streaming_views.result import DeployResult
from streaming_views.triggers import log_function
from streaming_views.viewfile import ViewFile, parse_view_text


def dependency_order(views: list[ViewFile]) -> list[ViewFile]:
    """``views`` with the live views they read first (by name among equals), for a target that
    builds them all at once (Materialize).

    Raises:
        DeployError: views read each other in a cycle.
    """
    graph = Graph({v.name: v for v in views}, {v.name for v in views})
    for view in views:
        graph.reads[view.name] = set(inner_names(analyze(view).tables))
    return [graph.views[n] for n in graph.order()]


def _where(view: ViewFile) -> str:
    return f"{view.name} ({view.path})"


@dataclass
class Graph:
    """Who reads whom among the views that exist after the deploy: the files, and the
    deployed views without a file (unless pruned).

    Attributes:
        views: every such view by name (files first, then the catalog's definitions).
        files: the names of the views given as files.
        reads: view -> the live views it reads.
    """

    views: dict[str, ViewFile]
    files: set[str]
    reads: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, files: list[ViewFile], deployed: dict[str, CatalogEntry],
              prune: bool) -> Graph:
        """The graph of ``files`` and the views ``deployed``.

        Raises:
            DeployError: a view reads a live view that will not exist (missing, or pruned:
                the message names its readers), or views read each other in a cycle.
        """
        views = {v.name: v for v in files}
        if not prune:
            for name, entry in deployed.items():
                if name not in views:
                    views[name] = parse_view_text(name, entry.definition, Path(entry.path))
        graph = cls(views, {v.name for v in files})
        for name, view in views.items():
            try:
                graph.reads[name] = set(inner_names(analyze(view).tables))
            except StreamingViewsError:
                graph.reads[name] = set()  # its own deploy reports it, in order
        errors = []
        for inner in sorted({i for r in graph.reads.values() for i in r} - set(views)):
            readers = ", ".join(_where(views[n]) for n in sorted(views)
                                if inner in graph.reads[n])
            if inner in deployed:
                errors.append(f"cannot prune live.{inner}: read by {readers}; remove or change "
                              f"those files too, or keep {inner}.sql.")
            else:
                errors.append(f"{readers} read live.{inner}, which is neither deployed nor "
                              f"a view file here; add {inner}.sql or remove the reference.")
        if errors:
            raise DeployError("; ".join(errors))
        graph.order()  # raises on a cycle
        return graph

    def order(self) -> list[str]:
        """Every view, inner views first (by name among equals).

        Raises:
            DeployError: a cycle, naming its files.
        """
        done: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "open":
                cycle = [*path[path.index(name):], name]
                raise DeployError("live views read each other in a cycle: " + " -> ".join(
                    _where(self.views[n]) for n in cycle) + "; a view cannot read itself, "
                    "even through others.")
            state[name] = "open"
            for inner in sorted(self.reads.get(name, ())):
                if inner in self.views:
                    visit(inner, [*path, name])
            state[name] = "done"
            done.append(name)

        for name in sorted(self.views):
            visit(name, [])
        return done

    def readers(self, name: str) -> list[str]:
        """The views reading ``name``, transitively, in deploy order."""
        found: set[str] = set()
        todo = [name]
        while todo:
            inner = todo.pop()
            for reader, reads in self.reads.items():
                if inner in reads and reader not in found:
                    found.add(reader)
                    todo.append(reader)
        return [n for n in self.order() if n in found]

    def inners(self, name: str) -> list[str]:
        """The views ``name`` reads, transitively."""
        found: set[str] = set()
        todo = list(self.reads.get(name, ()))
        while todo:
            inner = todo.pop()
            if inner not in found:
                found.add(inner)
                todo += self.reads.get(inner, ())
        return sorted(found)

    def compiled(self, conn: psycopg.Connection, name: str) -> CompiledView:
        """Compile view ``name`` with its readers (for the lock order)."""
        cv = compile_view(conn, self.views[name])
        cv.readers = tuple(sorted(self.readers(name)))
        return cv

    def result(self, name: str, entry: CatalogEntry | None) -> DeployResult:
        """What a deploy did to ``name``, installed as a reader of a redeployed view."""
        view = self.views[name]
        action = ("created" if entry is None else "rebuilt"
                  if entry.definition_hash == view.definition_hash else "replaced")
        return DeployResult(name, action, "embedded", view.definition_hash)

    def refresh_inners(self, conn: psycopg.Connection, installed: list[str]) -> None:
        """Re-create the log functions of the deployed views under ``installed`` with their
        readers (inside the transaction that installed them, which locked their tables)."""
        for inner in sorted({i for n in installed for i in self.inners(n)} - set(installed)):
            row = conn.execute("select suffix from tidemark.views where name = %s and "
                               "target = 'embedded' and status = 'ok'", (inner,)).fetchone()
            if row is None or inner not in self.views:
                continue
            cv = self.compiled(conn, inner)
            if cv.suffix != row[0]:
                continue
            with conn.cursor() as cur:
                for t in cv.resolved.tables:
                    for event in EVENTS:
                        cur.execute(log_function(cv, t.index, event).replace(  # type: ignore[arg-type]
                            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
