"""``tidemark views``: deploy, list, verify, rebuild, tick and subscribe to live views."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tidemark.cli.output import console, emit_json, emit_table
from tidemark.errors import TidemarkError
from tidemark.session_env import unpinned
from tidemark.settings import load_settings, redact
from tidemark.stack.databases import ensure_databases

app = typer.Typer(help="Live SQL views: one SELECT per file, maintained incrementally.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
DsnOpt = Annotated[str | None, typer.Option(
    "--dsn", help="Database to use (default: the landing database as its owner role, "
                  "tidemark_app on the embedded server; for --target materialize "
                  "TIDEMARK_MATERIALIZE_URL).")]


class ViewsCommandError(TidemarkError):
    """A live-view command failed; the message comes from the streaming_views part."""


@contextmanager
def _reported() -> Iterator[None]:
    from streaming_views.errors import StreamingViewsError
    try:
        yield
    except StreamingViewsError as exc:
        raise ViewsCommandError(str(exc)) from None


def _dsn(dsn: str | None, target: str = "embedded") -> str:
    if target == "materialize":
        url = dsn or load_settings().materialize_url
        if not url:
            raise ViewsCommandError("--target materialize needs --dsn or "
                                    "TIDEMARK_MATERIALIZE_URL.")
        return unpinned(url)  # Materialize is not PostgreSQL: no pinned session settings
    if dsn:
        return dsn
    # As the role `tidemark up` and Dagster deploy and maintain live views with (tidemark_app
    # on the embedded server, which owns landing): a view this command created as the
    # superuser made every later Dagster deploy fail with "permission denied for view".
    return ensure_databases(load_settings()).landing_app


@app.command("deploy")
def deploy_cmd(
    target: Annotated[str, typer.Option(help="embedded (inside PostgreSQL) or materialize.")]
    = "embedded",
    views_dir: Annotated[Path | None, typer.Option(
        "--views-dir", help="Directory of <name>.sql view files (default: the shipped ones).")]
    = None,
    dsn: DsnOpt = None,
    prune: Annotated[bool, typer.Option("--prune", help="Drop views whose file is gone.")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """Create new views, rebuild changed ones blue/green, leave unchanged ones alone."""
    from streaming_views import deploy
    if target not in {"embedded", "materialize"}:
        raise ViewsCommandError(f"--target must be embedded or materialize; got {target!r}.")
    with _reported():
        url = _dsn(dsn, target)
        results = deploy(url, views_dir, target=target, prune=prune)
    rows = [(r.name, r.target, r.action, r.definition_hash) for r in results]
    if target == "embedded" and not prune:  # a renamed or removed file: say what stays
        rows += [(e.name, e.target, "kept: no file (--prune drops it)", e.definition_hash)
                 for e in _deployed_without_file(url, {r.name for r in results})]
    if json_out:
        emit_json([dict(zip(("name", "target", "action", "hash"), r, strict=True))
                   for r in rows])
    else:
        emit_table("tidemark views deploy", ["view", "target", "action", "hash"], rows)


def _deployed_without_file(dsn: str, names: set[str]) -> list[Any]:
    """Catalog entries of embedded views deployed at ``dsn`` that are not in ``names``: their
    file was renamed or removed, and they stay deployed and maintained until ``--prune``."""
    import psycopg

    from streaming_views.catalog import read_catalog
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [e for e in read_catalog(conn, target="embedded") if e.name not in names]


@app.command("list")
def list_cmd(dsn: DsnOpt = None, json_out: JsonOpt = False) -> None:
    """Show deployed views: name, target, rows, last change applied, hash."""
    from streaming_views.status import list_views
    with _reported():
        views = list_views(_dsn(dsn))
    rows = [(v.name, v.target, v.status, v.rows, v.last_change_at, v.definition_hash)
            for v in views]
    if json_out:
        emit_json([dict(zip(("name", "target", "status", "rows", "last_change_at", "hash"), r,
                            strict=True)) for r in rows])
    else:
        emit_table("live views", ["view", "target", "status", "rows", "last change applied",
                                  "hash"], rows)


@app.command("verify")
def verify_cmd(
    name: Annotated[str | None, typer.Argument(help="One view (default: all).")] = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare each live view with its query (EXCEPT ALL both ways); exit 1 on a difference."""
    from streaming_views import verify
    with _reported():
        results = verify(_dsn(dsn), name)
    if json_out:
        emit_json([{"name": r.name, "ok": r.ok, "columns": r.columns, "problem": r.problem,
                    "interrupted": r.interrupted, "extra": [list(x) for x in r.extra],
                    "missing": [list(x) for x in r.missing]} for r in results])
    else:
        for r in results:
            if r.interrupted:
                console.print(f"[yellow]interrupted[/] live.{r.name}: by {r.interrupted} (its "
                              "check gave way to ingestion); checked again at the next run.")
                continue
            if r.ok:
                console.print(f"[green]ok[/] live.{r.name}")
                continue
            if r.problem:
                console.print(f"[red]BROKEN[/] live.{r.name}: {r.problem}; run 'tidemark "
                              "views deploy' to rebuild it (after fixing its file if needed).")
                continue
            console.print(f"[red]DIFFERS[/] live.{r.name}")
            rows: list[tuple[Any, ...]] = [("live only", *x) for x in r.extra]
            rows += [("query only", *x) for x in r.missing]
            emit_table(f"live.{r.name}: differing rows", ["side", *r.columns], rows)
            console.print(f"Repair: [bold]tidemark views rebuild {r.name}[/] rebuilds its "
                          "state from the base tables (in Dagster: materialise "
                          f"live/{r.name}); a difference that comes back is a bug to report "
                          "with these rows.")
    _exit_unless_ok(results)


def _exit_unless_ok(results: list) -> None:
    """Exit 1 when a view differs from its query (verify, rebuild)."""
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command("rebuild")
def rebuild_cmd(
    names: Annotated[list[str], typer.Argument(help="The views to rebuild.")],
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rebuild embedded views' state from their base tables, then verify them (the repair
    after a failed verify or writes made with the view's triggers disabled; writers wait
    meanwhile). Exit 1 when a view still differs from its query."""
    from streaming_views import rebuild, verify
    target = _dsn(dsn)
    with _reported():
        results = []
        for name in names:
            rebuild(target, name)
            results += verify(target, name)
    if json_out:
        emit_json([{"name": r.name, "rebuilt": True, "ok": r.ok} for r in results])
    else:
        for r in results:
            console.print(f"[green]rebuilt[/] live.{r.name}: it equals its query" if r.ok else
                          f"[red]rebuilt[/] live.{r.name}, and it still differs from its "
                          "query: run 'tidemark views verify' for the rows.")
    _exit_unless_ok(results)


@app.command("tick")
def tick_cmd(
    every: Annotated[float | None, typer.Option(
        "--every", help="Tick every SECONDS until stopped (what 'tidemark up' runs); default: "
                        "once.", min=0.1)] = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move the live views' clock to now: expire and admit the rows of temporal filters
    (mz_now() in WHERE, @retention)."""
    from streaming_views.expiry import tick
    with _reported():
        target = _dsn(dsn)
        if every is None:
            result = tick(target)
            if json_out:
                emit_json({"at": result.at.isoformat() if result else None,
                           "rows": result.rows if result else 0})
            elif result is None:
                console.print("No live view is deployed here: nothing to tick.")
            else:
                console.print(f"Clock at {result.at.isoformat()}: {result.rows} row(s) "
                              "expired or admitted.")
            return
    _tick_forever(target, every)


def _tick_forever(dsn: str, every: float) -> None:
    """Tick at each multiple of ``every`` seconds until SIGTERM/Ctrl-C; a failed tick is
    reported and the next one tried (the next tick catches up: it applies everything due).

    One connection serves every tick (`tidemark up` ticks each second: a new session per tick
    was a backend started, authenticated and its caches filled each second); after a failure
    the next tick connects again."""
    import signal
    import threading
    import time

    import psycopg

    from streaming_views.errors import StreamingViewsError
    from streaming_views.expiry import tick
    stop, ticking = threading.Event(), threading.Event()

    def on_sigterm(*_: object) -> None:
        # A tick waiting in the server (a lock) would keep the process past its parent's end
        # (`tidemark up` killed: every child gets SIGTERM); interrupted, psycopg cancels it.
        stop.set()
        if ticking.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    console.print(f"Ticking the live views' clock every {every:g} s.")
    conn: psycopg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(dsn, autocommit=True)
                ticking.set()
                try:
                    result = tick(conn)
                finally:
                    ticking.clear()
                if result is not None and result.rows:
                    console.print(f"{result.at.isoformat()}: {result.rows} row(s) expired or "
                                  "admitted.")
            except (StreamingViewsError, psycopg.Error) as exc:
                reason = str(exc).strip() or type(exc).__name__
                console.print(f"[red]tick failed[/]: {redact(reason)}; trying again.")
                if conn is not None:
                    conn.close()
                conn = None
            stop.wait(every - time.time() % every)
    except KeyboardInterrupt:
        pass
    finally:
        if conn is not None:
            conn.close()


@app.command("subscribe")
def subscribe_cmd(
    name: Annotated[str, typer.Argument(help="The view.")],
    dsn: DsnOpt = None,
    snapshot: Annotated[bool, typer.Option(help="Start with the current rows as +1.")] = True,
    progress: Annotated[bool, typer.Option(
        "--progress", help="Also print progress rows (mz_progressed = true).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
    = False,
) -> None:
    """Print each committed change of a view like Materialize's SUBSCRIBE: mz_timestamp (the
    view's commit sequence), mz_diff, then the columns (Ctrl-C to stop)."""
    import json

    from streaming_views.subscribe import Batch, columns, subscribe_batches

    def text(v: Any) -> str:
        return "NULL" if v is None else str(v)

    with _reported():
        cols = columns(_dsn(dsn), name)
        if not json_out:
            print("\t".join(["mz_timestamp", *(["mz_progressed"] if progress else []),
                             "mz_diff", *cols]), flush=True)
        try:
            for item in subscribe_batches(_dsn(dsn), name, snapshot=snapshot):
                done = not isinstance(item, Batch)
                if done and not progress:
                    continue
                rows = [((None,) * len(cols), None)] if done else item.changes  # type: ignore[union-attr]
                for row, diff in rows:
                    if json_out:
                        record = {"mz_timestamp": item.seq, "mz_progressed": done,
                                  "mz_diff": diff, **dict(zip(cols, row, strict=True))}
                        print(json.dumps(record, default=str), flush=True)
                    else:
                        flag = [("true" if done else "false")] if progress else []
                        print("\t".join([str(item.seq), *flag, text(diff),
                                         *(text(v) for v in row)]), flush=True)
        except KeyboardInterrupt:
            return
