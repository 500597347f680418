"""People within parties: accounts, sign-in, TOTP and personal tokens.

The operator (admin, or one of its people) manages the people of every party; a party's
own service account manages its own people. Other people manage only their own password,
TOTP and token, so nobody raises their own roles.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from authz import incidents, people
from authz import validate as v
from authz.models import Person
from authz.specs import PASSWORD_SPEC, ROLES_SPEC, TOKEN_SPEC, TOTP_SPEC
from compute.errors import Forbidden
from sandbox import auth, db

bp = Blueprint("people", __name__, url_prefix="/api/v1")


def _me() -> Person:
    who = auth.person()
    if who is None:
        raise Forbidden("sign in as a person (a service account has no password or TOTP)")
    return who


@bp.post("/parties/<party_id>/people")
@auth.roles("admin", "provider", "requester", "regulator", need=people.PersonRole.ADMIN)
def create(party_id: str) -> tuple[dict[str, Any], int]:
    person = people.create_person(db.ctx(), auth.party(), party_id, auth.body())
    db.commit()
    return people.person_json(person), 201


@bp.get("/parties/<party_id>/people")
@auth.roles("admin", "provider", "requester", "regulator")
def list_people(party_id: str) -> dict[str, Any]:
    p = auth.party()
    if p.role != "admin" and p.id != party_id:
        return {"people": []}
    return {"people": [people.person_json(x) for x in people.people_of(db.ctx(), party_id)]}


@bp.get("/people/<person_id>")
@auth.roles("admin", "provider", "requester", "regulator")
def get(person_id: str) -> dict[str, Any]:
    return people.person_json(people.get_person(db.ctx(), auth.party(), person_id))


@bp.post("/people/<person_id>/roles")
@auth.roles("admin", "provider", "requester", "regulator", need=people.PersonRole.ADMIN)
def set_roles(person_id: str) -> dict[str, Any]:
    person = people.get_person(db.ctx(), auth.party(), person_id)
    people.set_roles(db.ctx(), auth.party(), person, v.parse(auth.body(), ROLES_SPEC)["roles"])
    db.commit()
    return people.person_json(person)


@bp.post("/people/<person_id>/deactivate")
@auth.roles("admin", "provider", "requester", "regulator", need=people.PersonRole.ADMIN)
def deactivate(person_id: str) -> dict[str, Any]:
    person = people.get_person(db.ctx(), auth.party(), person_id)
    incidents.deactivate_person(db.ctx(), auth.party(), person)
    db.commit()
    return people.person_json(person)


@bp.post("/sign-in")
def sign_in() -> dict[str, Any]:
    """Email, password and TOTP (when enrolled) → a personal API token, shown once."""
    person, issued = people.sign_in(db.ctx(), auth.body())
    db.commit()
    return {"person": people.person_json(person), "token": issued.token,
            "expires_at": issued.expires_at.isoformat() if issued.expires_at else None}


@bp.post("/me/password")
def change_password() -> dict[str, Any]:
    data = v.parse(auth.body(), PASSWORD_SPEC)
    people.set_password(db.ctx(), _me(), data["current"], data["new"])
    db.commit()
    return {"changed": True}


@bp.post("/me/totp")
def start_totp() -> dict[str, Any]:
    uri = people.start_totp(db.ctx(), _me())
    db.commit()
    return {"otpauth_uri": uri}


@bp.post("/me/totp/confirm")
def confirm_totp() -> dict[str, Any]:
    people.confirm_totp(db.ctx(), _me(), v.parse(auth.body(), TOTP_SPEC)["totp"])
    db.commit()
    return {"totp_enabled": True}


def rotate_personal_token() -> dict[str, Any]:
    """``POST /me/rotate-token`` for a person (sandbox/api/parties.py routes it here)."""
    days = v.parse(auth.body(), TOKEN_SPEC)["token_days"] if request.content_length else None
    issued = people.issue_token(db.ctx(), _me(), days)
    db.ctx().record("person.token_rotated", issued.id, {"person_id": issued.id})
    db.commit()
    return {"id": issued.id, "token": issued.token,
            "expires_at": issued.expires_at.isoformat() if issued.expires_at else None}


@bp.post("/people/<person_id>/identity")
@auth.roles("admin")
def verify_identity(person_id: str) -> dict[str, Any]:
    """The operator records that it verified the person's identity, and how."""
    person = people.get_person(db.ctx(), auth.party(), person_id)
    people.record_identity(db.ctx(), auth.party(), person, auth.body())
    db.commit()
    return people.person_json(person)


@bp.post("/people/<person_id>/accreditations")
@auth.roles("admin")
def accredit(person_id: str) -> tuple[dict[str, Any], int]:
    """The operator records training the person completed, and until when it holds."""
    person = people.get_person(db.ctx(), auth.party(), person_id)
    people.record_accreditation(db.ctx(), auth.party(), person, auth.body())
    db.commit()
    return people.person_json(person), 201
