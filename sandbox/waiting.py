"""Bounded waiting on database state, for long polls. Each probe is its own transaction."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from flask import request
from sqlalchemy.orm import Session, sessionmaker

from compute.errors import InvalidInput

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

    def generation(self) -> int:
        """How many notifications so far: taken before a probe, and given to :meth:`wait`,
        so that a commit between the probe and the wait still ends the wait at once."""
        with self._cond:
            return self._generation

    def wait(self, timeout_s: float, seen: int | None = None) -> None:
        with self._cond:
            since = self._generation if seen is None else seen
            self._cond.wait_for(lambda: self._generation != since, timeout_s)


def wait_seconds(cap_s: float) -> float:
    """A long poll's ``wait`` query parameter (seconds, default 0), capped at ``cap_s``."""
    try:
        wait = float(request.args.get("wait", "0"))
    except ValueError:
        raise InvalidInput("wait", "must be a number of seconds") from None
    if not math.isfinite(wait):
        raise InvalidInput("wait", "must be a finite number of seconds")
    return max(0.0, min(wait, cap_s))


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
