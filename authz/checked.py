"""A personal token checked for a read: plain columns, not ORM rows.

The most frequent requests are reads with a person's token (``GET /me``, a job list, a
job polled until it ends, a ledger page). They need the person's roles and their party's
id and role, which one statement joining two primary-key lookups gives; loading the rows
as ORM objects (identity map, instances, attribute events) cost more than the statement
itself. The checks are the same as :func:`authz.people.authenticate`'s, on every request
and against the database (:func:`authz.people.refuse_unless_valid`): a deactivated
person or party, a new token or an expired one is refused at once. A view that needs the
rows themselves loads them then (``sandbox.auth.party()``, ``person()``) and checks them
active again.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select

from authz.context import Ctx
from authz.models import Accreditation, Party, Person
from authz.people import refuse_unless_valid


@dataclass(frozen=True, slots=True)
class CheckedParty:
    """The party a checked person acts for, as the authorization matrix sees it."""

    id: str
    name: str
    role: str
    code: str | None


@dataclass(frozen=True, slots=True)
class CheckedPerson:
    """A person whose token was checked in this request (never kept beyond it): what
    :func:`authz.people.fields_json` shows, no secret (password, TOTP, token digest)."""

    id: str
    party_id: str
    name: str
    email: str
    roles: list[Any]
    active: bool
    totp_enabled: bool
    token_expires_at: datetime | None
    identity_verified_at: datetime | None
    created_at: datetime
    party: CheckedParty
    #: (kind, awarded_at, expires_at), soonest to expire first, when asked for.
    accreditations: tuple[Any, ...] | None = None


_people = Person.__table__
_parties = Party.__table__
_accreditations = Accreditation.__table__
_SHOWN = ("id", "party_id", "name", "email", "roles", "active", "totp_enabled",
          "token_expires_at", "identity_verified_at", "created_at")


@functools.cache
def _token_check(with_accreditations: bool) -> Select[Any]:
    # Built once each: SQLAlchemy keeps a statement's compiled form under its cache key.
    stmt = (select(*(_people.c[n] for n in _SHOWN), _people.c.token_hash,
                   _parties.c.name.label("party_name"), _parties.c.role.label("party_role"),
                   _parties.c.code.label("party_code"),
                   _parties.c.active.label("party_active"))
            .join(_parties, _parties.c.id == _people.c.party_id)
            .where(_people.c.id == bindparam("person_id")))
    if not with_accreditations:
        return stmt
    # One row per accreditation (one with NULLs for none), in the ORM relationship's order.
    a = _accreditations
    return (stmt.add_columns(a.c.id.label("a_id"), a.c.kind.label("a_kind"),
                             a.c.awarded_at.label("a_awarded_at"),
                             a.c.expires_at.label("a_expires_at"))
            .outerjoin(a, a.c.person_id == _people.c.id).order_by(a.c.expires_at))


@dataclass(frozen=True, slots=True)
class _Accreditation:
    kind: str
    awarded_at: datetime
    expires_at: datetime


@functools.cache
def _accreditations_of() -> Select[Any]:
    return (select(_accreditations.c.kind, _accreditations.c.awarded_at,
                   _accreditations.c.expires_at)
            .where(_accreditations.c.person_id == bindparam("person_id"))
            .order_by(_accreditations.c.expires_at))


def check_person_token(ctx: Ctx, person_id: str, secret: str,
                       with_accreditations: bool = False) -> CheckedPerson:
    """The person whose token this is and their party, checked as
    :func:`authz.people.authenticate` checks them, in one statement on the request's
    connection; with their accreditations too when asked (``GET /me`` shows them)."""
    rows = ctx.session.connection().execute(_token_check(with_accreditations),
                                            {"person_id": person_id}).all()
    row = rows[0] if rows else None
    if row is None:
        refuse_unless_valid(ctx, secret, None, False, False, None)
        raise AssertionError("refused above")
    refuse_unless_valid(ctx, secret, row.token_hash, row.active, row.party_active,
                        row.token_expires_at)
    return CheckedPerson(
        id=row.id, party_id=row.party_id, name=row.name, email=row.email, roles=row.roles,
        active=row.active, totp_enabled=row.totp_enabled,
        token_expires_at=row.token_expires_at, identity_verified_at=row.identity_verified_at,
        created_at=row.created_at,
        party=CheckedParty(row.party_id, row.party_name, row.party_role, row.party_code),
        accreditations=tuple(_Accreditation(r.a_kind, r.a_awarded_at, r.a_expires_at)
                             for r in rows if r.a_id is not None)
        if with_accreditations else None)


def accreditations(ctx: Ctx, checked: CheckedPerson) -> Sequence[Any]:
    """A checked person's accreditations (kind, awarded_at, expires_at), soonest to expire
    first, as the ORM relationship orders them: read with the token when it was checked
    for ``GET /me``, else now."""
    if checked.accreditations is not None:
        return checked.accreditations
    return list(ctx.session.connection().execute(_accreditations_of(),
                                                 {"person_id": checked.id}))
