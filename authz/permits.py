"""A requester's permit, the datasets it covers, and whether it allows a run now.

Checked at submission (:mod:`authz.jobs`, :mod:`authz.joint`) and again at dispatch
(:mod:`authz.runs`), always against the permit's current row.
"""

from __future__ import annotations

from sqlalchemy import select

from authz import catalog, exclusive
from authz.context import Ctx
from authz.models import AccessRequest, Dataset, Party, Permit
from authz.states import DatasetStatus, PermitStatus
from compute.errors import InvalidInput, PolicyViolation


def permit_providers(ctx: Ctx, permit: Permit) -> set[str]:
    req = ctx.session.get(AccessRequest, permit.request_id)
    assert req is not None
    return {it.provider_id for it in req.items}


def requester_permit(ctx: Ctx, requester: Party, permit_id: str
                     ) -> tuple[Permit, AccessRequest]:
    """The requester's own permit and the request it was issued for (400 otherwise)."""
    permit = ctx.session.get(Permit, permit_id)
    if permit is None or permit.requester_id != requester.id:
        if permit_id.startswith("req_"):
            raise InvalidInput("permit_id", "this is an access request's id, not a permit's: "
                               "pass the permit_id the request shows once every provider "
                               "approved it (GET /permits lists your permits)")
        raise InvalidInput("permit_id", "must be one of your permits (GET /permits lists "
                           "them; a permit id starts with pmt_)")
    request = ctx.session.get(AccessRequest, permit.request_id)
    assert request is not None
    return permit, request


def visible_permits(ctx: Ctx, party: Party) -> list[Permit]:
    """A requester's own permits; a provider's permits on its data. Oldest first."""
    rows = ctx.session.scalars(select(Permit).order_by(Permit.created_at, Permit.id))
    if party.role == "requester":
        return [p for p in rows if p.requester_id == party.id]
    return [p for p in rows if party.id in permit_providers(ctx, p)]


def covered_datasets(ctx: Ctx, permit: Permit, dataset_ids: list[str]) -> list[Dataset]:
    out = []
    for i, ds_id in enumerate(dataset_ids):
        ds = ctx.session.get(Dataset, ds_id)
        if ds is None or ds_id not in permit.columns:
            raise InvalidInput(f"dataset_ids[{i}]", "must be a dataset covered by the permit "
                               f"(it covers {', '.join(permit.columns)})")
        out.append(ds)
    return out


def permitted_schema(ctx: Ctx, permit: Permit, dataset_ids: list[str]) -> dict[str, str]:
    """Column -> declared type for the permitted columns every dataset agrees on."""
    schema: dict[str, str] | None = None
    for ds_id in dataset_ids:
        ds = ctx.session.get(Dataset, ds_id)
        assert ds is not None
        fm = catalog.field_map(ds)
        mine = {c: fm[c]["type"] for c in permit.columns[ds_id]}
        schema = mine if schema is None else {c: t for c, t in schema.items()
                                              if mine.get(c) == t}
    return schema or {}


def check_permit(ctx: Ctx, permit: Permit, dataset_ids: list[str], *, new_run: bool) -> None:
    """Raise PolicyViolation unless the permit may run this job on these datasets.

    ``new_run`` is False for a job already counted against the permit (requeued after its
    agent died), which must not be refused for using its own run.
    """
    if permit.status != PermitStatus.ACTIVE:
        raise PolicyViolation(f"permit is {permit.status}: apply again with a new access "
                              "request (POST /requests)")
    if permit.expires_at <= ctx.now():
        raise PolicyViolation(f"permit expired at {permit.expires_at.isoformat()}: apply "
                              "again with a new access request (POST /requests)")
    if new_run and permit.runs_used >= permit.max_runs:
        raise PolicyViolation(f"permit has no runs left ({permit.runs_used}/{permit.max_runs}):"
                              " apply again with a new access request (POST /requests)")
    if new_run:
        request = ctx.session.get(AccessRequest, permit.request_id)
        assert request is not None
        exclusive.check_job(ctx, permit, request.use_kind)
    for ds_id in dataset_ids:
        if ds_id not in permit.columns:
            raise PolicyViolation(f"dataset {ds_id} is not covered by the permit")
        ds = ctx.session.get(Dataset, ds_id)
        if ds is None or ds.status != DatasetStatus.ACTIVE or ds.openness == "not_open":
            raise PolicyViolation(f"dataset {ds_id} is not available for jobs")
        known = catalog.field_map(ds)
        for col in permit.columns[ds_id]:
            if col not in known:
                raise PolicyViolation(f"column {col} no longer exists in {ds.code}")
