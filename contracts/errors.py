"""Errors raised by the contracts part.

Every error says what is wrong and where (the file and the field), so the person who wrote the
contract can fix it without reading code.
"""

from __future__ import annotations

from pathlib import Path


def display_path(path: object) -> str:
    """Show a contract file's path relative to the working directory when it lies below it."""
    if isinstance(path, Path):
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)
    return str(path)


class ContractsError(Exception):
    """Base class of every error of the contracts part."""


class ContractError(ContractsError):
    """A contract file is broken: bad YAML, a missing or mistyped field, an unknown name.

    The message names the file and the field, e.g.
    ``contracts/shop/orders.yml: columns.status.allowed_values: expected a list, got 'x'``, and
    the line when it is known (``contracts/shop/payments.yml:30: indexes[0]: ...``).

    Attributes:
        path: the contract file.
        field: the dotted path of the offending field ("" for the file as a whole).
        problem: what is wrong with it.
        line: the field's line in the file (1-based), or None.
    """

    def __init__(self, path: object, field: str, problem: str, line: int | None = None) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        self.line = line
        shown = display_path(path) + (f":{line}" if line is not None else "")
        where = f"{shown}: {field}" if field else shown
        super().__init__(f"{where}: {problem}")


class ContractNotFoundError(ContractsError, KeyError):
    """No contract exists for the requested source and table (or event type)."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class UnknownChangeKindError(ContractsError, ValueError):
    """``TableContract.allows`` was asked about a schema change kind it does not know."""
