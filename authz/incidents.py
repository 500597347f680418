"""Incident controls that stop work already in the system, not only future work.

Deactivating a person cancels the jobs they submitted that are still open; suspending a
dataset cancels every open job that reads it and keeps it out of new ones until it is
reinstated. Running jobs end ``cancelled``: their agents see the lease end within seconds,
kill the container and discard its outputs (containers/jobwatch.py); outputs held for
review are discarded. (Deactivating a party or an agent, and revoking a permit, do the
same through authz.parties and authz.access.)
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from authz import lifecycle, people
from authz import validate as v
from authz.context import ROW_LOCK, Ctx
from authz.models import Dataset, Job, Party, Person
from authz.states import ACTIVE, DatasetStatus, JobState
from compute.errors import Conflict, NotFound

#: Jobs not yet over: waiting, running, or holding outputs for review.
OPEN = frozenset({JobState.AWAITING_APPROVAL, JobState.QUEUED, JobState.AWAITING_REVIEW,
                  *ACTIVE})


def _cancel_open(ctx: Ctx, actor: str, where: Callable[[Job], bool], reason: str) -> int:
    # SKIP LOCKED, as revocation does: a job a dispatcher holds right now is left to it,
    # and the dispatcher then finds the person or dataset out of service.
    stopped = 0
    for job in ctx.session.scalars(select(Job).where(Job.state.in_(OPEN))
                                   .with_for_update(skip_locked=True, key_share=True)):
        if where(job):
            lifecycle.end_job(ctx, actor, job, JobState.CANCELLED, reason)
            stopped += 1
    return stopped


def deactivate_person(ctx: Ctx, actor: Party, person: Person) -> int:
    """Lock the person out and stop the jobs they submitted; how many were stopped."""
    people.deactivate_person(ctx, actor, person)
    return _cancel_open(ctx, actor.id, lambda j: j.submitted_by == person.id,
                        f"person {person.id} deactivated")


def _dataset(ctx: Ctx, party: Party, dataset_id: str) -> Dataset:
    ds = ctx.session.get(Dataset, dataset_id, with_for_update=ROW_LOCK, populate_existing=True)
    if ds is None or (party.role != "admin" and ds.provider_id != party.id):
        raise NotFound("no such dataset")
    return ds


def suspend_dataset(ctx: Ctx, party: Party, dataset_id: str, body: object) -> Dataset:
    """Take a dataset out of service at once: its open jobs are cancelled, and no permit
    covers it until it is reinstated."""
    reason = v.parse(body, v.REASON_SPEC)["reason"]
    ds = _dataset(ctx, party, dataset_id)
    if ds.status != DatasetStatus.ACTIVE:
        raise Conflict(f"dataset is {ds.status}; only an active dataset is suspended")
    ds.status = DatasetStatus.SUSPENDED
    ctx.record("dataset.suspended", party.id, {"dataset_id": ds.id, "reason": reason})
    _cancel_open(ctx, party.id, lambda j: ds.id in j.dataset_ids,
                 f"dataset {ds.id} suspended")
    return ds


def reinstate_dataset(ctx: Ctx, party: Party, dataset_id: str) -> Dataset:
    ds = _dataset(ctx, party, dataset_id)
    if ds.status != DatasetStatus.SUSPENDED:
        raise Conflict(f"dataset is {ds.status}; only a suspended dataset is reinstated")
    ds.status = DatasetStatus.ACTIVE
    ctx.record("dataset.reinstated", party.id, {"dataset_id": ds.id})
    return ds
