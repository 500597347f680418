"""Parties and agents. The operator (admin) creates them; tokens are shown once."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from authz import parties, people
from authz import validate as v
from authz.checked import accreditations
from authz.specs import AGENT_SPEC, PARTY_SPEC
from sandbox import auth, db
from sandbox.api import people as api_people

bp = Blueprint("parties", __name__, url_prefix="/api/v1")


@bp.post("/parties")
@auth.roles("admin")
def create_party() -> tuple[dict[str, Any], int]:
    data = v.parse(auth.body(), PARTY_SPEC)
    issued = parties.create_party(db.ctx(), auth.party().id, data["name"], data["role"],
                                  data["code"])
    db.commit()
    return {"id": issued.id, "token": issued.token, "role": data["role"]}, 201


@bp.post("/agents")
@auth.roles("admin")
def create_agent() -> tuple[dict[str, Any], int]:
    data = v.parse(auth.body(), AGENT_SPEC)
    issued = parties.create_agent(db.ctx(), auth.party().id, data["name"], data["providers"],
                                  data["public_key"])
    db.commit()
    return {"id": issued.id, "token": issued.token}, 201


@bp.get("/me")
def me() -> dict[str, Any]:
    checked = auth.read_checked(with_accreditations=True)
    if checked is not None:  # a person's token, checked without loading their rows
        c = checked.party
        return {"id": c.id, "name": c.name, "role": c.role, "code": c.code,
                "person": people.fields_json(checked, accreditations(db.ctx(), checked))}
    p = auth.party()
    who = auth.person()
    return {"id": p.id, "name": p.name, "role": p.role, "code": p.code,
            "person": people.person_json(who) if who is not None else None}


@bp.post("/me/rotate-token")
def rotate_token() -> dict[str, Any]:
    if auth.person() is not None:
        return api_people.rotate_personal_token()
    issued = parties.rotate_token(db.ctx(), auth.party())
    db.commit()
    return {"id": issued.id, "token": issued.token}


@bp.post("/parties/<party_id>/deactivate")
@bp.post("/agents/<party_id>/deactivate")
@auth.roles("admin")
def deactivate(party_id: str) -> dict[str, Any]:
    p = parties.deactivate(db.ctx(), auth.party().id, party_id)
    db.commit()
    return {"id": p.id, "active": p.active}
