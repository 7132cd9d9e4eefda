"""Freshness objectives: ``-- @freshness: p95 2s`` in a view file, or the setting's default.

An objective reads ``p<percentile> <amount><unit>``: the given percentile of the source commit →
visible-in-view latency must stay at or under the amount (``p95 2s``, ``p99 500ms``,
``p50 1.5s``, ``p99.9 1m``). Both engines accept it in a view file; the embedded stack measures
it (``tidemark.slo``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streaming_views.errors import ViewFileError

OBJECTIVE_RE = re.compile(
    r"^p(?P<pct>\d{1,2}(?:\.\d+)?)\s+(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|min)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}


@dataclass(frozen=True)
class Objective:
    """A freshness objective.

    Attributes:
        percentile: the quantile judged, in (0, 1) (0.95 for ``p95``).
        seconds: the largest latency allowed at that quantile.
        text: the objective as written (``p95 2s``).
    """

    percentile: float
    seconds: float
    text: str

    @property
    def label(self) -> str:
        """``p95`` for a percentile of 0.95."""
        return f"p{self.percentile * 100:g}"


def parse_objective(value: str, where: str = "@freshness") -> Objective:
    """Parse ``p95 2s`` into an :class:`Objective`.

    Args:
        value: the objective text.
        where: what to name in the error (file and setting, or the environment variable).

    Raises:
        ViewFileError: the text is not ``p<percentile> <amount><ms|s|m>`` or out of range.
    """
    text = " ".join(value.strip().lower().split())
    match = OBJECTIVE_RE.match(text)
    hint = ("must read 'p<percentile> <amount><ms|s|m>', e.g. 'p95 2s' or 'p99 500ms' "
            "(the percentile between 1 and 99.9, the amount above 0)")
    if match is None:
        raise ViewFileError(f"{where}: freshness objective {value!r} {hint}.")
    pct = float(match["pct"])
    seconds = float(match["amount"]) * _UNIT_S[match["unit"]]
    if not 1 <= pct < 100 or seconds <= 0:
        raise ViewFileError(f"{where}: freshness objective {value!r} {hint}.")
    return Objective(pct / 100, seconds, text)
