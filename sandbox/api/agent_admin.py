"""The operator's incident controls over agents: token rotation, signing-key replacement."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from authz import agent_keys
from authz import validate as v
from authz.specs import KEY_SPEC
from sandbox import auth, db

bp = Blueprint("agent_admin", __name__, url_prefix="/api/v1/agents")


@bp.post("/<agent_id>/rotate-token")
@auth.roles("admin")
def rotate_token(agent_id: str) -> dict[str, Any]:
    """A new token for the agent, shown once; the old one is refused from this commit."""
    issued = agent_keys.rotate_token(db.ctx(), auth.party().id, agent_id)
    db.commit()
    return {"id": issued.id, "token": issued.token}


@bp.post("/<agent_id>/signing-key")
@auth.roles("admin")
def replace_signing_key(agent_id: str) -> dict[str, Any]:
    data = v.parse(auth.body(), KEY_SPEC)
    agent = agent_keys.replace_key(db.ctx(), auth.party().id, agent_id, data["public_key"],
                                   data["reason"])
    db.commit()
    return {"id": agent.id, "public_key": agent.public_key}


@bp.get("/<agent_id>/signing-keys")
@auth.roles("admin", "regulator")
def signing_keys(agent_id: str) -> dict[str, Any]:
    """Every key the agent has signed with, and when each was current."""
    return {"id": agent_id, "keys": agent_keys.history(db.ctx(), agent_id)}
