"""Claims of work kept in the agent's work root, so that a restarted agent takes its own
claims back instead of leaving their jobs to a dead process.

A claim (``POST /agent/tasks/next``) carries an idempotency key; the controller answers
the same key with the same dispatched job (authz/runs.py), so an answer lost on the wire
costs nothing. The key is written here before the claim is sent, and removed once the
claim needs no taking back: it brought no task, or its task has been handled (a run's
report goes through the outbox, which survives a restart on its own). An agent killed
between the controller's answer and that point finds the key when it starts again and
claims with it first: a job still dispatched to it comes back at once, instead of waiting
for its lease to expire (the run timeout and a margin: minutes). A key whose job has
started meanwhile brings nothing back: the controller dispatches afresh with it, and the
started job is the reconciliation's (Agent.reconcile) or its lease's.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from pathlib import Path

KEY_RX = re.compile(r"[0-9a-f]{32}")


class ClaimBook:
    """The claims one agent process has sent and not yet settled, one file per key."""

    def __init__(self, work_root: Path) -> None:
        self.dir = work_root / ".claims"  # a dot name: reconciliation passes it by
        self._lock = threading.Lock()
        self._in_use: set[str] = set()
        self._left: list[str] | None = None

    def take(self) -> str:
        """A key to claim with: one a previous life of this agent left unsettled, else a
        new one, written down before it is used."""
        with self._lock:
            if self._left is None:
                self._left = self._leftovers()
            if self._left:
                key = self._left.pop()
            else:
                key = secrets.token_hex(16)
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.dir / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._in_use.add(key)
            return key

    def settle(self, key: str) -> None:
        """The claim needs no taking back any more."""
        with self._lock:
            self._in_use.discard(key)
            (self.dir / key).unlink(missing_ok=True)

    def _leftovers(self) -> list[str]:
        try:
            names = sorted(p.name for p in self.dir.iterdir())
        except FileNotFoundError:
            return []
        # Only names this book writes: anything else in the directory is not a claim.
        return [n for n in names if KEY_RX.fullmatch(n) and n not in self._in_use]
