"""``logs/ingest.log`` (``tidemark ingest run``'s stderr, not a terminal) is stamped in UTC
with its zone, whatever the user's ``TZ``: like ``tick.log``, the server's log and ``tidemark
status``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

PROGRAM = """
import logging
from tidemark.cli.ingest import _logging
_logging()
logging.getLogger("tidemark.ingestion").info("source shop: streaming")
"""


def test_ingest_log_lines_are_stamped_in_utc_with_the_zone() -> None:
    env = {**os.environ, "TZ": "Asia/Kathmandu"}  # UTC+05:45: a local stamp is hours off
    before = datetime.now(UTC)
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    line = done.stderr.strip().splitlines()[-1]
    stamp, level, rest = line.split(" ", 2)
    assert (level, rest) == ("INFO", "tidemark.ingestion: source shop: streaming"), line
    at = datetime.fromisoformat(stamp)
    assert at.utcoffset() == timedelta(0), line
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1), line
