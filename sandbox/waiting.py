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
from sandbox.wakeup import Channel, Wakeup

T = TypeVar("T")


class WorkSignal:
    """Wakes long polls as soon as work is committed: those of this process at once, and
    through ``hub`` (sandbox.wakeup) those of the other controller processes.

    A wake-up only ends a wait early: the waiter reads the database either way, and its
    periodic probes still find work whose wake-up was lost.
    """

    def __init__(self, channel: Channel = Channel.WORK, hub: Signals | None = None) -> None:
        self.channel = channel
        self._hub = hub
        self._cond = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        """After a commit: wake this process's waiters and the other processes'."""
        self.wake_local()
        if self._hub is not None:
            self._hub.publish(self.channel)

    def wake_local(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def generation(self) -> int:
        """How many notifications so far: taken before a probe, and given to :meth:`wait`,
        so that a commit between the probe and the wait still ends the wait at once."""
        if self._hub is not None:
            self._hub.listen()  # from before the first probe: no wake-up is missed
        with self._cond:
            return self._generation

    def wait(self, timeout_s: float, seen: int | None = None) -> None:
        if self._hub is not None:
            self._hub.listen()
        with self._cond:
            since = self._generation if seen is None else seen
            self._cond.wait_for(lambda: self._generation != since, timeout_s)


class Signals:
    """One app's long-poll signals, one per channel, and their wake-ups across processes.
    Listening starts with the first wait, so a process that never waits (a CLI command, a
    test's app) holds no listener."""

    def __init__(self, wakeup: Wakeup) -> None:
        self._wakeup = wakeup
        self.work = WorkSignal(Channel.WORK, self)
        self.joint = WorkSignal(Channel.JOINT, self)
        self._by_channel = {Channel.WORK: self.work, Channel.JOINT: self.joint}

    def listen(self) -> None:
        self._wakeup.listen(self._woken)

    def listening(self, timeout_s: float) -> bool:
        """Start listening; whether other processes' wake-ups now reach this one."""
        self.listen()
        return self._wakeup.listening(timeout_s)

    def _woken(self, channel: Channel) -> None:
        self._by_channel[channel].wake_local()

    def publish(self, channel: Channel) -> None:
        self._wakeup.publish(channel)

    def close(self) -> None:
        self._wakeup.close()


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
