"""Bounded waiting on database state, for long polls. Each probe is its own transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from sandbox import db

T = TypeVar("T")


def wait_until(load: Callable[[Session], T | None], done: Callable[[T], bool],
               timeout_s: float, interval_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        with db.ext()["sessions"]() as s:
            value = load(s)
            # Detach before ending the transaction, so the loaded state stays readable.
            s.expunge_all()
            s.rollback()
        assert value is not None
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)
