"""Pooled permits are exclusive: a requester's joint or PSI permit shares no dataset with
any other permit of theirs.

Why (red team R9): the joint and PSI routes release figures pooled over several providers'
datasets, and their rules hold for one release at a time. The same requester's other
figures over one of those datasets subtract from them: a joint total over hospitals A, B and
C less B's and C's statistics-route totals is A's own (R9-1); two joint permits over A+B+C
and A+B+C+D give D's (R9-1b); a PSI release per district beside the register's own table by
district gives the unmatched firms (R9-2); and a joint release is outside the statistics
route's differencing audit (R9-3). No provider can see the requester's other permits when
it approves, so the controller refuses the combination:

* a request (``POST /requests``) whose datasets overlap a permit of the same requester,
  or a request of theirs still pending, where either is pooled, unless both are pooled
  of the same kind over exactly the same datasets (one pool, asked for twice);
* a job under a permit (every route, at submission) in the same case, for permits issued
  before this rule or at once from two requests.

A permit counts while it may still run (active) and once it has run (its releases are
known); a permit that expired or was revoked unused does not. Collusion between two
requester parties is not covered here: docs/threat-model.md.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import or_, select

from authz.context import Ctx
from authz.models import AccessRequest, Permit, RequestItem
from authz.states import Decision, PermitStatus
from compute.errors import PolicyViolation

# The use kinds whose releases pool several providers' datasets (joint statistics and
# models; private set intersection).
POOLED = frozenset({"joint_statistics", "verification"})


@dataclass(frozen=True)
class Use:
    kind: str
    datasets: frozenset[str]


def _clash(new: Use, other: Use) -> bool:
    if not new.datasets & other.datasets:
        return False
    if new.kind not in POOLED and other.kind not in POOLED:
        return False  # single-provider routes: the differencing audit compares them
    return not (new.kind == other.kind and new.datasets == other.datasets)


def _refuse(new: Use, other: Use, what: str) -> PolicyViolation:
    pooled = new.kind if new.kind in POOLED else other.kind
    return PolicyViolation(
        f"this requester's {what} covers a dataset of this {new.kind} use: figures pooled "
        f"over several providers ({pooled}) would subtract from the requester's other "
        "figures over the same data to give one provider's own. A pooled permit shares no "
        "dataset with any other permit of the same requester (docs/threat-model.md)")


def _permits(ctx: Ctx, requester_id: str, dataset_ids: Collection[str],
             except_permit: str | None) -> list[Use]:
    rows = ctx.session.execute(
        select(Permit.id, Permit.columns, AccessRequest.use_kind)
        .join(AccessRequest, Permit.request_id == AccessRequest.id)
        .where(Permit.requester_id == requester_id,
               or_(Permit.status == PermitStatus.ACTIVE, Permit.runs_used > 0)))
    return [Use(kind, frozenset(columns)) for pid, columns, kind in rows
            if pid != except_permit and set(columns) & set(dataset_ids)]


def _pending(ctx: Ctx, requester_id: str, except_request: str | None) -> list[Use]:
    rows = ctx.session.execute(
        select(AccessRequest.id, AccessRequest.use_kind, RequestItem.dataset_id)
        .join(RequestItem, RequestItem.request_id == AccessRequest.id)
        .where(AccessRequest.requester_id == requester_id,
               AccessRequest.status == Decision.PENDING))
    found: dict[str, tuple[str, set[str]]] = {}
    for rid, kind, ds in rows:
        if rid != except_request:
            found.setdefault(rid, (kind, set()))[1].add(ds)
    return [Use(kind, frozenset(ds)) for kind, ds in found.values()]


def check_request(ctx: Ctx, request: AccessRequest) -> None:
    """Refuse a new request that would pool with, or be pooled against, the requester's
    other permits or pending requests."""
    new = Use(request.use_kind, frozenset(it.dataset_id for it in request.items))
    for other in _permits(ctx, request.requester_id, new.datasets, None):
        if _clash(new, other):
            raise _refuse(new, other, "permit")
    for other in _pending(ctx, request.requester_id, request.id):
        if _clash(new, other):
            raise _refuse(new, other, "pending request")


def check_job(ctx: Ctx, permit: Permit, use_kind: str) -> None:
    """Refuse a new job under ``permit`` while the requester holds a clashing permit."""
    new = Use(use_kind, frozenset(permit.columns))
    for other in _permits(ctx, permit.requester_id, new.datasets, permit.id):
        if _clash(new, other):
            raise _refuse(new, other, "permit")
