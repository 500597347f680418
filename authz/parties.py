"""Parties, agents and their API tokens.

A token is ``<kind>_<id>.<secret>``. Only SHA-256(secret) is stored; the id part finds the
row without scanning, and the digest comparison is constant-time, so neither a database
reader nor a timing observer learns a usable token.
"""

from __future__ import annotations

import hmac

from sqlalchemy import select

from authz import access, lifecycle, people
from authz.checked import CheckedPerson, check_person_token
from authz.context import Ctx
from authz.models import Agent, AgentProvider, Job, Party, Person, new_id
from authz.specs import PARTY_ROLES as ROLES
from authz.states import ACTIVE, JobState
from authz.tokens import Issued, digest, issue
from compute.errors import Conflict, InvalidInput, NotFound, Unauthenticated


def create_party(ctx: Ctx, actor: str, name: str, role: str, code: str | None) -> Issued:
    if role not in ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
    if role == "provider" and not code:
        raise InvalidInput("code", "required for a provider (its provider code)")
    if code and ctx.session.scalar(select(Party).where(Party.code == code)):
        raise Conflict(f"code {code!r} is already taken")
    pid = new_id("pty")
    token, hashed = issue(pid)
    ctx.session.add(Party(id=pid, name=name, role=role, code=code, token_hash=hashed))
    ctx.session.flush()
    ctx.record("party.created", actor, {"party_id": pid, "name": name, "role": role, "code": code})
    return Issued(pid, token)


def create_agent(
    ctx: Ctx, actor: str, name: str, provider_ids: list[str], public_key: str | None
) -> Issued:
    for i, pid in enumerate(provider_ids):
        p = ctx.session.get(Party, pid)
        if p is None or p.role != "provider":
            raise InvalidInput(f"providers[{i}]", "must be the id of a provider party")
    aid = new_id("agt")
    token, hashed = issue(aid)
    agent = Agent(id=aid, name=name, token_hash=hashed, public_key=public_key)
    agent.providers = [AgentProvider(agent_id=aid, provider_id=p) for p in provider_ids]
    ctx.session.add(agent)
    ctx.session.flush()
    ctx.record(
        "agent.created", actor, {"agent_id": aid, "name": name, "providers": provider_ids}
    )
    return Issued(aid, token)


def _split(token: str) -> tuple[str, str]:
    object_id, sep, secret = token.partition(".")
    if not sep or not object_id or not secret or len(token) > 200:
        raise Unauthenticated("malformed token")
    return object_id, secret


def authenticate(ctx: Ctx, token: str) -> tuple[Party | Agent, Person | None]:
    """Whose authority the token carries (a party, or an agent) and the person using it
    (a person's token carries their party's authority); None for a party's own token."""
    object_id, secret = _split(token)
    if object_id.startswith("psn_"):
        person, party = people.authenticate(ctx, object_id, secret)
        return party, person
    row: Party | Agent | None
    if object_id.startswith("agt_"):
        row = ctx.session.get(Agent, object_id)
    else:
        row = ctx.session.get(Party, object_id)
    # Compare even when the row is missing so timing does not reveal which ids exist.
    stored = row.token_hash if row is not None else "0" * 64
    ok = hmac.compare_digest(stored, digest(secret))
    if row is None or not ok or not row.active:
        raise Unauthenticated("invalid token")
    return row, None


def check_for_read(ctx: Ctx, token: str, with_accreditations: bool = False
                   ) -> CheckedPerson | None:
    """A person's token checked with plain columns, no ORM row (:mod:`authz.checked`);
    None for a party's or an agent's token (use :func:`authenticate`)."""
    object_id, secret = _split(token)
    if not object_id.startswith("psn_"):
        return None
    return check_person_token(ctx, object_id, secret, with_accreditations)


def get_party(ctx: Ctx, party_id: str) -> Party:
    p = ctx.session.get(Party, party_id)
    if p is None:
        raise NotFound("no such party")
    return p


def agent_provider_ids(agent: Agent) -> set[str]:
    return {ap.provider_id for ap in agent.providers}


def rotate_token(ctx: Ctx, party: Party) -> Issued:
    """A new token for the caller; the old one stops working at commit."""
    token, hashed = issue(party.id)
    party.token_hash = hashed
    ctx.record("party.token_rotated", party.id, {"party_id": party.id})
    return Issued(party.id, token)


def deactivate(ctx: Ctx, actor: str, party_id: str) -> Party | Agent:
    """Lock a party or an agent out; its token stops working at commit. Kept on record."""
    if party_id.startswith("agt_"):
        agent = ctx.session.get(Agent, party_id)
        if agent is None:
            raise NotFound("no such agent")
        if not agent.active:
            raise Conflict("agent already deactivated")
        agent.active = False
        ctx.record("agent.deactivated", actor, {"agent_id": agent.id})
        # Its work in flight stops too: a compromised agent gets no result through.
        for job in ctx.session.scalars(select(Job).where(
                Job.agent_id == agent.id, Job.state.in_(ACTIVE))
                .with_for_update(skip_locked=True, key_share=True)):
            lifecycle.end_job(ctx, actor, job, JobState.CANCELLED,
                              f"agent {agent.id} deactivated")
        return agent
    party = get_party(ctx, party_id)
    if party.id == actor:
        raise Conflict("an operator cannot deactivate itself")
    if not party.active:
        raise Conflict("party already deactivated")
    party.active = False
    ctx.record("party.deactivated", actor, {"party_id": party.id})
    # Work already in the system stops too: the party's permits (as requester, or over its
    # data as provider) are revoked, which cancels their queued jobs.
    for permit in access.permits_of(ctx, party):
        access.revoke_permit(ctx, actor, permit, f"party {party.id} deactivated")
    return party
