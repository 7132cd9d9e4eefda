"""The contracts watcher reloads a folder when a file changes, and keeps the last good contracts
while the folder does not load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from contracts.loader import PACKAGE_ROOT
from contracts.watch import ContractWatcher


def test_reload_on_change(tmp_path: Path) -> None:
    root = tmp_path / "contracts"
    shutil.copytree(PACKAGE_ROOT / "shop", root / "shop")
    watcher = ContractWatcher(root, interval_s=0)
    assert watcher.poll() is None
    path = root / "shop" / "stores.yml"
    text = path.read_text()
    path.write_text(text.replace("version: 1", "version: 2", 1))
    os.utime(path, ns=(1, 1))
    fresh = watcher.poll()
    assert fresh is not None and fresh.table("shop", "stores").version == 2
    assert watcher.poll() is None
    path.write_text("version: [")
    assert watcher.poll() is None, "a broken folder keeps the previous contracts"
    path.write_text(text)
    assert watcher.poll().table("shop", "stores").version == 1
    (root / "shop" / "stores.yml").unlink()
    assert ("shop", "stores") not in {(c.source, c.name) for c in watcher.poll()}
