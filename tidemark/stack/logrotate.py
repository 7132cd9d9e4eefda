"""Size-bounded logs of ``tidemark up``: every ``*.log`` in ``$TIDEMARK_HOME/logs``.

The writers are other processes (PostgreSQL through ``pg_ctl -l``, ingestion, the clock, the
Dagster webserver and daemon) that keep their log open in append mode, so a log is rotated by
copy and truncate: ``x.log.2`` → ``x.log.3``, ``x.log.1`` → ``x.log.2``, ``x.log`` copied to
``x.log.1``, then ``x.log`` truncated to zero; its writer's next line (``O_APPEND``) lands at
the start of the empty file. A line written between the copy and the truncation (microseconds)
can be lost. ``tidemark up`` checks every :data:`CHECK_EVERY_S` seconds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHECK_EVERY_S = 30.0


def rotate_logs(log_dir: Path, max_bytes: int, keep: int) -> list[Path]:
    """Rotate every ``*.log`` of ``log_dir`` larger than ``max_bytes``, keeping ``keep``
    older files of each (``x.log.1`` newest ... ``x.log.<keep>``).

    Args:
        log_dir: the logs directory.
        max_bytes: a log larger than this is rotated.
        keep: rotated files kept per log (0: a full log is only truncated).

    Returns:
        The logs rotated.
    """
    rotated = []
    for log in sorted(log_dir.glob("*.log")):
        try:
            if log.stat().st_size <= max_bytes:
                continue
        except FileNotFoundError:
            continue
        _rotate(log, keep)
        rotated.append(log)
    return rotated


def _rotate(log: Path, keep: int) -> None:
    if keep > 0:
        for n in range(keep - 1, 0, -1):
            older = log.with_name(f"{log.name}.{n}")
            if older.exists():
                os.replace(older, log.with_name(f"{log.name}.{n + 1}"))
        shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    with open(log, "r+b") as out:
        out.truncate(0)
