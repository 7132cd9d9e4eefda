"""`tidemark ingest run` with its output not a terminal (`tidemark up`'s ingest.log, a service's
journal) logs where a snapshot stands while it runs: before, nothing came between the start and
each table's end (71 s of silence for the 10 M rows of `pgbench -s 100` under `tidemark up`)."""

from __future__ import annotations

import io
import logging
import re

from rich.console import Console

from ingestion import catch_up
from ingestion.progress import SnapshotProgress
from tests.ingestion.conftest import Pair
from tidemark.cli.progress import SnapshotDisplay, SnapshotLog, describe, snapshot_callback


def test_a_snapshot_logs_its_progress_when_not_on_a_terminal(pair: Pair, caplog) -> None:
    pair.src_exec("create table big (id int primary key, v text)",
                  "insert into big select g, md5(g::text) from generate_series(1, 200000) g",
                  "analyze big")
    callback = snapshot_callback(Console(file=io.StringIO()))  # a file: not a terminal
    assert isinstance(callback, SnapshotLog)
    callback.every_s = 0.0  # every report (10 s in use)
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source, timeout_s=120, on_progress=callback)
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith(f"snapshot of {pair.source}: ")]
    pattern = re.compile(rf"snapshot of {pair.source}: [\d,]+/[\d,]+ rows, [01]/1 tables, "
                         r"[\d,]+ rows/s, (ETA \d+:\d\d|ETA \?|all rows in)")
    assert lines and all(pattern.match(line) for line in lines), lines
    assert any("copying big" in line for line in lines), lines


def test_lines_say_what_is_left_and_come_every_interval(caplog) -> None:
    p = SnapshotProgress("appa", tables_total=5, tables_done=4, rows=10_204_100,
                         rows_estimate=10_204_100, current=("pgbench_accounts",),
                         finishing=("pgbench_accounts",))
    assert re.fullmatch(r"snapshot of appa: 10,204,100/10,204,100 rows, 4/5 tables, [\d,]+"
                        r" rows/s, all rows in; finishing pgbench_accounts \(checks, index"
                        r" builds\)", describe(p)), describe(p)
    log = SnapshotLog(every_s=3600.0)
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    log(p)  # younger than the interval: nothing yet
    p.started -= 7200.0
    log(p)
    log(p)  # the second within the interval: nothing
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 1 and records[0].startswith("snapshot of appa: "), records
    assert isinstance(snapshot_callback(Console(file=io.StringIO(), force_terminal=True)),
                      SnapshotDisplay)


def test_tidemark_up_says_where_a_registered_sources_snapshot_stands(pair: Pair) -> None:
    # `tidemark up` said nothing while the first snapshot of a registered source ran after
    # "Tidemark is up" (71 s for the 10 M rows of pgbench -s 100): it now looks every 10 s
    from tidemark.stack.snapshots import SnapshotWatch

    pair.src_exec("create table big (id int primary key, v text)",
                  "insert into big select g, md5(g::text) from generate_series(1, 200000) g",
                  "analyze big")
    said: list[str] = []
    watch = SnapshotWatch(pair.land, said.append, every_s=0.0)
    catch_up(pair.src, pair.land, pair.source, timeout_s=120,
             on_progress=lambda report: watch.poll())
    watch.poll()  # committed: the end is said once (its time and rate were negative:
    # the end was stamped with the landing transaction's now(), older than its start)
    watch.poll()
    running = [line for line in said if "done after" not in line]
    assert running and all(re.match(rf"snapshot of {pair.source}: [\d,]+/[\d,]+ rows, "
                                     r"[01]/1 tables, [\d,]+ rows/s, (ETA|finishing)", line)
                           for line in running), said
    assert re.fullmatch(rf"snapshot of {pair.source}: 200,000/[\d,]+ rows, 1/1 tables, "
                        r"[\d,]+ rows/s: done after [\d.,]+ s", said[-1]), said
    assert sum("done after" in line for line in said) == 1, said
