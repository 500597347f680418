"""Access requests, per-provider decisions, permits and revocation.

A request over several providers' datasets becomes a permit only when every provider has
approved its own items; the permit's conditions are the strictest of all approvals.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from authz import catalog, exclusive, lifecycle, people
from authz import validate as v
from authz.context import ROW_LOCK, Ctx
from authz.models import (
    AccessRequest,
    Dataset,
    Job,
    Party,
    Permit,
    Person,
    RequestItem,
    new_id,
)
from authz.people import PersonRole
from authz.permits import permit_providers
from authz.specs import APPROVE_SPEC, DEFAULT_MIN_CELL
from authz.specs import REQUEST_SPEC as REQUEST_SPEC
from authz.specs import USE_KINDS as USE_KINDS
from authz.states import (
    ACTIVE,
    DatasetStatus,
    Decision,
    JobState,
    PermitStatus,
    ScriptRelease,
)
from compute import statistics
from compute.errors import Conflict, InvalidInput, NotFound

UNCONDITIONAL_DAYS = 90
UNCONDITIONAL_RUNS = 100


def create_request(ctx: Ctx, requester: Party, body: object) -> AccessRequest:
    data = v.parse(body, REQUEST_SPEC)
    people.require_accredited(ctx)
    seen: set[str] = set()
    req = AccessRequest(id=new_id("req"), requester_id=requester.id, purpose=data["purpose"],
                        use_kind=data["use_kind"], business_system=data["business_system"],
                        people=_named_people(ctx, requester, data["people"]))
    for i, item in enumerate(data["items"]):
        where = f"items[{i}]"
        ds = ctx.session.get(Dataset, item["dataset_id"])
        if ds is None or ds.status != DatasetStatus.ACTIVE:
            raise InvalidInput(f"{where}.dataset_id", "must be an active dataset in the catalog")
        if ds.id in seen:
            raise InvalidInput(f"{where}.dataset_id", "each dataset may appear once")
        seen.add(ds.id)
        if ds.openness == "not_open":
            raise InvalidInput(f"{where}.dataset_id", "dataset is not open (不予开放): it never "
                                                       "enters a job")
        known = catalog.field_map(ds)
        for j, col in enumerate(item["columns"]):
            if col not in known:
                raise InvalidInput(f"{where}.columns[{j}]", f"no field {col!r} in {ds.code}; "
                                   f"its fields are: {', '.join(known)}")
        req.items.append(RequestItem(position=i, dataset_id=ds.id, provider_id=ds.provider_id,
                                     columns=item["columns"]))
    exclusive.check_request(ctx, req)  # before it is added: a refusal leaves nothing behind
    ctx.session.add(req)
    ctx.session.flush()
    ctx.record("request.created", requester.id, {
        "request_id": req.id, "requester_id": requester.id, "purpose": req.purpose,
        "use_kind": req.use_kind, "business_system": req.business_system,
        "items": [{"dataset_id": it.dataset_id, "columns": it.columns} for it in req.items],
        "people": req.people,
    })
    for item in req.items:
        ds = ctx.session.get(Dataset, item.dataset_id)
        assert ds is not None
        if ds.openness == "unconditional":
            # Unconditional data needs no per-use decision, but still runs in the sandbox
            # under default conditions, and the automatic approval is on the record.
            _decide(ctx, "system:unconditional", item, Decision.APPROVED, None, {
                "columns": item.columns, "max_runs": UNCONDITIONAL_RUNS,
                "min_cell_count": DEFAULT_MIN_CELL,
                "expires_at": (ctx.now() + timedelta(days=UNCONDITIONAL_DAYS)).isoformat(),
                "risk_assessment": "unconditional openness class",
            })
    _settle(ctx, req)
    return req


def _named_people(ctx: Ctx, requester: Party, ids: list[str]) -> list[str]:
    named = [ctx.signed_in.person_id] if ctx.signed_in else []
    for i, pid in enumerate(ids):
        person = ctx.session.get(Person, pid)
        if person is None or person.party_id != requester.id or not person.active \
                or PersonRole.ANALYST not in person.roles:
            raise InvalidInput(f"people[{i}]", "must be an active analyst of your "
                                               "organisation (GET /parties/<id>/people)")
        if pid not in named:
            named.append(pid)
    return named


def _item_for_provider(ctx: Ctx, provider: Party, request_id: str, dataset_id: str
                       ) -> tuple[AccessRequest, RequestItem]:
    # Locked: two providers approving the last two items at once must not both see the
    # other's item pending (READ COMMITTED), or no permit would ever be issued.
    req = ctx.session.get(AccessRequest, request_id, with_for_update=ROW_LOCK,
                          populate_existing=True)
    if req is None:
        raise NotFound("no such request")
    mine = [it for it in req.items if it.provider_id == provider.id]
    if not mine:
        raise NotFound("no such request")
    for it in mine:
        if it.dataset_id == dataset_id:
            return req, it
    raise NotFound("no such item in this request")


def _decide(ctx: Ctx, actor: str, item: RequestItem, decision: Decision, reason: str | None,
            conditions: dict[str, Any] | None) -> None:
    item.decision = decision
    item.decided_by = ctx.who(actor)
    item.decided_at = ctx.now()
    item.reason = reason
    item.conditions = conditions
    ctx.record(f"request.{decision}", actor, {
        "request_id": item.request_id, "dataset_id": item.dataset_id, "reason": reason,
        "conditions": conditions,
    })


def approve(ctx: Ctx, provider: Party, request_id: str, dataset_id: str, body: object
            ) -> AccessRequest:
    req, item = _item_for_provider(ctx, provider, request_id, dataset_id)
    if item.decision != Decision.PENDING or req.status != Decision.PENDING:
        raise Conflict(f"item already {item.decision}")
    data = v.parse(body, APPROVE_SPEC)
    allowed = data["columns"] if data["columns"] is not None else item.columns
    for j, col in enumerate(allowed):
        if col not in item.columns:
            raise InvalidInput(f"columns[{j}]", "may only narrow the requested columns")
    if data["expires_at"] <= ctx.now():
        raise InvalidInput("expires_at", "must be in the future")
    conditions = {
        "columns": allowed, "expires_at": data["expires_at"].isoformat(),
        "max_runs": data["max_runs"], "min_cell_count": data["min_cell_count"],
        "risk_assessment": data["risk_assessment"], "epsilon_budget": data["epsilon_budget"],
        "disclosure": _disclosure(data["disclosure"], data["min_cell_count"]),
        "script_release": data["script_release"], "review_quorum": data["review_quorum"],
        "approve_scripts": data["approve_scripts"],
    }
    _decide(ctx, provider.id, item, Decision.APPROVED, None, conditions)
    _settle(ctx, req)
    return req


def deny(ctx: Ctx, provider: Party, request_id: str, dataset_id: str, body: object
         ) -> AccessRequest:
    req, item = _item_for_provider(ctx, provider, request_id, dataset_id)
    if item.decision != Decision.PENDING or req.status != Decision.PENDING:
        raise Conflict(f"item already {item.decision}")
    data = v.parse(body, v.REASON_SPEC)
    _decide(ctx, provider.id, item, Decision.DENIED, data["reason"], None)
    _settle(ctx, req)
    return req


def _settle(ctx: Ctx, req: AccessRequest) -> None:
    """Deny the whole request on any denial; issue the permit once all items approved."""
    decisions = {it.decision for it in req.items}
    if Decision.DENIED in decisions:
        req.status = Decision.DENIED
        return
    if decisions != {Decision.APPROVED}:
        return
    req.status = Decision.APPROVED
    conds = [it.conditions or {} for it in req.items]
    expires = min(datetime.fromisoformat(c["expires_at"]) for c in conds)
    columns = {it.dataset_id: [c for c in it.columns if c in (it.conditions or {})["columns"]]
               for it in req.items}
    levels = []
    for it in req.items:
        ds = ctx.session.get(Dataset, it.dataset_id)
        assert ds is not None
        fm = catalog.field_map(ds)
        levels += [catalog.level(fm[c]["sensitivity"]) for c in columns[it.dataset_id]]
    permit = Permit(
        id=new_id("pmt"), request_id=req.id, requester_id=req.requester_id, columns=columns,
        people=list(req.people),
        expires_at=expires, max_runs=min(c["max_runs"] for c in conds),
        min_cell_count=max(c["min_cell_count"] for c in conds),
        classification=catalog.SENSITIVITY[max(levels)],
        epsilon_budget=_smallest([c.get("epsilon_budget") for c in conds]),
        disclosure=statistics.strictest_settings(max(c["min_cell_count"] for c in conds),
                                                 [c.get("disclosure") for c in conds]),
        script_release=(ScriptRelease.AUTOMATIC if all(
            c.get("script_release") == ScriptRelease.AUTOMATIC for c in conds)
            else ScriptRelease.REVIEW),
        review_quorum=max(int(c.get("review_quorum", 1)) for c in conds),
        approve_scripts=any(bool(c.get("approve_scripts")) for c in conds),
    )
    ctx.session.add(permit)
    ctx.session.flush()
    ctx.record("permit.issued", "system", {
        "permit_id": permit.id, "request_id": req.id, "requester_id": req.requester_id,
        "columns": columns, "people": permit.people, "expires_at": expires.isoformat(),
        "max_runs": permit.max_runs,
        "min_cell_count": permit.min_cell_count, "classification": permit.classification,
        "epsilon_budget": permit.epsilon_budget, "disclosure": permit.disclosure,
        "script_release": permit.script_release, "review_quorum": permit.review_quorum,
        "approve_scripts": permit.approve_scripts,
        "approved_by": sorted({it.decided_by or "" for it in req.items}),
    })


def _disclosure(raw: object, min_cell_count: int) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= set(statistics.PROVIDER_SETTINGS):
        raise InvalidInput("disclosure", "must be an object of: "
                           + ", ".join(statistics.PROVIDER_SETTINGS))
    try:
        return statistics.settings_of(statistics.policy_for(min_cell_count, raw))
    except InvalidInput as e:
        raise InvalidInput(f"disclosure.{e.field}", e.rule, str(e)) from None


def _smallest(budgets: list[float | None]) -> float | None:
    """Strictest wins: the smallest ε any provider granted (None if none granted any)."""
    granted = [b for b in budgets if b is not None]
    return min(granted) if granted else None


def revoke(ctx: Ctx, provider: Party, permit_id: str, body: object) -> Permit:
    permit = ctx.session.get(Permit, permit_id, with_for_update=ROW_LOCK, populate_existing=True)
    if permit is None or provider.id not in permit_providers(ctx, permit):
        raise NotFound("no such permit")
    if permit.status == PermitStatus.REVOKED:
        raise Conflict("permit already revoked")
    data = v.parse(body, v.REASON_SPEC)
    revoke_permit(ctx, provider.id, permit, data["reason"])
    return permit


def permits_of(ctx: Ctx, party: Party) -> list[Permit]:
    """Active permits a party holds (requester) or that cover its data (provider)."""
    active = list(ctx.session.scalars(select(Permit).where(Permit.status == PermitStatus.ACTIVE)
                                      .with_for_update(key_share=True)))
    if party.role == "requester":
        return [p for p in active if p.requester_id == party.id]
    if party.role == "provider":
        return [p for p in active if party.id in permit_providers(ctx, p)]
    return []


def revoke_permit(ctx: Ctx, actor: str, permit: Permit, reason: str) -> None:
    permit.status = PermitStatus.REVOKED
    permit.revoked_by = ctx.who(actor)
    permit.revoked_reason = reason
    ctx.record("permit.revoked", actor, {"permit_id": permit.id, "reason": reason})
    # SKIP LOCKED: a job a dispatcher holds right now is left to it; the dispatcher
    # waits for this permit row, then sees it revoked and blocks the job. Waiting for the
    # job row here instead would deadlock with that dispatcher (opposite lock order).
    # Queued jobs are cancelled, running ones stopped: their agents see the lease end, kill
    # the container and discard its outputs; outputs held for review are discarded too
    # (nothing of a revoked use is released).
    open_jobs = ctx.session.scalars(select(Job).where(
        Job.permit_id == permit.id,
        Job.state.in_({JobState.AWAITING_APPROVAL, JobState.QUEUED, JobState.AWAITING_REVIEW,
                       *ACTIVE}))
        .with_for_update(skip_locked=True, key_share=True))
    for job in open_jobs:
        lifecycle.end_job(ctx, actor, job, JobState.CANCELLED, "permit revoked")


def request_json(req: AccessRequest, ctx: Ctx) -> dict[str, Any]:
    permit = ctx.session.scalar(select(Permit).where(Permit.request_id == req.id))
    return {
        "id": req.id, "requester_id": req.requester_id, "purpose": req.purpose,
        "use_kind": req.use_kind, "business_system": req.business_system,
        "people": req.people, "status": req.status, "created_at": req.created_at.isoformat(),
        "permit_id": permit.id if permit else None,
        "items": [{
            "dataset_id": it.dataset_id, "provider_id": it.provider_id, "columns": it.columns,
            "decision": it.decision, "decided_by": it.decided_by, "reason": it.reason,
            "decided_at": it.decided_at.isoformat() if it.decided_at else None,
            "conditions": it.conditions,
        } for it in req.items],
    }


def permit_json(p: Permit) -> dict[str, Any]:
    return {
        "id": p.id, "request_id": p.request_id, "requester_id": p.requester_id,
        "columns": p.columns, "people": p.people, "expires_at": p.expires_at.isoformat(),
        "max_runs": p.max_runs,
        "runs_used": p.runs_used, "min_cell_count": p.min_cell_count,
        "classification": p.classification, "status": p.status,
        "epsilon_budget": p.epsilon_budget, "epsilon_spent": p.epsilon_spent,
        "disclosure": p.disclosure, "script_release": p.script_release,
        "review_quorum": p.review_quorum, "approve_scripts": p.approve_scripts,
        "mock_returns": p.mock_returns,
        "revoked_reason": p.revoked_reason,
    }


def visible_requests(ctx: Ctx, party: Party) -> list[AccessRequest]:
    rows = ctx.session.scalars(select(AccessRequest).order_by(AccessRequest.created_at))
    return [r for r in rows if can_see_request(party, r)]


def can_see_request(party: Party, req: AccessRequest) -> bool:
    if party.role == "requester":
        return req.requester_id == party.id
    if party.role == "provider":
        return any(it.provider_id == party.id for it in req.items)
    # Regulators and the operator audit through the ledger, not through others' objects.
    return False


def public_projects(ctx: Ctx) -> list[dict[str, Any]]:
    """Approved uses as a public register (SATRE: project details published): purposes,
    organisations and datasets, newest first. No person, column, condition or result."""
    out = []
    for permit in ctx.session.scalars(select(Permit).order_by(Permit.created_at.desc(),
                                                              Permit.id)):
        req = ctx.session.get(AccessRequest, permit.request_id)
        requester = ctx.session.get(Party, permit.requester_id)
        assert req is not None and requester is not None
        datasets = []
        for ds_id in permit.columns:
            ds = ctx.session.get(Dataset, ds_id)
            provider = ctx.session.get(Party, ds.provider_id) if ds else None
            if ds is not None and provider is not None:
                datasets.append({"code": ds.code, "name": ds.name, "provider": provider.name})
        out.append({"permit_id": permit.id, "purpose": req.purpose, "use_kind": req.use_kind,
                    "organisation": requester.name, "datasets": datasets,
                    "approved_at": permit.created_at.isoformat(),
                    "expires_at": permit.expires_at.isoformat(), "status": permit.status})
    return out
