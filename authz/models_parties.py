"""Who acts: parties, their people and accreditations, agents and their keys, and the
OpenID Connect accounts people sign in with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authz.models_base import AuthzBase, UTCDateTime, utcnow
from authz.sealed import SealedText


class Party(AuthzBase):
    __tablename__ = "parties"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # provider | requester | regulator | admin
    code: Mapped[str | None] = mapped_column(String(64), unique=True)  # provider/org code
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Person(AuthzBase):
    """A named person who acts for one party, with roles within it.

    The party's own token stays as its service account; a person signs in with a password
    (and TOTP when enrolled) and carries a personal API token. Decisions record the person.
    """

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    roles: Mapped[list[Any]] = mapped_column()  # authz.people.PersonRole values
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    totp_secret: Mapped[str | None] = mapped_column(SealedText(), default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last RFC 6238 time step whose code was accepted: a code is good once only.
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    token_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Identity verified by the operator (how, when): no personal document is stored.
    identity_method: Mapped[str | None] = mapped_column(String(200), default=None)
    identity_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    accreditations: Mapped[list[Accreditation]] = relationship(
        cascade="all, delete-orphan", order_by="Accreditation.expires_at")


class Accreditation(AuthzBase):
    """Training a person completed (e.g. safe researcher training), and until when it holds."""

    __tablename__ = "accreditations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    kind: Mapped[str] = mapped_column(String(200))
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(40))


class Agent(AuthzBase):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64))
    # Ed25519 public key (raw, hex) used to verify what the agent signs (HE submissions).
    public_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    providers: Mapped[list[AgentProvider]] = relationship(cascade="all, delete-orphan")
    # Health, for the operator (authz/agent_health.py): when it last polled for work, and
    # what it said of itself then (its container runtime, None for the engine's default;
    # its slots).
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    runtime: Mapped[str | None] = mapped_column(String(100), default=None)
    slots: Mapped[int | None] = mapped_column(Integer, default=None)


class AgentRetiredKey(AuthzBase):
    """A signing key an agent used before its current one, and when it was in use.

    Parts an agent signed while a key was current still verify under it after the key is
    replaced (authz/agent_keys.py); a part signed with it after it was retired does not.
    """

    __tablename__ = "agent_retired_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_by: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)


class AgentProvider(AuthzBase):
    """Which providers' domains an agent serves: it only ever receives their tasks."""

    __tablename__ = "agent_providers"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), primary_key=True)


class OidcIdentity(AuthzBase):
    """An account at an OpenID Connect provider, linked to one person.

    Linked at the person's first OIDC sign-in, when the provider vouched for the email the
    operator recorded for them; later sign-ins match on (issuer, subject) alone, so an email
    changed at the provider neither breaks the link nor moves it to someone else.
    """

    __tablename__ = "oidc_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))  # OIDC Core §2: at most 255 ASCII
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OidcLogin(AuthzBase):
    """An OIDC sign-in started and not yet finished: used once, then deleted.

    Kept in the database, not in a cookie, so any worker can finish what another started;
    the browser that started it holds a secret whose digest is stored here, so a callback
    URL replayed in another browser is refused (login CSRF).
    """

    __tablename__ = "oidc_logins"

    state_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_digest: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(200))
    code_verifier: Mapped[str] = mapped_column(String(200))
    token_days: Mapped[int | None] = mapped_column(Integer, default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
