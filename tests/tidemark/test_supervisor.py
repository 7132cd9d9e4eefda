"""Supervised children of ``tidemark up``: logs in files, crashes noticed, clean group stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tidemark.stack.supervisor import Supervisor, wait_for

PY = sys.executable


def test_child_output_goes_to_its_log(tmp_path: Path) -> None:
    sup = Supervisor(env=dict(os.environ))
    child = sup.start("hello", [PY, "-c", "print('hello from the child')"], tmp_path / "h.log")
    assert wait_for(lambda: child.process.poll() is not None, 30)
    assert "hello from the child" in (tmp_path / "h.log").read_text()


def test_a_crashed_child_is_reported(tmp_path: Path) -> None:
    sup = Supervisor(env=dict(os.environ))
    sup.start("steady", [PY, "-c", "import time; time.sleep(60)"], tmp_path / "s.log")
    sup.start("crasher", [PY, "-c", "raise SystemExit(3)"], tmp_path / "c.log")
    try:
        assert wait_for(lambda: bool(sup.exited()), 30)
        assert [(c.name, c.process.returncode) for c in sup.exited()] == [("crasher", 3)]
    finally:
        sup.stop_all(grace_s=5)


def test_stop_all_terms_then_kills_the_stubborn(tmp_path: Path) -> None:
    sup = Supervisor(env=dict(os.environ))
    polite = sup.start("polite", [PY, "-c", "import time; time.sleep(60)"], tmp_path / "p.log")
    stubborn = sup.start("stubborn", [PY, "-c", (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)")], tmp_path / "st.log")
    assert wait_for(lambda: "ready" in (tmp_path / "st.log").read_text(), 30)
    started = time.monotonic()
    codes = sup.stop_all(grace_s=1)
    assert codes == {"stubborn": -signal.SIGKILL, "polite": -signal.SIGTERM}
    assert time.monotonic() - started < 30
    assert polite.process.poll() is not None and stubborn.process.poll() is not None


def test_children_have_their_own_process_group(tmp_path: Path) -> None:
    sup = Supervisor(env=dict(os.environ))
    child = sup.start("sleeper", [PY, "-c", "import time; time.sleep(60)"], tmp_path / "g.log")
    try:
        # Ctrl-C in the terminal goes to tidemark up's group only, not straight to the children.
        assert os.getpgid(child.process.pid) != os.getpgid(0)
    finally:
        sup.stop_all(grace_s=5)


def test_wait_for_gives_up_after_the_timeout() -> None:
    started = time.monotonic()
    assert wait_for(lambda: False, 0.3, interval_s=0.05) is False
    assert 0.3 <= time.monotonic() - started < 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_stop_when_tidemark_up_is_killed(tmp_path: Path) -> None:
    # `kill -9` of tidemark up (or the OOM killer) used to leave its children running as
    # orphans: the ingestion held the slot and the webserver the UI's port, so the next
    # `tidemark up` was refused by each in turn until the user found and killed them all.
    parent = subprocess.Popen([PY, "-c", (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from tidemark.stack.supervisor import Supervisor\n"
        "sup = Supervisor(env=dict(os.environ))\n"
        f"child = sup.start('sleeper', [sys.executable, '-c', 'import time; time.sleep(120)'],"
        f" Path({str(tmp_path / 'c.log')!r}))\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        child_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(child_pid)
        parent.kill()
        parent.wait(10)
        assert wait_for(lambda: not _alive(child_pid), 15), "the child outlived tidemark up"
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)


def test_restart_starts_the_same_command_again(tmp_path: Path) -> None:
    sup = Supervisor(env=dict(os.environ))
    child = sup.start("once", [PY, "-c", "print('ran', flush=True)"], tmp_path / "o.log")
    assert wait_for(lambda: bool(sup.exited()), 30)
    again = sup.restart(child)
    assert wait_for(lambda: again.process.poll() is not None, 30)
    assert (tmp_path / "o.log").read_text().count("ran") == 2
    assert sup.children == [again]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
