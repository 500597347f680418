"""Agents' signing keys over time, and rotating an agent's token.

An agent signs its joint-statistics parts with Ed25519 (compute/protocol.py). When its key
is replaced (lost, suspected, or routine), the old key is kept with the period it was
current: a part the agent reported while that key was current still verifies under it,
and a part reported after it was retired does not, whoever holds the old key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from authz.context import ROW_LOCK, Ctx
from authz.models import Agent, AgentRetiredKey
from authz.tokens import Issued, issue
from compute.errors import Conflict, NotFound


def _agent(ctx: Ctx, agent_id: str) -> Agent:
    agent = ctx.session.get(Agent, agent_id, with_for_update=ROW_LOCK)
    if agent is None:
        raise NotFound("no such agent")
    return agent


def _retired(ctx: Ctx, agent_id: str) -> list[AgentRetiredKey]:
    return list(ctx.session.scalars(select(AgentRetiredKey).where(
        AgentRetiredKey.agent_id == agent_id).order_by(AgentRetiredKey.retired_at)))


def current_since(ctx: Ctx, agent: Agent) -> datetime:
    """When the agent's current key became current."""
    retired = _retired(ctx, agent.id)
    return retired[-1].retired_at if retired else agent.created_at


def replace_key(ctx: Ctx, actor: str, agent_id: str, public_key: str, reason: str) -> Agent:
    """Make ``public_key`` the agent's signing key from now; keep the old one's period."""
    agent = _agent(ctx, agent_id)
    if agent.public_key == public_key or any(
            k.public_key == public_key for k in _retired(ctx, agent.id)):
        raise Conflict("the agent has used that key already: generate a new one "
                       "(`sandbox agent-key`)")
    now = ctx.now()
    if agent.public_key is not None:
        ctx.session.add(AgentRetiredKey(agent_id=agent.id, public_key=agent.public_key,
                                        valid_from=current_since(ctx, agent), retired_at=now,
                                        retired_by=actor, reason=reason))
    old = agent.public_key
    agent.public_key = public_key
    ctx.session.flush()
    # Public keys are not secret: the entry lets anyone check a part's signature later.
    ctx.record("agent.key_replaced", actor, {"agent_id": agent.id, "old_public_key": old,
                                             "public_key": public_key, "reason": reason})
    return agent


def key_at(ctx: Ctx, agent: Agent, when: datetime) -> str | None:
    """The agent's public key that was current at ``when`` (hex), if it had one."""
    for k in _retired(ctx, agent.id):
        if k.valid_from <= when < k.retired_at:
            return k.public_key
    return agent.public_key if when >= current_since(ctx, agent) else None


def history(ctx: Ctx, agent_id: str) -> list[dict[str, Any]]:
    agent = ctx.session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("no such agent")
    out: list[dict[str, Any]] = [
        {"public_key": k.public_key, "valid_from": k.valid_from.isoformat(),
         "retired_at": k.retired_at.isoformat(), "retired_by": k.retired_by,
         "reason": k.reason} for k in _retired(ctx, agent.id)]
    if agent.public_key is not None:
        out.append({"public_key": agent.public_key,
                    "valid_from": current_since(ctx, agent).isoformat(), "retired_at": None})
    return out


def rotate_token(ctx: Ctx, actor: str, agent_id: str) -> Issued:
    """A new token for the agent; the old one stops working when this commits."""
    agent = _agent(ctx, agent_id)
    if not agent.active:
        raise Conflict("agent is deactivated")
    token, hashed = issue(agent.id)
    agent.token_hash = hashed
    ctx.record("agent.token_rotated", actor, {"agent_id": agent.id})
    return Issued(agent.id, token)
