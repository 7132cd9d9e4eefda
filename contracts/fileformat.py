"""The YAML file format of contracts, as pydantic models, and readable messages for its errors.

Only the shape of each file is checked here (field names, types, known words). Checks that relate
fields to each other (a primary key column exists, allowed values fit the column type, ...) are
done by :mod:`contracts.loader`, which reports them with the same "file: field: problem" form.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

_DURATION_PART = re.compile(r"(\d+)\s*(d|h|m|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any) -> Any:
    """Read a duration written as ``30s``, ``15m``, ``6h``, ``2d`` or a sum like ``1h30m``.

    Args:
        value: the YAML value.

    Returns:
        A ``timedelta`` (other values are passed through for pydantic to reject).

    Raises:
        ValueError: a string that is not a duration.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION_PART.findall(text)
        if not parts or _DURATION_PART.sub("", text).strip():
            raise ValueError(f"expected a duration like '30s', '15m', '6h', '2d' or '1h30m', "
                             f"got {value!r}")
        return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Number = int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ValueRules(_Strict):
    """What a column and a payload field share: nullability, description and value checks."""

    nullable: bool = False
    description: str | None = None
    allowed_values: list[Any] | None = None
    min: Number | None = None
    max: Number | None = None
    pattern: str | None = None


class ColumnFile(_ValueRules):
    """``columns.<name>`` of a table contract."""

    type: str


class FreshnessFile(_Strict):
    """``freshness`` of a table contract."""

    warn_after: Duration
    error_after: Duration
    loaded_at: str | None = None


class RuleFile(_Strict):
    """One entry of ``rules`` of a table contract."""

    name: str
    description: str | None = None
    when: dict[str, Any]
    require: list[str] = Field(default_factory=list)
    forbid: list[str] = Field(default_factory=list)


class EventsFile(_Strict):
    """``events`` of an outbox table contract."""

    type_column: str
    payload_column: str


class TableFile(_Strict):
    """A table contract file, ``<source>/<table>.yml``."""

    version: int
    description: str | None = None
    primary_key: list[str]
    event_time: str | None = None
    idempotency_key: str | None = None
    compatibility: Literal["none", "backward", "full"]
    allowed_lateness: Duration
    freshness: FreshnessFile
    columns: dict[str, ColumnFile] = Field(min_length=1)
    rules: list[RuleFile] = Field(default_factory=list)
    events: EventsFile | None = None
    indexes: list[str | list[str]] = Field(default_factory=list)


class FieldFile(_ValueRules):
    """``payload.<key>`` of an event contract."""

    type: Literal["string", "uuid", "integer", "number", "boolean"]
    required: bool = True


class EventFile(_Strict):
    """An event contract file, ``<source>/events/<event_type>.yml``."""

    version: int
    description: str | None = None
    additional_properties: bool = False
    payload: dict[str, FieldFile] = Field(min_length=1)


_EXPECTED = {
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "float_type": "expected a number",
    "timedelta_type": "expected a duration like '15m' or '6h'",
}


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling against the contract format in the README)"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, got {value!r}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}, got {value!r}"
    if kind == "too_short":
        return f"must not be empty, got {value!r}"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"{error['msg']}, got {value!r}"


def first_error(exc: ValidationError) -> tuple[str, str]:
    """Turn a pydantic error into ``(field path, problem)`` for a :class:`ContractError`.

    When one value fails several alternatives of a union (e.g. ``min: "x"`` is neither int nor
    float), only the first is reported: one clear message beats a list of near-duplicates.
    """
    errors = exc.errors(include_url=False)
    error = errors[0]
    loc = [str(part) for part in error["loc"]]
    # A union's member name (e.g. "int", "float") is appended to the location: drop it.
    while loc and loc[-1] in {"int", "float", "function-before[parse_duration(), timedelta]"}:
        loc.pop()
    return ".".join(loc), _describe(error)
