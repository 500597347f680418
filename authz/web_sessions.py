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

from sqlalchemy import ForeignKey, String, bindparam, delete, select
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


@dataclass(frozen=True)
class LivePerson:
    """The signed-in person as pages show and authorize them (no ORM row: loading one
    would also unseal its TOTP secret, on every page)."""

    id: str
    name: str
    roles: list[str]
    party_id: str


@dataclass(frozen=True)
class LiveParty:
    id: str
    name: str
    role: str


@dataclass(frozen=True)
class Live:
    """A session found live: not ended, expired or idle, its person and party active."""

    id: str
    csrf_token: str
    last_seen_at: datetime
    person: LivePerson
    party: LiveParty


_SESSIONS = WebSession.__table__
_PEOPLE = Person.__table__
_PARTIES = Party.__table__
#: One primary-key lookup with the columns a page needs, joined to the person and party.
_LIVE = (select(_SESSIONS.c.id, _SESSIONS.c.csrf_token, _SESSIONS.c.expires_at,
                _SESSIONS.c.last_seen_at, _PEOPLE.c.id.label("person_id"),
                _PEOPLE.c.name.label("person_name"), _PEOPLE.c.roles,
                _PEOPLE.c.active.label("person_active"), _PARTIES.c.id.label("party_id"),
                _PARTIES.c.name.label("party_name"), _PARTIES.c.role,
                _PARTIES.c.active.label("party_active"))
         .select_from(_SESSIONS.join(_PEOPLE, _PEOPLE.c.id == _SESSIONS.c.person_id)
                      .join(_PARTIES, _PARTIES.c.id == _PEOPLE.c.party_id))
         .where(_SESSIONS.c.id == bindparam("sid")))


def resolve(session: Session, secret: str, now: datetime, idle: timedelta) -> Live | None:
    """The live session for a cookie's secret; None if it has ended (fail closed: an
    expired, idle or unknown session, an inactive person or party are all None).

    One query on every page request, through the request's connection as plain columns:
    the session, its person and their party."""
    row = session.connection().execute(_LIVE, {"sid": session_id(secret)}).one_or_none()
    if row is None:
        return None
    if row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if not row.person_active or not row.party_active:
        return None
    return Live(row.id, row.csrf_token, row.last_seen_at,
                LivePerson(row.person_id, row.person_name, list(row.roles), row.party_id),
                LiveParty(row.party_id, row.party_name, row.role))


def needs_touch(ws: Live, now: datetime) -> bool:
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
