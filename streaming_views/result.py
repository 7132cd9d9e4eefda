"""What a deploy did to one view, whichever engine deployed it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeployResult:
    """What deploy did to one view: ``created``, ``replaced``, ``repaired``,
    ``unchanged`` or ``dropped``."""

    name: str
    action: str
    target: str
    definition_hash: str
