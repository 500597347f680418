"""A party's job list read as plain rows: one statement, no ORM objects.

``GET /jobs`` is read over and over (a requester's client, a dashboard). Loading the jobs,
their outputs and the outputs' reviews as ORM objects (identity map, instance state,
events, per-row loader callables) cost several times the statement itself. Here the same
rows come from one statement with the columns :func:`authz.jobs.to_json` shows, into
plain copies that it reads like the rows (:mod:`authz.job_fields`), so the answer is the
same function's. Sealed values are opened by their column type as for the ORM, and their
place is checked as the ORM's load check does (:func:`authz.sealed.check_place`): a
value copied from another row fails closed. Visibility is the same as
:func:`authz.jobs.list_visible`'s: the requester's jobs, or the provider's.

``GET /jobs/<id>`` reads one job the same way (:func:`job_json`): a requester's client
polls it until the job ends, several times a second across clients, so it costs about as
much as a list did before and more than any other call the requesters make.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, select

from authz.context import Ctx, PartyRef
from authz.jobs import to_json
from authz.models import Job, JobOutput, OutputReview
from authz.sealed import check_place
from authz.states import JobState, OutputDecision, ReviewDecision
from compute.errors import NotFound

_jobs = Job.__table__
_outputs = JobOutput.__table__
_reviews = OutputReview.__table__
_JOB = ("id", "permit_id", "requester_id", "provider_id", "dataset_ids", "kind", "script",
        "script_sha256", "state", "reason", "submitted_at", "started_at", "finished_at",
        "exit_code", "rows_read", "bytes_read", "input_sha256", "runner_image", "log",
        "ledger_index")
_OUTPUT = ("id", "name", "sha256", "size", "decision", "reasons", "justification",
           "decided_at")
_REVIEW = ("id", "reviewer_id", "provider_id", "decision", "comment", "decided_at")


@dataclass(slots=True)
class ListedReview:
    reviewer_id: str
    provider_id: str
    decision: ReviewDecision
    comment: str
    decided_at: datetime


@dataclass(slots=True)
class ListedOutput:
    name: str
    sha256: str
    size: int
    decision: OutputDecision
    reasons: list[Any]
    justification: str | None
    decided_at: datetime | None
    reviews: list[ListedReview] = field(default_factory=list)


@dataclass(slots=True)
class ListedJob:
    id: str
    permit_id: str
    requester_id: str
    provider_id: str
    dataset_ids: list[Any]
    kind: str
    script: bytes
    script_sha256: str
    state: JobState
    reason: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    rows_read: int | None
    bytes_read: int | None
    input_sha256: str | None
    runner_image: str | None
    log: str | None
    ledger_index: int | None
    outputs: list[ListedOutput] = field(default_factory=list)


@functools.cache
def _listed(role: str, one: bool = False) -> Select[Any]:
    # Built once per kind of party (SQLAlchemy keeps the compiled form by cache key).
    # Ordered as the ORM list: jobs by submission, outputs by name, reviews by id.
    # ``one``: the job named ``job_id`` only, if the party may see it (the same rule).
    column = _jobs.c.requester_id if role == "requester" else _jobs.c.provider_id
    q = (select(*(_jobs.c[n] for n in _JOB),
                *(_outputs.c[n].label(f"o_{n}") for n in _OUTPUT),
                *(_reviews.c[n].label(f"r_{n}") for n in _REVIEW))
         .select_from(_jobs.outerjoin(_outputs, _outputs.c.job_id == _jobs.c.id)
                      .outerjoin(_reviews, _reviews.c.output_id == _outputs.c.id))
         .where(column == bindparam("party_id")))
    if one:
        q = q.where(_jobs.c.id == bindparam("job_id"))
    return q.order_by(_jobs.c.submitted_at, _jobs.c.id, _outputs.c.name, _reviews.c.id)


def listed_jobs(ctx: Ctx, party: PartyRef) -> list[ListedJob]:
    """The jobs ``party`` may see, with their outputs (no content) and reviews."""
    if party.role not in ("requester", "provider"):
        return []
    return _collect(ctx.session.connection().execute(
        _listed(party.role), {"party_id": party.id}).all())


def listed_job(ctx: Ctx, party: PartyRef, job_id: str) -> ListedJob | None:
    """The job ``job_id`` as :func:`listed_jobs` has it, or None when ``party`` may not
    see it (:func:`authz.jobs.can_see`) or there is none."""
    if party.role not in ("requester", "provider"):
        return None
    found = _collect(ctx.session.connection().execute(
        _listed(party.role, one=True), {"party_id": party.id, "job_id": job_id}).all())
    return found[0] if found else None


def _collect(rows: Sequence[Row[Any]]) -> list[ListedJob]:
    jobs: list[ListedJob] = []
    outputs: dict[int, ListedOutput] = {}
    job: ListedJob | None = None
    for row in rows:  # fetched at once: psycopg fetches row by row when iterated
        if job is None or job.id != row.id:
            job = ListedJob(*(getattr(row, n) for n in _JOB))
            check_place(job.script, "jobs", "script", job.id)
            check_place(job.log, "jobs", "log", job.id)
            jobs.append(job)
        if row.o_id is None:
            continue
        out = outputs.get(row.o_id)
        if out is None:
            out = outputs[row.o_id] = ListedOutput(*(getattr(row, f"o_{n}")
                                                     for n in _OUTPUT[1:]))
            check_place(out.justification, "job_outputs", "justification", job.id, out.name)
            job.outputs.append(out)
        if row.r_id is not None:
            r = ListedReview(*(getattr(row, f"r_{n}") for n in _REVIEW[1:]))
            check_place(r.comment, "output_reviews", "comment", str(row.o_id), r.reviewer_id)
            out.reviews.append(r)
    return jobs


def list_json(ctx: Ctx, party: PartyRef) -> list[dict[str, Any]]:
    """``GET /jobs``: each job as :func:`authz.jobs.to_json` shows it to ``party``."""
    return [to_json(j, party, ctx.session) for j in listed_jobs(ctx, party)]


def job_json(ctx: Ctx, party: PartyRef, job_id: str) -> dict[str, Any]:
    """``GET /jobs/<id>``: the job as :func:`authz.jobs.to_json` shows it to ``party``;
    NotFound, as :func:`authz.jobs.get_visible`, when there is none it may see."""
    job = listed_job(ctx, party, job_id)
    if job is None:
        raise NotFound("no such job")
    return to_json(job, party, ctx.session)
