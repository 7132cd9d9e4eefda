"""Entry point of the ``tidemark`` command: merges the command groups of every part."""

from __future__ import annotations

import inspect
import os
import sys

import typer

from tidemark.cli import contracts as contracts_cli
from tidemark.cli import dagster as dagster_cli
from tidemark.cli import db, demo, up
from tidemark.cli import dlq as dlq_cli
from tidemark.cli import ingest as ingest_cli
from tidemark.cli import reconcile as reconcile_cli
from tidemark.cli import source as source_cli
from tidemark.cli import status as status_cli
from tidemark.cli import views as views_cli
from tidemark.cli.output import fail
from tidemark.errors import TidemarkError
from tidemark.session_env import pin_session_environment
from tidemark.stack.dbt import path_with_scripts

app = typer.Typer(
    name="tidemark",
    help="Live SQL views, daily truth rebuilt by dbt, and checks that prove the two agree.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(demo.app, name="demo")
app.add_typer(views_cli.app, name="views")
app.add_typer(source_cli.app, name="source")
app.add_typer(contracts_cli.app, name="contracts")
app.add_typer(ingest_cli.app, name="ingest")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(reconcile_cli.app, name="reconcile")
app.add_typer(dagster_cli.app, name="dagster")
app.command("up")(up.up)
app.command("status")(status_cli.status)


def one_line_summaries(typer_app: typer.Typer) -> None:
    """Give each command of ``typer_app`` (and of its groups) a one-line summary.

    The command lists of ``--help`` show a command's first docstring paragraph, and typer's
    rich mode keeps that paragraph's line breaks: a docstring wrapped at 100 columns came out
    at 80 as a full line, a short one and a full one. The summary is that paragraph with its
    line breaks made spaces, which rich wraps to the terminal's width. A summary set with
    ``short_help=`` is kept.
    """
    for info in typer_app.registered_commands:
        if info.short_help is None:
            doc = info.help or inspect.getdoc(info.callback) or ""
            info.short_help = " ".join(doc.split("\n\n")[0].split()) or None
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            one_line_summaries(group.typer_instance)


one_line_summaries(app)


def main() -> None:
    """Run the CLI; an error becomes a clear message and exit code 2, never a traceback.

    A :class:`TidemarkError` says what went wrong and what to do; anything else is unexpected:
    its traceback goes to a file whose path the message names.
    """
    # As activating the environment would: `.venv/bin/tidemark up` runs without it, and the
    # processes it starts run dbt and dagster-* from PATH.
    os.environ["PATH"] = path_with_scripts(os.environ.get("PATH", ""))
    pin_session_environment()  # the user's PGDATESTYLE, PGTZ, PGOPTIONS are not Tidemark's
    try:
        app()
    except TidemarkError as exc:
        fail(str(exc))
        sys.exit(2)
    except Exception as exc:  # unexpected: the details go to a file, not to the terminal
        log = write_traceback(exc)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(f"unexpected {type(exc).__name__}: {reason} (details in {log}). Please report it "
             f"with that file.")
        sys.exit(2)


def write_traceback(exc: BaseException) -> str:
    """Append ``exc``'s traceback to ``$TIDEMARK_HOME/logs/cli-error.log`` (or a temp file)."""
    import tempfile
    import traceback
    from pathlib import Path

    try:
        from tidemark.settings import load_settings

        log = load_settings().log_dir / "cli-error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
    except (TidemarkError, OSError):
        log = Path(tempfile.gettempdir()) / "tidemark-cli-error.log"
    with open(log, "a", encoding="utf-8") as out:
        out.write("".join(traceback.format_exception(exc)))
    return str(log)


if __name__ == "__main__":
    main()
