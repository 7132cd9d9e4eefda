"""Converters of payload field types: JSON values as ``json.loads`` returns them.

A converter returns the value, or raises :class:`~contracts.pgtypes.TypeMismatch` naming what it
expected. The loader uses them to check a contract's allowed values; the validator to check
payload fields.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any
from uuid import UUID

from contracts.pgtypes import Converter, TypeMismatch

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _json_string(value: Any) -> str:
    if type(value) is str:
        return value
    raise TypeMismatch(f"expected a string, got {json_kind(value)}")


def _json_uuid(value: Any) -> str:
    if type(value) is str and _UUID_RE.fullmatch(value):
        return value
    if isinstance(value, UUID):
        return str(value)
    raise TypeMismatch(f"expected a UUID string, got {value!r}")


def _json_integer(value: Any) -> int:
    if type(value) is int:
        return value
    raise TypeMismatch(f"expected an integer, got {json_kind(value)} {value!r}")


def _json_number(value: Any) -> Any:
    if type(value) in (int, float, Decimal) and (type(value) is int or math.isfinite(value)):
        return value
    raise TypeMismatch(f"expected a number, got {json_kind(value)} {value!r}")


def _json_boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise TypeMismatch(f"expected true or false, got {json_kind(value)} {value!r}")


def json_kind(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             Decimal: "a number", dict: "an object", list: "an array", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


JSON_CONVERTERS: dict[str, Converter] = {
    "string": _json_string,
    "uuid": _json_uuid,
    "integer": _json_integer,
    "number": _json_number,
    "boolean": _json_boolean,
}
"""Converters of payload field types (values as ``json.loads`` returns them)."""
