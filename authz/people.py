"""People within parties: accounts, roles, sign-in, TOTP and personal API tokens.

A party (an organisation) keeps its own token as a service account; the people who act for
it each have an account with roles within the party. Whatever a person does through the API
names that person on the ledger (``Ctx.signed_in``), so the "authorizing operator" of a run
is the approver who decided, not the organisation.

Passwords: Argon2id (RFC 9106) through argon2-cffi, with its default (second recommended)
parameters. TOTP: RFC 6238 through pyotp, a code used once accepted only once. Personal
tokens are shaped and stored like every other token (:mod:`authz.parties`): ``psn_<id>.<secret>``,
SHA-256 of the secret stored, compared in constant time, optionally expiring.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import defer

from authz import validate as v
from authz import web_sessions
from authz.context import Ctx
from authz.models import Accreditation, Party, Person, new_id
from authz.specs import ACCREDITATION_SPEC as ACCREDITATION_SPEC
from authz.specs import IDENTITY_SPEC as IDENTITY_SPEC
from authz.specs import MAX_PASSWORD as MAX_PASSWORD
from authz.specs import MAX_TOKEN_DAYS as MAX_TOKEN_DAYS
from authz.specs import MIN_PASSWORD as MIN_PASSWORD
from authz.specs import PERSON_SPEC as PERSON_SPEC
from authz.specs import SIGN_IN_SPEC as SIGN_IN_SPEC
from authz.specs import PersonRole as PersonRole
from authz.tokens import digest, issue
from compute.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated

#: The roles a person may hold, by the role of their party.
ROLES_BY_PARTY: dict[str, frozenset[PersonRole]] = {
    "provider": frozenset({PersonRole.APPROVER, PersonRole.OUTPUT_CHECKER,
                           PersonRole.DATASET_STEWARD}),
    "requester": frozenset({PersonRole.ANALYST}),
    "regulator": frozenset({PersonRole.AUDITOR}),
    "admin": frozenset({PersonRole.ADMIN}),
}

_hasher = PasswordHasher()
# Verified against when no account matches, so a wrong email costs as long as a wrong
# password and sign-in timing does not reveal which emails have accounts.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class Issued:
    id: str
    token: str
    expires_at: datetime | None


def normal_email(email: str) -> str:
    return email.strip().lower()


def create_person(ctx: Ctx, actor: Party, party_id: str, body: object) -> Person:
    """The operator adds a person to any party; a party's service account to its own."""
    data = v.parse(body, PERSON_SPEC)
    party = ctx.session.get(Party, party_id)
    if party is None or (actor.role != "admin" and actor.id != party_id):
        raise NotFound("no such party")
    if not party.active:
        raise Conflict("the party is deactivated")
    allowed = ROLES_BY_PARTY[party.role]
    for i, role in enumerate(data["roles"]):
        if role not in allowed:
            raise InvalidInput(f"roles[{i}]", f"a {party.role}'s people may hold only "
                                              f"{', '.join(sorted(allowed))}")
    email = normal_email(data["email"])
    if ctx.session.scalar(select(Person.id).where(func.lower(Person.email) == email)):
        raise Conflict("a person with this email already exists")
    person = Person(id=new_id("psn"), party_id=party.id, name=data["name"], email=email,
                    roles=sorted(data["roles"]))
    if data["password"] is not None:
        person.password_hash = _hasher.hash(data["password"])
    ctx.session.add(person)
    ctx.session.flush()
    # Names and emails stay in the controller's table, not in the append-only ledger:
    # the ledger names people by their pseudonymous id only.
    ctx.record("person.created", actor.id, {"person_id": person.id, "party_id": party.id,
                                            "roles": person.roles})
    return person


def get_person(ctx: Ctx, actor: Party, person_id: str) -> Person:
    person = ctx.session.get(Person, person_id)
    if person is None or (actor.role != "admin" and actor.id != person.party_id):
        raise NotFound("no such person")
    return person


def people_of(ctx: Ctx, party_id: str) -> list[Person]:
    return list(ctx.session.scalars(select(Person).where(Person.party_id == party_id)
                                    .order_by(Person.created_at, Person.id)))


def set_roles(ctx: Ctx, actor: Party, person: Person, roles: list[str]) -> None:
    party = ctx.session.get(Party, person.party_id)
    assert party is not None
    checked = v.parse({"roles": roles}, [PERSON_SPEC[2]])["roles"]
    for i, role in enumerate(checked):
        if role not in ROLES_BY_PARTY[party.role]:
            raise InvalidInput(f"roles[{i}]", f"a {party.role}'s people may hold only "
                                              f"{', '.join(sorted(ROLES_BY_PARTY[party.role]))}")
    person.roles = sorted(checked)
    ctx.record("person.roles_changed", actor.id, {"person_id": person.id,
                                                  "party_id": person.party_id,
                                                  "roles": person.roles})


def deactivate_person(ctx: Ctx, actor: Party, person: Person) -> None:
    """Locked out at commit: password, TOTP and personal token stop working at once."""
    if not person.active:
        raise Conflict("person already deactivated")
    person.active = False
    person.token_hash = None
    # Refused at once by the live check (web_sessions.resolve); the rows go too, so no
    # later change to the person's row can bring a session back.
    web_sessions.end_all(ctx.session, person.id)
    ctx.record("person.deactivated", actor.id, {"person_id": person.id,
                                                "party_id": person.party_id})


def set_password(ctx: Ctx, person: Person, current: str | None, new: str) -> None:
    """A person changes their own password (the current one is required once set)."""
    if person.password_hash is not None and not _verify(person.password_hash, current or ""):
        raise Unauthenticated("the current password is wrong")
    v.parse({"password": new}, [PERSON_SPEC[3]])
    person.password_hash = _hasher.hash(new)
    # A browser signed in with the old password (perhaps the reason for the change) is
    # signed out: every web session of the person ends.
    web_sessions.end_all(ctx.session, person.id)
    ctx.record("person.password_changed", person.id, {"person_id": person.id})


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _totp_ok(person: Person, code: str | None, now: datetime) -> bool:
    """RFC 6238 with one step of clock drift either way; each step's code works once."""
    if person.totp_secret is None or code is None:
        return False
    totp = pyotp.TOTP(person.totp_secret)
    t = now.timestamp()
    for drift in (0, -1, 1):
        step = int(t // totp.interval) + drift
        if hmac.compare_digest(totp.generate_otp(step), code):
            if person.totp_last_step is not None and step <= person.totp_last_step:
                return False  # replayed (RFC 6238 §5.2)
            person.totp_last_step = step
            return True
    return False


def check_credentials(ctx: Ctx, email: str, password: str, totp: str | None) -> Person:
    """The person these credentials name: password, and TOTP when enrolled.

    Every failure is the same 401, so an answer does not tell which part was wrong. Used
    by API sign-in (a token) and web sign-in (a server-side session) alike.
    """
    person = ctx.session.scalar(select(Person).where(
        func.lower(Person.email) == normal_email(email)).with_for_update(key_share=True))
    stored = person.password_hash if person is not None and person.password_hash else None
    ok = _verify(stored or _DUMMY_HASH, password) and stored is not None
    if person is None or not ok or not person.active or not party_active(ctx, person):
        raise Unauthenticated("sign-in failed: wrong email, password or code")
    if person.totp_enabled and not _totp_ok(person, totp, ctx.now()):
        raise Unauthenticated("sign-in failed: wrong email, password or code")
    return person


def sign_in(ctx: Ctx, body: object) -> tuple[Person, Issued]:
    """Email, password and (when enrolled) a TOTP code → a fresh personal API token."""
    data = v.parse(body, SIGN_IN_SPEC)
    person = check_credentials(ctx, data["email"], data["password"], data["totp"])
    issued = issue_token(ctx, person, data["token_days"])
    ctx.record("person.signed_in", person.id, {"person_id": person.id,
                                               "party_id": person.party_id})
    return person, issued


def issue_token(ctx: Ctx, person: Person, days: int | None) -> Issued:
    """A new personal API token (the previous one stops working at commit)."""
    token, hashed = issue(person.id)
    person.token_hash = hashed
    person.token_expires_at = ctx.now() + timedelta(days=days) if days else None
    return Issued(person.id, token, person.token_expires_at)


def start_totp(ctx: Ctx, person: Person) -> str:
    """A new secret, shown once as an otpauth:// URI; active after :func:`confirm_totp`."""
    if person.totp_enabled:
        raise Conflict("TOTP is already enabled; ask the operator to reset it")
    person.totp_secret = pyotp.random_base32()
    return pyotp.TOTP(person.totp_secret).provisioning_uri(name=person.email,
                                                           issuer_name="data-sandbox")


def confirm_totp(ctx: Ctx, person: Person, code: str) -> None:
    code = v.parse({"totp": code}, [SIGN_IN_SPEC[2]])["totp"]
    if person.totp_enabled or person.totp_secret is None:
        raise Conflict("start TOTP enrolment first")
    if not _totp_ok(person, code, ctx.now()):
        raise InvalidInput("totp", "does not match the enrolled secret; check the device clock")
    person.totp_enabled = True
    ctx.record("person.totp_enabled", person.id, {"person_id": person.id})


@functools.cache
def _person_with_party() -> Select[tuple[Person, Party]]:
    # Built once: every authenticated request runs it, and SQLAlchemy keeps a statement's
    # cache key with the statement object.
    return (select(Person, Party).join(Party, Party.id == Person.party_id)
            .where(Person.id == bindparam("person_id")).options(defer(Person.totp_secret)))


def authenticate(ctx: Ctx, person_id: str, secret: str) -> tuple[Person, Party]:
    """The person whose token this is, and their party, checked against the database on
    every request (a deactivation or a new token counts at once), in one statement. The
    TOTP secret is not opened: a request with a token never needs it."""
    row = ctx.session.execute(_person_with_party(), {"person_id": person_id}).first()
    person, party = (row[0], row[1]) if row is not None else (None, None)
    if person is None or party is None:
        refuse_unless_valid(ctx, secret, None, False, False, None)
        raise AssertionError("unreachable")
    refuse_unless_valid(ctx, secret, person.token_hash, person.active, party.active,
                        person.token_expires_at)
    return person, party


def refuse_unless_valid(ctx: Ctx, secret: str, stored: str | None, person_active: bool,
                        party_active: bool, expires_at: datetime | None) -> None:
    """The one rule for a personal token (:func:`authenticate` and
    :func:`authz.checked.check_person_token`): its digest matches, the person and their
    party are active, and it has not expired. ``stored`` None: no such person, or no
    token (compared anyway, so timing does not reveal which ids exist)."""
    ok = hmac.compare_digest(stored or "0" * 64, digest(secret))
    if stored is None or not ok or not person_active or not party_active:
        raise Unauthenticated("invalid token")
    if expires_at is not None and expires_at <= ctx.now():
        raise Unauthenticated(f"token expired at {expires_at.isoformat()}; "
                              "sign in again (sandbox login)")


def party_active(ctx: Ctx, person: Person) -> bool:
    party = ctx.session.get(Party, person.party_id)
    return party is not None and party.active


def record_accreditation(ctx: Ctx, actor: Party, person: Person, body: object) -> None:
    """The operator records training a person completed (SATRE: accredited researchers)."""
    data = v.parse(body, ACCREDITATION_SPEC)
    if data["expires_at"] <= data["awarded_at"]:
        raise InvalidInput("expires_at", "must be after awarded_at")
    person.accreditations.append(Accreditation(
        kind=data["kind"], awarded_at=data["awarded_at"], expires_at=data["expires_at"],
        recorded_by=ctx.who(actor.id)))
    ctx.record("person.accredited", actor.id, {
        "person_id": person.id, "kind": data["kind"],
        "expires_at": data["expires_at"].isoformat()})


def record_identity(ctx: Ctx, actor: Party, person: Person, body: object) -> None:
    """The operator records that it verified who the person is, and how."""
    method = v.parse(body, IDENTITY_SPEC)["method"]
    person.identity_method, person.identity_verified_at = method, ctx.now()
    ctx.record("person.identity_verified", actor.id, {"person_id": person.id,
                                                      "method": method})


def require_accredited(ctx: Ctx) -> None:
    """The signed-in person (if any) must be identified and hold a current accreditation;
    the refusal says which is missing and what to do."""
    if ctx.signed_in is None or not ctx.accreditation_required:
        return
    person = ctx.session.get(Person, ctx.signed_in.person_id)
    assert person is not None
    if person.identity_verified_at is None:
        raise Forbidden("your identity is not verified: ask the operator to verify it "
                        f"(POST /people/{person.id}/identity)")
    now = ctx.now()
    if not any(a.expires_at > now for a in person.accreditations):
        lapsed = max((a.expires_at for a in person.accreditations), default=None)
        raise Forbidden(
            (f"your accreditation lapsed on {lapsed.date().isoformat()}" if lapsed else
             "you hold no accreditation") + ": complete the training and ask the operator "
            f"to record it (POST /people/{person.id}/accreditations)")


def require_named(ctx: Ctx, permit_id: str, named: list[str]) -> None:
    """Only the people a permit names use it; a permit naming nobody is its requester's
    service account's alone."""
    who = ctx.signed_in.person_id if ctx.signed_in else None
    if who is None:
        if named:
            raise Forbidden(f"permit {permit_id} names the people who may use it: sign in "
                            "as one of them")
        return
    if who not in named:
        raise Forbidden(f"you are not named on permit {permit_id}: ask for access naming "
                        "you (POST /requests with \"people\")")
    require_accredited(ctx)


class PersonFields(Protocol):
    """What :func:`person_json` shows of a person: the ORM row, or a checked copy
    (authz.checked.CheckedPerson)."""

    @property
    def id(self) -> str: ...
    @property
    def party_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def roles(self) -> list[Any]: ...
    @property
    def active(self) -> bool: ...
    @property
    def totp_enabled(self) -> bool: ...
    @property
    def token_expires_at(self) -> datetime | None: ...
    @property
    def identity_verified_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


class AccreditationFields(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def awarded_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...


def person_json(person: Person) -> dict[str, object]:
    return fields_json(person, person.accreditations)


def fields_json(person: PersonFields, accreditations: Iterable[AccreditationFields]
                ) -> dict[str, object]:
    return {"id": person.id, "party_id": person.party_id, "name": person.name,
            "email": person.email, "roles": person.roles, "active": person.active,
            "totp_enabled": person.totp_enabled,
            "token_expires_at": person.token_expires_at.isoformat()
            if person.token_expires_at else None,
            "identity_verified_at": person.identity_verified_at.isoformat()
            if person.identity_verified_at else None,
            "accreditations": [{"kind": a.kind, "awarded_at": a.awarded_at.isoformat(),
                                "expires_at": a.expires_at.isoformat()}
                               for a in accreditations],
            "created_at": person.created_at.isoformat()}
