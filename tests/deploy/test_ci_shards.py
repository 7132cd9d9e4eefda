"""CI's split of the suite (.ci/shards, .ci/shard-a): run by pytest's own collection, the two
shards of ``bash .ci/run`` hold every test of ``pytest`` exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

SHARDS = REPO / ".ci" / "shards"


def shard_args(name: str, shard_file: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``.ci/shards NAME`` (optionally on another list of paths)."""
    env = {**os.environ}
    if shard_file is not None:
        env["TIDEMARK_CI_SHARD_FILE"] = str(shard_file)
    return subprocess.run(["bash", str(SHARDS), name], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def under(paths: list[str]) -> tuple[str, ...]:
    """The node-id prefixes of the tests under ``paths``, each a directory or a test file."""
    return tuple(f"{path.rstrip('/')}{end}" for path in paths for end in ("/", "::"))


# Collects each argument list (JSON, argv 1) with pytest.main, one after the other in one
# interpreter; a line (argv 2 and pytest's exit code) ends each list's node ids.
COLLECT = """import json, sys
import pytest
for args in json.loads(sys.argv[1]):
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *args])
    print(sys.argv[2], int(code), flush=True)
"""
END = "=== tidemark collection ended:"


def collected(*runs: list[str]) -> list[set[str]]:
    """Node ids pytest collects from the repository root with each argument list of ``runs``.

    One Python process collects them in turn (the first as a fresh ``pytest``; the later ones
    find the test modules already imported, where a second ``pytest`` process imported them
    all again: ~7 s of CPU)."""
    result = subprocess.run(
        [sys.executable, "-c", COLLECT, json.dumps(list(runs)), END],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    outputs = result.stdout.split(END)
    codes = [part.split(None, 1)[0] for part in outputs[1:]]
    assert result.returncode == 0 and codes == ["0"] * len(runs), (
        result.stdout[-3000:] + result.stderr[-3000:])
    return [{line for line in out.splitlines() if "::" in line} for out in outputs[:-1]]


@pytest.mark.slow
def test_the_two_shards_hold_every_test_exactly_once() -> None:
    a, b = shard_args("a"), shard_args("b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    listed = under(a.stdout.split())
    # b as CI runs it, then the README's `pytest` (testpaths = tests)
    in_b, everything = collected(b.stdout.split(), [])
    # "a" is pytest on the listed paths: exactly the tests under them.
    in_a = {node for node in everything if node.startswith(listed)}
    assert in_a and in_b, (len(in_a), len(in_b))
    assert not {node for node in in_b if node.startswith(listed)}, "b runs a test of a"
    assert in_b <= everything, sorted(in_b - everything)[:10]
    assert in_a | in_b == everything, sorted(everything - in_a - in_b)[:10]


def test_a_listed_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    listed = tmp_path / "shard-a"
    listed.write_text("# a comment\ntests/e2e\ntests/no_such_directory\n")
    result = shard_args("a", listed)
    assert result.returncode == 2
    assert f"{listed} lists tests/no_such_directory, which does not exist" in result.stderr
    assert result.stdout == ""


def test_a_listed_file_holds_its_tests_only() -> None:
    prefixes = under(["tests/deploy", "tests/dbt_project/test_user_source.py"])
    assert "tests/deploy/test_compose.py::test_x".startswith(prefixes)
    assert "tests/dbt_project/test_user_source.py::test_x[1]".startswith(prefixes)
    assert not "tests/dbt_project/test_user_source_more.py::test_x".startswith(prefixes)
    assert not "tests/deployment/test_x.py::test_x".startswith(prefixes)


def test_b_ignores_each_path_of_a(tmp_path: Path) -> None:
    listed = tmp_path / "shard-a"
    listed.write_text("# comment\n\ntests/e2e  \ntests/tidemark\n")
    assert shard_args("a", listed).stdout.split() == ["tests/e2e", "tests/tidemark"]
    assert shard_args("b", listed).stdout.split() == [
        "tests", "--ignore", "tests/e2e", "--ignore", "tests/tidemark"]
    usage = shard_args("c", listed)
    assert usage.returncode == 2 and "usage: .ci/shards a|b" in usage.stderr
