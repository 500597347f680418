"""A worker exits when its master is gone, and only then, also when the master is pid 1
(the controller's container, where gunicorn's master is the container's first process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import os, types
from sandbox.server import _post_fork
_post_fork(types.SimpleNamespace(pid={master}), None)
print("serving")
"""


def run_child(master: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD.format(master=master)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def test_a_worker_whose_master_is_its_parent_serves() -> None:
    # The parent here is this test process, standing for a master that is (or is not) pid 1.
    child = run_child("os.getppid()")
    assert child.returncode == 0 and child.stdout.strip() == "serving", child.stderr


def test_a_worker_handed_to_another_parent_exits() -> None:
    child = run_child("os.getppid() + 1")
    assert child.returncode == 1 and child.stdout == ""
