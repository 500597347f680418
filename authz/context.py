"""What a service call needs: the caller's transaction, the event log, a clock.

Services never commit; the caller (an HTTP view, a CLI command) commits once, so a state
change and the ledger entry recording it are written together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session


class AppendResultLike(Protocol):
    @property
    def index(self) -> int: ...


class EventLog(Protocol):
    """The part of ``ledger.TransparencyLog`` the services use."""

    def append(
        self, session: Session, kind: str, actor: str, body: Mapping[str, Any]
    ) -> AppendResultLike: ...


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Ctx:
    session: Session
    log: EventLog
    authorizing_system: str = "data-sandbox"
    now: Callable[[], datetime] = field(default=_now)

    def record(self, kind: str, actor: str, body: Mapping[str, Any]) -> int:
        return self.log.append(self.session, kind, actor, body).index
