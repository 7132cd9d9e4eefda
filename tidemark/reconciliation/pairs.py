"""The live view / mart pairs of ``dbt_project/reconciliation.yml`` (no database, no Dagster).

:func:`load_pairs` reads and checks the pair file: which live view is reconciled against which
mart, on which day column and keys, which measures with which tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import yaml

from tidemark.reconciliation.errors import ReconciliationConfigError
from tidemark.settings import load_settings

PAIRS_FILE = "reconciliation.yml"


def pairs_file() -> Path:
    """The pair file: ``reconciliation.yml`` of the dbt project (``TIDEMARK_DBT_PROJECT_DIR``)."""
    return load_settings().dbt_project_dir / PAIRS_FILE


@dataclass(frozen=True)
class Measure:
    """One compared measure: live column, mart column and tolerance."""

    name: str
    live_column: str
    mart_column: str
    absolute: Decimal
    relative: Decimal

    def agrees(self, live: Decimal | None, truth: Decimal | None) -> bool:
        """|live - truth| <= absolute, or <= relative * max(|live|, |truth|)."""
        if live is None or truth is None:
            return live is None and truth is None
        diff = abs(live - truth)
        return diff <= self.absolute or diff <= self.relative * max(abs(live), abs(truth))


@dataclass(frozen=True)
class Pair:
    """A live view and the mart it is reconciled against (see reconciliation.yml)."""

    name: str
    live_view: str
    mart: str
    day_column: str
    keys: tuple[str, ...]
    measures: tuple[Measure, ...]
    live_retention_days: int | None
    missing_as_zero: bool


def load_pairs(path: Path | None = None) -> tuple[Pair, ...]:
    """Read and check the pair file (default: :func:`pairs_file`).

    Raises:
        ReconciliationConfigError: the file is missing or a field is wrong (named).
    """
    return _load_pairs(path or pairs_file())


@lru_cache(maxsize=4)
def _load_pairs(path: Path) -> tuple[Pair, ...]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReconciliationConfigError(f"{path}: cannot read the pair file: {exc}") from None
    pairs = []
    for i, raw in enumerate((doc or {}).get("pairs") or []):
        where = f"{path}: pairs[{i}]"
        try:
            measures = tuple(Measure(
                m["name"], m.get("live_column", m["name"]), m.get("mart_column", m["name"]),
                Decimal(str(m.get("tolerance", {}).get("absolute", 0))),
                Decimal(str(m.get("tolerance", {}).get("relative", 0)))) for m in raw["measures"])
            pair = Pair(raw["name"], raw["live_view"], raw["mart"], raw["day_column"],
                        tuple(raw["keys"]), measures, raw.get("live_retention_days"),
                        bool(raw.get("missing_as_zero", False)))
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ReconciliationConfigError(f"{where}: missing or invalid field {exc}; see the "
                                            f"file's header for the format.") from None
        if pair.day_column not in pair.keys:
            raise ReconciliationConfigError(f"{where}: day_column {pair.day_column!r} must be "
                                            f"one of the keys {list(pair.keys)}.")
        pairs.append(pair)
    if not pairs:
        raise ReconciliationConfigError(f"{path}: no pairs defined.")
    return tuple(pairs)
