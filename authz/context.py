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


#: How services lock a row they are about to change (PostgreSQL ``FOR NO KEY UPDATE``;
#: SQLite locks the whole database instead). Plain ``FOR UPDATE`` also conflicts with the
#: ``FOR KEY SHARE`` lock PostgreSQL's foreign-key checks take on the referenced row, and
#: such a check runs on any update of a row inserted or updated earlier in the same
#: transaction, even when no key changes. A dispatch holding its permit ``FOR UPDATE`` and
#: waiting for the ledger head, against a report holding the ledger head and checking its
#: job's key to that permit, deadlocked. No service changes a locked row's key or deletes
#: it, so the weaker lock serializes every update the stronger one did.
ROW_LOCK: dict[str, Any] = {"key_share": True}


def _now() -> datetime:
    return datetime.now(UTC)


class PartyRef(Protocol):
    """A party as visibility rules see it: the ORM row, or a checked copy
    (authz.checked.CheckedParty)."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class SignedIn:
    """The person acting, and the party they act for."""

    person_id: str
    party_id: str


@dataclass
class Ctx:
    session: Session
    log: EventLog
    authorizing_system: str = "data-sandbox"
    now: Callable[[], datetime] = field(default=_now)
    signed_in: SignedIn | None = None
    # People must hold a current accreditation to request, submit and review.
    accreditation_required: bool = True

    def who(self, actor: str) -> str:
        """Who did what ``actor`` (a party id) did: the signed-in person acting for it, or
        the party itself (its service account, or "system")."""
        if self.signed_in is not None and actor == self.signed_in.party_id:
            return self.signed_in.person_id
        return actor

    def record(self, kind: str, actor: str, body: Mapping[str, Any]) -> int:
        """Append an entry. Done by a person for their party, it names the person as its
        actor and their party as ``acting_for`` (people are named by id only: the ledger is
        append-only, so it holds no name or email)."""
        who = self.who(actor)
        if who != actor:
            body = {**body, "acting_for": actor}
        return self.log.append(self.session, kind, who, body).index
