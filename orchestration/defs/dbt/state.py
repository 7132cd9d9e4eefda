"""Which dbt manifest the code location loads: the last one that parsed, and why not a newer one.

A dbt project that does not parse (a typo in a model's Jinja, a ``ref()`` to no model, broken
YAML) must not take the rest of the platform down with it. Like Dagster's state-backed dbt
component, the definitions are built from stored state, the last ``manifest.json`` dbt wrote,
and a failed parse leaves that state alone (dbt writes no manifest when it fails):

* the failure (dbt's message, the file and line it names, when) is recorded beside the manifest
  in ``<target>/parse_failure.json`` and shown wherever the dbt assets are: on each dbt asset
  (description and metadata), in the definitions' metadata, in ``tidemark up`` and
  ``tidemark status``;
* with no manifest at all (a fresh start on a broken project) the dbt assets, and what reads the
  marts (reconciliation, serving), are absent; one ``dbt/project`` asset says why;
* ingestion and live views load and run whatever state the dbt project is in;
* a load parses again only when a file of the project changed after the manifest or the
  recorded failure: fixing the file and reloading the definitions (the UI's "Reload", a new run,
  ``tidemark up``) recovers, without a parse per load while the file stays broken.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

FAILURE_FILE = "parse_failure.json"
#: dbt's output lines kept in the message (the error and the offending line are the first ones).
MESSAGE_LINES = 8
_CLOCK = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d+)?\s+")
_FILE = re.compile(r"[\w./-]+\.(?:sql|ya?ml|md|csv)\b")
_LINE = re.compile(r"\bline (\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ParseFailure:
    """A ``dbt parse`` that failed.

    Attributes:
        message: dbt's message (its "Encountered an error:" part).
        file: the project file dbt names, relative to the project (None when it names none).
        line: the line dbt names in it (None when it names none: a ``ref()`` to no model).
        at: when the parse started (ISO, UTC).
        project_dir: the dbt project.
    """

    message: str
    file: str | None
    line: int | None
    at: str
    project_dir: str

    @classmethod
    def from_output(cls, output: str, project_dir: Path, started: float) -> ParseFailure:
        """The failure dbt's ``output`` (its log or the CLI error's text) describes."""
        lines = [_CLOCK.sub("", line.rstrip()) for line in output.splitlines()]
        marks = [i for i, line in enumerate(lines) if "Encountered an error" in line]
        body = lines[marks[-1] + 1:] if marks else lines
        body = [line for line in body if line.strip()
                and not line.lstrip().startswith("Run `dbt parse")][:MESSAGE_LINES]
        message = "\n".join(body).strip() or output.strip()[-2000:]
        found = _FILE.search(message)
        file = found.group(0) if found else None
        if file is not None and not file.startswith(("models/", "macros/", "tests/", "seeds/",
                                                     "snapshots/", "analyses/")):
            nested = [p for p in Path(project_dir).glob(f"*/{file}") if p.is_file()]
            if len(nested) == 1:  # YAML errors name the file under its resource folder
                file = str(nested[0].relative_to(project_dir))
        line = _LINE.search(message)
        return cls(message, file, int(line.group(1)) if line else None,
                   datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
                   str(project_dir))

    def where(self) -> str:
        """``models/x.sql line 4`` (or as much of it as dbt said)."""
        if self.file is None:
            return "the dbt project"
        return f"{self.file} line {self.line}" if self.line else self.file

    def headline(self) -> str:
        """One line: where and dbt's first line of message."""
        first = next((line.strip() for line in self.message.splitlines()
                      if line.strip() and not line.strip().startswith(
                          ("Compilation Error", "Parsing Error", "Error reading"))),
                     self.message.strip())
        return f"{self.where()}: {first}"

    def explain(self) -> str:
        """The whole story: what failed, where, dbt's message, what to do."""
        return (f"dbt parse of {self.project_dir} failed at {self.where()} ({self.at}):\n"
                f"{self.message}\nFix the file, then reload the definitions (the UI's "
                f"Deployment > Reload, or `tidemark up`). Run `dbt parse --project-dir "
                f"{self.project_dir} --profiles-dir {self.project_dir}` to see dbt's full "
                "output.")


@dataclass(frozen=True)
class DbtState:
    """What the code location loads of the dbt project.

    Attributes:
        manifest: the manifest to build the dbt assets from (the last that parsed), or None.
        failure: the latest parse's failure, or None when the manifest is current.
    """

    manifest: Path | None
    failure: ParseFailure | None = None

    def warning(self) -> str | None:
        """What the UI shows on each dbt asset while the project does not parse."""
        if self.failure is None:
            return None
        when = (datetime.fromtimestamp(self.manifest.stat().st_mtime, UTC)
                .isoformat(timespec="seconds") if self.manifest else None)
        loaded = (f"These dbt assets are the last manifest that parsed ({when}); runs of them "
                  "fail until the file is fixed." if when else
                  "No dbt asset is loaded: no manifest has parsed yet.")
        return f"dbt project does not parse: {self.failure.headline()}. {loaded}"

    def metadata(self) -> dict[str, Any]:
        """Definitions/asset metadata describing the failure (empty when none)."""
        if self.failure is None:
            return {}
        import dagster as dg

        return {"dbt_parse_failure": dg.MetadataValue.md(
                    f"**{self.warning()}**\n\n```\n{self.failure.explain()}\n```"),
                "dbt_parse_failed_at": dg.MetadataValue.text(self.failure.where())}


def changed_after(project_dir: Path, target: Path, when: float) -> bool:
    """Whether a parsed file of the project (models, tests, macros, YAML...) changed, or one was
    added, removed or renamed (its folder's time), after ``when`` (a stat of each file and
    folder, no parse: a few milliseconds for the shipped project)."""
    from orchestration.defs.dbt.project import NOT_PARSED

    target = target.resolve()
    for folder, dirs, files in os.walk(project_dir):
        try:
            if Path(folder).stat().st_mtime > when:
                return True
        except FileNotFoundError:
            continue
        dirs[:] = [d for d in dirs if d not in NOT_PARSED and not d.startswith(".")
                   and Path(folder, d).resolve() != target]
        for name in files:
            if name.startswith("."):  # dbt's .user.yml, editors' swap files
                continue
            try:
                if Path(folder, name).stat().st_mtime > when:
                    return True
            except FileNotFoundError:  # removed meanwhile
                continue
    return False


def read_failure(target: Path) -> ParseFailure | None:
    """The recorded parse failure in ``target`` (None when the last parse succeeded)."""
    try:
        return ParseFailure(**json.loads((target / FAILURE_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def record_failure(target: Path, failure: ParseFailure, started: float) -> None:
    """Record ``failure`` in ``target``, dated when its parse started (so a file saved during
    the parse still counts as a change)."""
    target.mkdir(parents=True, exist_ok=True)
    path = target / FAILURE_FILE
    path.write_text(json.dumps(asdict(failure), indent=2))
    os.utime(path, (started, started))


def clear_failure(target: Path) -> None:
    """Forget a recorded failure (a parse succeeded)."""
    (target / FAILURE_FILE).unlink(missing_ok=True)


def needs_parse(project: Any) -> bool:
    """Whether a file changed after both the manifest and the recorded failure."""
    target = Path(project.target_path)
    stamps = [p.stat().st_mtime for p in (Path(project.manifest_path), target / FAILURE_FILE)
              if p.exists()]
    if not stamps:
        return True
    return changed_after(Path(project.project_dir), target, max(stamps))


def _newer(path: Path, than: Path) -> bool:
    try:
        return path.stat().st_mtime > than.stat().st_mtime
    except FileNotFoundError:
        return False


@contextmanager
def parse_lock(target: Path) -> Iterator[None]:
    """One parse at a time per target directory (a webserver and a daemon may load at once)."""
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_dbt_state(project: Any) -> DbtState:
    """Parse ``project`` if a file changed since the last parse, recording a failure; return the
    manifest to load (the last that parsed) and the failure, if any."""
    from orchestration.defs.dbt.project import run_parse
    from orchestration.defs.errors import DefinitionsError

    target = Path(project.target_path)
    with parse_lock(target):
        failure = read_failure(target)
        if failure is not None and _newer(Path(project.manifest_path), target / FAILURE_FILE):
            failure = None  # parsed since (`tidemark up`'s own dbt parse)
            clear_failure(target)
        if needs_parse(project):
            started = time.time()
            try:
                run_parse(project)
                failure = None
            except DefinitionsError as exc:
                failure = ParseFailure.from_output(str(exc.__cause__ or exc),
                                                   Path(project.project_dir), started)
                record_failure(target, failure, started)
    manifest = Path(project.manifest_path)
    return DbtState(manifest if manifest.exists() else None, failure)


@cache
def current_state() -> DbtState:
    """This process's :func:`load_dbt_state` of the configured project (one parse per load)."""
    import logging

    from orchestration.defs.dbt.project import tidemark_dbt_project

    state = load_dbt_state(tidemark_dbt_project())
    if state.failure is not None:  # in the webserver's, daemon's and `definitions validate` logs
        logging.getLogger("tidemark").warning("%s\n%s", state.warning(), state.failure.explain())
    return state


def project_status(project_dir: Path, target: Path) -> dict[str, Any]:
    """What ``tidemark status`` says of the dbt project, read from ``target`` (no parse).

    Returns:
        ``parses`` (False: the last parse failed; None: files changed since it, not parsed
        yet), ``manifest_at``, ``failure`` (where, dbt's message, when), ``advice``.
    """
    manifest, record = target / "manifest.json", target / FAILURE_FILE
    failure = read_failure(target)
    if failure is not None and _newer(manifest, record):
        failure = None
    stamps = [p.stat().st_mtime for p in (manifest, record) if p.exists()]
    changed = not stamps or changed_after(project_dir, target, max(stamps))
    at = (datetime.fromtimestamp(manifest.stat().st_mtime, UTC).isoformat(timespec="seconds")
          if manifest.exists() else None)
    out: dict[str, Any] = {"parses": None if changed else failure is None, "manifest_at": at,
                           "failure": None, "advice": None}
    if failure is not None:
        out["failure"] = {"where": failure.where(), "message": failure.message,
                          "at": failure.at}
        out["advice"] = (
            ("Dagster shows the dbt assets of the last manifest that parsed "
             f"({at}); their runs fail" if at else "Dagster has no dbt assets")
            + "; ingestion and live views run. Fix the file, then Reload the code location "
            "in the UI (Deployment) or run `tidemark up`."
            + (" (The project changed since that parse: the next load parses it again.)"
               if changed else ""))
    elif changed:
        out["advice"] = ("dbt project changed since the last parse" if stamps else
                         "dbt project not parsed here yet") + (
            "; the next load of the definitions (the UI's Reload, a run) parses it.")
    return out
