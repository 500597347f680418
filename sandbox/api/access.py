"""Access requests, provider decisions, permits, revocation and provider usage reports."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from authz import access, permits
from authz import usage as usage_report
from authz.models import AccessRequest, Permit
from authz.people import PersonRole
from compute.errors import NotFound
from sandbox import auth, db

bp = Blueprint("access", __name__, url_prefix="/api/v1")


def _request(request_id: str) -> AccessRequest:
    req = db.session().get(AccessRequest, request_id)
    if req is None or not access.can_see_request(auth.party(), req):
        raise NotFound("no such request")
    return req


@bp.post("/requests")
@auth.roles("requester")
def create_request() -> tuple[dict[str, Any], int]:
    req = access.create_request(db.ctx(), auth.party(), auth.body())
    db.commit()
    return access.request_json(req, db.ctx()), 201


@bp.get("/requests")
@auth.roles("requester", "provider")
def list_requests() -> dict[str, Any]:
    rows = access.visible_requests(db.ctx(), auth.party())
    return {"requests": [access.request_json(r, db.ctx()) for r in rows]}


@bp.get("/requests/<request_id>")
@auth.roles("requester", "provider")
def get_request(request_id: str) -> dict[str, Any]:
    return access.request_json(_request(request_id), db.ctx())


@bp.post("/requests/<request_id>/items/<dataset_id>/approve")
@auth.roles("provider", need=PersonRole.APPROVER)
def approve(request_id: str, dataset_id: str) -> dict[str, Any]:
    req = access.approve(db.ctx(), auth.party(), request_id, dataset_id, auth.body())
    db.commit()
    return access.request_json(req, db.ctx())


@bp.post("/requests/<request_id>/items/<dataset_id>/deny")
@auth.roles("provider", need=PersonRole.APPROVER)
def deny(request_id: str, dataset_id: str) -> dict[str, Any]:
    req = access.deny(db.ctx(), auth.party(), request_id, dataset_id, auth.body())
    db.commit()
    return access.request_json(req, db.ctx())


def _permit(permit_id: str) -> Permit:
    p = auth.party()
    permit = db.session().get(Permit, permit_id)
    if permit is None:
        raise NotFound("no such permit")
    if p.role == "requester" and permit.requester_id == p.id:
        return permit
    if p.role == "provider" and p.id in permits.permit_providers(db.ctx(), permit):
        return permit
    raise NotFound("no such permit")


@bp.get("/permits")
@auth.roles("requester", "provider")
def list_permits() -> dict[str, Any]:
    return {"permits": [access.permit_json(p)
                        for p in permits.visible_permits(db.ctx(), auth.party())]}


@bp.get("/permits/<permit_id>")
@auth.roles("requester", "provider")
def get_permit(permit_id: str) -> dict[str, Any]:
    return access.permit_json(_permit(permit_id))


@bp.post("/permits/<permit_id>/revoke")
@auth.roles("provider", need=PersonRole.APPROVER)
def revoke(permit_id: str) -> dict[str, Any]:
    permit = access.revoke(db.ctx(), auth.party(), permit_id, auth.body())
    db.commit()
    return access.permit_json(permit)


@bp.get("/usage")
@auth.roles("provider")
def usage() -> dict[str, Any]:
    """Every job on the provider's data, or with ``limit`` the latest ones, a page at a
    time (``before``: the ``next_before`` of the previous page)."""
    page = usage_report.rows(db.ctx(), auth.party(),
                             usage_report.parse_limit(request.args.get("limit")),
                             request.args.get("before") or None)
    return {"usage": page.rows, "next_before": page.next_before}


@bp.get("/public/projects")
def public_projects() -> dict[str, Any]:
    """The public register of approved uses, unless the operator switched it off."""
    if not current_app.config["PUBLISH_PROJECTS"]:
        raise NotFound("the operator does not publish project details")
    return {"projects": access.public_projects(db.ctx())}
