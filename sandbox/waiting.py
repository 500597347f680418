"""Bounded waiting on database state, for long polls. Each probe is its own transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


class WorkSignal:
    """Wakes long-polling agents in this process as soon as work is committed.

    Agents served by another controller process still find the work on their next
    database probe; the signal only removes the wait in between.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> None:
        with self._cond:
            seen = self._generation
            self._cond.wait_for(lambda: self._generation != seen, timeout_s)


def wait_until(readers: sessionmaker[Session], load: Callable[[Session], T | None],
               done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        with readers() as s:
            value = load(s)
            # Detach before ending the transaction, so the loaded state stays readable.
            s.expunge_all()
            s.rollback()
        assert value is not None
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)
