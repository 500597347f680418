"""Server-side sessions of people signed in to the web UI.

The browser holds only a random 256-bit secret in an HttpOnly cookie; the table keeps its
SHA-256, so a copy of the database does not let anyone take over a session. A session ends
at sign-out, after ``idle`` without a request, at its absolute lifetime, or at once when its
person or their party is deactivated (checked on every request). Each session carries its
own CSRF token (the synchronizer-token pattern).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from authz.context import Ctx
from authz.models import AuthzBase, Party, Person, UTCDateTime, utcnow

#: Bytes of randomness in a session secret and a CSRF token.
SECRET_BYTES = 32
#: A request refreshes ``last_seen_at`` only when it is at least this old, so reading pages
#: does not write to the database on every request.
TOUCH_EVERY = timedelta(seconds=60)


class WebSession(AuthzBase):
    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the secret
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Started:
    secret: str  # for the cookie only; never stored
    session: WebSession


def session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start(ctx: Ctx, person: Person, lifetime: timedelta) -> Started:
    """A new session for ``person`` (who has just proved their credentials)."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    now = ctx.now()
    ws = WebSession(id=session_id(secret), person_id=person.id,
                    csrf_token=secrets.token_urlsafe(SECRET_BYTES), created_at=now,
                    last_seen_at=now, expires_at=now + lifetime)
    ctx.session.add(ws)
    return Started(secret, ws)


def resolve(session: Session, secret: str, now: datetime, idle: timedelta
            ) -> tuple[WebSession, Person] | None:
    """The live session and its person for a cookie's secret; None if it has ended.

    One query on every page request: the session, its person and their party together
    (the party stays in the session's identity map for the request's role checks)."""
    row = session.execute(
        select(WebSession, Person, Party)
        .join(Person, Person.id == WebSession.person_id)
        .join(Party, Party.id == Person.party_id)
        .where(WebSession.id == session_id(secret))).one_or_none()
    if row is None:
        return None
    ws, person, party = row
    if ws.expires_at <= now or ws.last_seen_at + idle <= now:
        return None
    if not person.active or not party.active:
        return None
    return ws, person


def needs_touch(ws: WebSession, now: datetime) -> bool:
    return now - ws.last_seen_at >= TOUCH_EVERY


def touch(session: Session, sid: str, now: datetime) -> None:
    """Record activity (in the caller's writable session; the caller commits)."""
    ws = session.get(WebSession, sid)
    if ws is not None:
        ws.last_seen_at = now


def end(session: Session, sid: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == sid))


def end_all(session: Session, person_id: str) -> None:
    """Sign a person out everywhere (password change, deactivation)."""
    session.execute(delete(WebSession).where(WebSession.person_id == person_id))
