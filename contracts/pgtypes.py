"""The PostgreSQL column types a contract may declare, and how values of each type are read.

A value reaches the validator in one of two forms, and both are accepted:

- **Python values** as psycopg returns them: ``int``, ``Decimal``, ``float``, ``str``, ``bool``,
  ``datetime`` (time-zone aware), ``date``, ``UUID``, ``dict``/``list``/scalars for ``jsonb``, and
  ``list`` for arrays;
- **textual forms** as a CDC decoder produces them from pgoutput (every value a ``str``):
  ``'123'``, ``'12.50'``, ``'t'``/``'f'``, ``'2024-05-01 12:00:00.5+00'`` (any ISO 8601 with an
  offset), ``'{a,b,"c d"}'`` for arrays, JSON text for ``jsonb``.

A ``str`` given for a ``jsonb`` column is always read as JSON text. Each type has a *converter*
that returns the canonical Python value or raises :class:`TypeMismatch` with a short reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

Converter = Callable[[Any], Any]


class TypeMismatch(Exception):
    """A value is not of (and cannot be read as) the declared type; ``args[0]`` says why."""


_INT_RE = re.compile(r"[+-]?\d+")
_NUMERIC_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = frozenset({"t", "true"})
_FALSE = frozenset({"f", "false"})
_NUMERIC_TYPE_RE = re.compile(r"numeric\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")

INT_BOUNDS = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
SCALAR_TYPES = ("smallint", "integer", "bigint", "numeric", "numeric(p,s)", "real",
                "double precision", "text", "boolean", "date", "timestamptz", "uuid", "jsonb")
NUMBER_TYPES = frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"})


@dataclass(frozen=True)
class PgType:
    """A parsed column type name.

    Attributes:
        name: the canonical name as written in contracts and reported by ``format_type``
            (``integer``, ``numeric(12,2)``, ``text[]``, ...).
        base: the scalar type without modifiers (``numeric`` for ``numeric(12,2)``).
        precision: numeric precision, if given.
        scale: numeric scale, if given.
        is_array: whether the column is a one-dimensional array of ``base``.
    """

    name: str
    base: str
    precision: int | None = None
    scale: int | None = None
    is_array: bool = False

    @property
    def is_number(self) -> bool:
        """Whether ``min``/``max`` make sense for (the elements of) this type."""
        return self.base in NUMBER_TYPES

    @property
    def is_text(self) -> bool:
        """Whether ``pattern`` makes sense for (the elements of) this type."""
        return self.base == "text"


def parse_type(name: str) -> PgType:
    """Parse a contract's type name.

    Args:
        name: e.g. ``"bigint"``, ``"numeric(12, 2)"``, ``"text[]"``, ``"timestamptz"``.

    Returns:
        The parsed type, with a canonical ``name`` (no spaces inside ``numeric(p,s)``).

    Raises:
        ValueError: the name is not a supported type; the message lists the supported ones.
    """
    text = " ".join(name.strip().lower().split())
    is_array = text.endswith("[]")
    if is_array:
        text = text[:-2].rstrip()
    match = _NUMERIC_TYPE_RE.fullmatch(text)
    if match:
        precision = int(match.group(1))
        scale = int(match.group(2) or 0)
        if not 1 <= precision <= 1000 or scale > precision:
            raise ValueError(f"numeric({precision},{scale}) needs 1 <= precision <= 1000 and "
                             "scale <= precision")
        base, canonical = "numeric", f"numeric({precision},{scale})"
    elif text in SCALAR_TYPES and text != "numeric(p,s)":
        base, canonical, precision, scale = text, text, None, None
    else:
        raise ValueError(f"unknown column type {name!r}; supported: {', '.join(SCALAR_TYPES)}, "
                         "and any of them followed by [] for a one-dimensional array")
    return PgType(canonical + ("[]" if is_array else ""), base, precision, scale, is_array)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """Name a bad value: a string is quoted, anything else shown by its type."""
    return repr(value) if isinstance(value, str) else type(value).__name__


def _int_converter(base: str) -> Converter:
    low, high = INT_BOUNDS[base]

    def convert(value: Any) -> int:
        if type(value) is not int:
            if (isinstance(value, str) and _INT_RE.fullmatch(value)) or _is_int(value):
                value = int(value)
            else:
                raise TypeMismatch(f"expected {base}, got {_shown(value)}")
        if not low <= value <= high:
            raise TypeMismatch(f"{value} is out of the {base} range")
        return value

    return convert


def _numeric_converter(precision: int | None, scale: int | None) -> Converter:
    limit = Decimal(10) ** (precision - (scale or 0)) if precision is not None else None
    quantum = Decimal(1).scaleb(-(scale or 0))

    def convert(value: Any) -> Decimal:
        if type(value) is not Decimal:
            if (isinstance(value, str) and _NUMERIC_RE.fullmatch(value)) or _is_int(value):
                value = Decimal(value)
            elif isinstance(value, float) and math.isfinite(value):
                value = Decimal(repr(value))
            elif isinstance(value, Decimal):
                value = Decimal(value)
            else:
                raise TypeMismatch(f"expected a number, got {_shown(value)}")
        if not value.is_finite():
            raise TypeMismatch(f"expected a finite number, got {value}")
        if limit is not None:
            if abs(value) >= limit:
                raise TypeMismatch(f"{value} does not fit numeric({precision},{scale})")
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -(scale or 0):
                try:
                    exact = value == value.quantize(quantum)
                except InvalidOperation:
                    exact = False
                if not exact:
                    raise TypeMismatch(f"{value} has more than {scale} decimal places")
        return value

    return convert


def _float(value: Any) -> float:
    if type(value) is float:
        result = value
    elif (isinstance(value, str) and _NUMERIC_RE.fullmatch(value)) or _is_int(value) or (
            isinstance(value, Decimal)):
        result = float(value)
    else:
        raise TypeMismatch(f"expected a floating-point number, got {_shown(value)}")
    if not math.isfinite(result):
        raise TypeMismatch(f"expected a finite number, got {value}")
    return result


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    raise TypeMismatch(f"expected text, got {type(value).__name__}")


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise TypeMismatch(f"expected a boolean (or 't'/'f'), got {value!r}")


def _timestamptz(value: Any) -> datetime:
    if type(value) is not datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise TypeMismatch(f"expected an ISO 8601 timestamp, got {value!r}") from None
        elif not isinstance(value, datetime):
            raise TypeMismatch(f"expected a timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        raise TypeMismatch("expected a timestamp with a time zone, got a naive one")
    return value


def _date(value: Any) -> date:
    if type(value) is date:
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise TypeMismatch(f"expected an ISO date, got {value!r}") from None
    raise TypeMismatch(f"expected a date, got {type(value).__name__}")


def _uuid(value: Any) -> UUID:
    if type(value) is UUID:
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise TypeMismatch(f"expected a UUID, got {value!r}") from None
    raise TypeMismatch(f"expected a UUID, got {type(value).__name__}")


_JSON_TYPES = (dict, list, int, float, Decimal, bool)


def _jsonb(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise TypeMismatch(f"expected JSON text, got invalid JSON ({exc})") from None
    if isinstance(value, _JSON_TYPES):
        return value
    raise TypeMismatch(f"expected a JSON value, got {type(value).__name__}")


def parse_array_literal(text: str) -> list[str | None]:
    """Parse a one-dimensional PostgreSQL array literal such as ``{a,"b c",NULL}``.

    Args:
        text: the array's text form.

    Returns:
        The elements as strings (``None`` for an unquoted ``NULL``).

    Raises:
        TypeMismatch: the text is not a one-dimensional array literal.
    """
    if len(text) < 2 or text[0] != "{" or text[-1] != "}":
        raise TypeMismatch(f"expected an array literal like {{a,b}}, got {text!r}")
    body = text[1:-1]
    if not body:
        return []
    items: list[str | None] = []
    i, n = 0, len(body)
    while True:
        if i < n and body[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(body[i])
                i += 1
            if i >= n:
                raise TypeMismatch(f"unterminated quoted element in array literal {text!r}")
            i += 1
            items.append("".join(chars))
        else:
            end = body.find(",", i)
            end = n if end < 0 else end
            raw = body[i:end].strip()
            if not raw or "{" in raw or '"' in raw:
                raise TypeMismatch(f"expected a one-dimensional array literal, got {text!r}")
            items.append(None if raw.upper() == "NULL" else raw)
            i = end
        if i >= n:
            return items
        if body[i] != ",":
            raise TypeMismatch(f"expected ',' at position {i + 1} of array literal {text!r}")
        i += 1


def _array_converter(element: Converter, element_type: str) -> Converter:
    def convert(value: Any) -> list[Any]:
        if isinstance(value, str):
            value = parse_array_literal(value)
        elif not isinstance(value, list | tuple):
            raise TypeMismatch(f"expected an array of {element_type}, got "
                               f"{type(value).__name__}")
        result = []
        for index, item in enumerate(value):
            if item is None:
                raise TypeMismatch(f"element [{index}] is NULL (arrays hold no NULL elements)")
            try:
                result.append(element(item))
            except TypeMismatch as exc:
                raise TypeMismatch(f"element [{index}]: {exc.args[0]}") from None
        return result

    return convert


_SCALAR_CONVERTERS: dict[str, Converter] = {
    "real": _float,
    "double precision": _float,
    "text": _text,
    "boolean": _boolean,
    "date": _date,
    "timestamptz": _timestamptz,
    "uuid": _uuid,
    "jsonb": _jsonb,
}


def scalar_converter(pg_type: PgType) -> Converter:
    """Return the converter of one value (one element, for an array) of ``pg_type``."""
    if pg_type.base in INT_BOUNDS:
        return _int_converter(pg_type.base)
    if pg_type.base == "numeric":
        return _numeric_converter(pg_type.precision, pg_type.scale)
    return _SCALAR_CONVERTERS[pg_type.base]


def converter(pg_type: PgType) -> Converter:
    """Return the converter of a whole column value of ``pg_type`` (arrays included)."""
    scalar = scalar_converter(pg_type)
    if pg_type.is_array:
        return _array_converter(scalar, pg_type.name[:-2])
    return scalar
