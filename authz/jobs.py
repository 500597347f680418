"""Jobs: submission against a permit, cancellation, and what each party may see.

The states and their moves are in :mod:`authz.states`; a job ends through
:func:`authz.lifecycle.end_job`. The permit is checked at submission and again at dispatch.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session, defer, joinedload, object_session

from authz import catalog, lifecycle, output_names, people, permits, review
from authz import validate as v
from authz.context import ROW_LOCK, Ctx, PartyRef
from authz.job_fields import JobFields
from authz.models import (
    Dataset,
    Job,
    JobOutput,
    Party,
    Permit,
    ScriptApproval,
    new_id,
)
from authz.specs import JOB_SUBMIT_SPEC as SUBMIT_SPEC
from authz.specs import MAX_SCRIPT_BYTES as MAX_SCRIPT_BYTES
from authz.states import TERMINAL, JobState, OutputDecision
from compute.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from compute.statspec import (
    PERSON,
    DifferentialPrivacy,
    parse_statistics_spec,
    privacy_unit,
)


def submit(ctx: Ctx, requester: Party, body: object) -> Job:
    data = v.parse(body, SUBMIT_SPEC)
    if (data["script"] is None) == (data["statistics"] is None):
        raise InvalidInput("script", "give exactly one of script and statistics")
    permit, request = permits.requester_permit(ctx, requester, data["permit_id"])
    people.require_named(ctx, permit.id, permit.people)
    dp_spec: DifferentialPrivacy | None = None
    if data["statistics"] is not None:
        if len(data["dataset_ids"]) != 1:
            raise InvalidInput("dataset_ids", "a statistics job reads exactly one dataset")
        spec = parse_statistics_spec(data["statistics"], permits.permitted_schema(
            ctx, permit, [d for d in data["dataset_ids"] if d in permit.columns]))
        kind, script, dp_spec = "statistics", spec.canonical(), spec.dp
    else:
        kind, script = "script", data["script"].encode()
        if len(script) > MAX_SCRIPT_BYTES:
            raise InvalidInput("script", f"must be at most {MAX_SCRIPT_BYTES} bytes")
        check_syntax(data["script"])
    covered = permits.covered_datasets(ctx, permit, data["dataset_ids"])
    dp = None if dp_spec is None else _dp_record(dp_spec, covered[0])
    if len({ds.code for ds in covered}) != len(covered):
        # Each input file is named after its code (/in/<code>.csv).
        raise InvalidInput("dataset_ids", "names two versions of one dataset code: keep one")
    providers = {ds.provider_id for ds in covered}
    if len(providers) != 1:
        # Raw data never leaves its domain, so one container only ever sees one provider's
        # data; statistics across providers go through a joint (homomorphic) job.
        raise InvalidInput("dataset_ids", "must all belong to one provider's domain")
    if request.use_kind == "joint_statistics":
        # Approved for encrypted, multi-provider, possibly noised aggregates only: a plain
        # job would return one provider's exact figures.
        raise PolicyViolation("this permit is for joint statistics only (POST /joint-jobs)")
    permits.check_permit(ctx, permit, data["dataset_ids"], new_run=True)
    if kind == "statistics":
        permit = _charge_epsilon(ctx, permit, dp)
    elif permit.epsilon_budget is not None:
        # The providers chose noise as the protection: a script's tables would come out
        # exact, uncharged (R7-4).
        raise PolicyViolation("the providers granted a differential-privacy budget: this "
                              "permit takes noised statistics jobs only (a statistics spec "
                              "with dp), not scripts")
    queued = _count_open(ctx, permit.id)
    if permit.runs_used + queued >= permit.max_runs:
        raise PolicyViolation(
            f"permit has no runs left ({permit.runs_used} used, {queued} queued, "
            f"{permit.max_runs} allowed): wait for the queued jobs, or apply again with a "
            "new access request (POST /requests)")
    provider_id, sha256 = providers.pop(), hashlib.sha256(script).hexdigest()
    # A new script under a permit that requires approval waits for every provider's
    # approver (authz.script_approval); the statistics route runs only the platform's code.
    waits = (permit.approve_scripts and kind == "script" and not approved_script(
        ctx, permit.id, sha256, {provider_id}))
    job = Job(id=new_id("job"), permit_id=permit.id, requester_id=requester.id,
              provider_id=provider_id, dataset_ids=data["dataset_ids"], script=script,
              script_sha256=sha256,
              state=JobState.AWAITING_APPROVAL if waits else JobState.QUEUED,
              kind=kind, submitted_by=ctx.signed_in.person_id if ctx.signed_in else None)
    ctx.session.add(job)
    ctx.session.flush()
    ctx.record("job.submitted", requester.id, {
        "job_id": job.id, "permit_id": permit.id, "dataset_ids": job.dataset_ids,
        "provider_id": job.provider_id, "script_sha256": job.script_sha256,
        "script_bytes": len(script), "kind": kind, "state": job.state,
        # A noised job's privacy loss is on the record with the job, charged now.
        **({"dp": {**dp, "epsilon_spent_after": permit.epsilon_spent,
                   "epsilon_budget": permit.epsilon_budget}} if dp else {}),
    })
    return job


def approved_script(ctx: Ctx, permit_id: str, sha256: str, providers: set[str]) -> bool:
    """Whether every one of ``providers`` approved this exact script under the permit."""
    approved = set(ctx.session.scalars(select(ScriptApproval.provider_id).where(
        ScriptApproval.permit_id == permit_id, ScriptApproval.script_sha256 == sha256)))
    return providers <= approved
def _charge_epsilon(ctx: Ctx, permit: Permit, dp: dict[str, Any] | None) -> Permit:
    """A statistics job's epsilon, charged at submission under the permit's row lock (two
    jobs submitted at once cannot both count on the same budget). Charged, not refunded:
    a job that fails after its noise was drawn has still spent it."""
    if permit.epsilon_budget is not None and dp is None:
        raise PolicyViolation("the providers granted a differential-privacy budget: the "
                              "spec must ask for dp")
    if dp is None:
        return permit
    permit = ctx.session.get(Permit, permit.id, with_for_update=ROW_LOCK,
                             populate_existing=True) or permit
    left = (permit.epsilon_budget or 0.0) - permit.epsilon_spent
    if permit.epsilon_budget is None or dp["epsilon"] > left + 1e-12:
        raise PolicyViolation(f"the permit's differential-privacy budget has {left:g} "
                              f"epsilon left; the spec asks for {dp['epsilon']:g}")
    permit.epsilon_spent += dp["epsilon"]
    return permit


def check_syntax(script: str) -> None:
    """Refuse a script that does not compile, with its line, before it costs a run.

    Only compiled, never run: the controller executes no submitted code. The message is
    the compiler's, about the requester's own code (no provider data is involved).
    """
    try:
        compile(script, "script.py", "exec", dont_inherit=True)
    except SyntaxError as e:
        raise InvalidInput("script", f"syntax error at line {e.lineno}: {e.msg}") from None
    except (RecursionError, MemoryError):
        raise InvalidInput("script", "too deeply nested to compile") from None
    except ValueError:
        raise InvalidInput("script", "cannot be compiled") from None


def _count_open(ctx: Ctx, permit_id: str) -> int:
    """Queued jobs not yet counted in runs_used (a requeued job was counted at dispatch),
    and jobs waiting for their script's approval."""
    rows = ctx.session.scalars(select(Job.id).where(
        Job.permit_id == permit_id,
        Job.state.in_((JobState.QUEUED, JobState.AWAITING_APPROVAL)),
        Job.dispatched_at.is_(None)))
    return len(list(rows))


def cancel(ctx: Ctx, requester: Party, job_id: str) -> Job:
    job = get_visible(ctx, requester, job_id)
    if job.requester_id != requester.id:
        raise NotFound("no such job")
    if job.state not in (JobState.AWAITING_APPROVAL, JobState.QUEUED,
                         JobState.AWAITING_REVIEW):
        raise Conflict(f"job is {job.state}; only queued jobs, or jobs awaiting review, "
                       "can be cancelled")
    lifecycle.end_job(ctx, requester.id, job, JobState.CANCELLED, "cancelled by requester")
    return job


def stop(ctx: Ctx, party: Party, job_id: str, body: object) -> Job:
    """Stop a job at once: its provider (for its data) or the operator (incident control).

    A queued job is cancelled; a running one is cancelled too, and its agent, seeing the
    lease end, kills the container and discards its outputs. Nothing of it is released.
    """
    data = v.parse(body, v.REASON_SPEC)
    job = ctx.session.get(Job, job_id, with_for_update=ROW_LOCK, populate_existing=True)
    if job is None or not (party.role == "admin" or job.provider_id == party.id):
        raise NotFound("no such job")
    if job.state in TERMINAL:
        raise Conflict(f"job already {job.state}")
    lifecycle.end_job(ctx, party.id, job, JobState.CANCELLED,
                      f"stopped by {party.role} {party.id}: {data['reason']}")
    return job


def can_see(party: PartyRef, job: Job) -> bool:
    if party.role == "requester":
        return job.requester_id == party.id
    if party.role == "provider":
        # 可溯源: the provider knows who used its data, when and how — but not the results.
        return job.provider_id == party.id
    return False


def get_visible(ctx: Ctx, party: PartyRef, job_id: str) -> Job:
    job = ctx.session.get(Job, job_id)
    if job is None or not can_see(party, job):
        raise NotFound("no such job")
    return job


@functools.cache
def _visible_jobs(role: str) -> Select[tuple[Job]]:
    # Built once per kind: every job list runs one, and SQLAlchemy keeps a statement's
    # cache key with the statement object.
    column = Job.requester_id if role == "requester" else Job.provider_id
    # Outputs and their reviews come in the same statement (LEFT OUTER JOINs): a list is
    # one round trip to the database, not three.
    return select(Job).where(column == bindparam("party_id")).order_by(
        Job.submitted_at, Job.id).options(joinedload(Job.outputs).options(
            defer(JobOutput.content), joinedload(JobOutput.reviews)))


def list_visible(ctx: Ctx, party: PartyRef) -> list[Job]:
    """The jobs ``party`` may see, their outputs and reviews loaded in the same statement
    (for :func:`to_json`), not two more per job. An output's content is left
    in the database (it is opened only when it is downloaded)."""
    if party.role not in ("requester", "provider"):
        return []
    return list(ctx.session.scalars(_visible_jobs(party.role),
                                    {"party_id": party.id}).unique())


def to_json(job: JobFields, party: PartyRef, session: Session | None = None
            ) -> dict[str, Any]:
    """A job as ``party`` may see it. ``session``: where a statistics job's dataset is
    read (default: the job row's own session)."""
    out: dict[str, Any] = {
        "id": job.id, "permit_id": job.permit_id, "requester_id": job.requester_id,
        "provider_id": job.provider_id, "dataset_ids": job.dataset_ids,
        "script_sha256": job.script_sha256, "state": job.state, "reason": job.reason,
        "submitted_at": job.submitted_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        # The exact input size is the provider's to see: with it a requester could recover a
        # suppressed cell from a table's total (subtraction). Rounded for everyone else.
        "rows_read": job.rows_read if party.id == job.provider_id or job.rows_read is None
        else lifecycle.rounded(job.rows_read, lifecycle.ROW_BASE),
        "bytes_read": job.bytes_read if party.id == job.provider_id else None,
        "input_sha256": job.input_sha256, "runner_image": job.runner_image,
        "ledger_index": job.ledger_index,
        # An output not released: by position, no digest or size (authz/output_names.py).
        "outputs": [{**output_names.shown(o), "reasons": o.reasons,
                     "justification": o.justification,
                     # The checkers' decisions and comments, and how long review took.
                     "reviews": review.review_json(o),
                     "review_s": review.review_seconds(job, o)} for o in job.outputs],
    }
    if job.kind == "statistics":
        # Noised results say so wherever the job is shown (None: checked, not noised).
        out["dp"] = statistics_dp(job, session)
    if party.id == job.requester_id:
        out["log"] = job.log
    if party.id == job.provider_id:
        # The exit status is a number the script chooses: the provider whose data it ran
        # on may see it; the requester sees the outcome (state and reason) only.
        out["exit_code"] = job.exit_code
    return out


def _dp_record(dp: DifferentialPrivacy, dataset: Dataset | None) -> dict[str, Any]:
    """A noised job's privacy terms as the job and the ledger show them: epsilon, delta,
    mechanism and the privacy unit (a person where the dataset declares identifier
    fields, as the agent then bounds each person's records; else a record)."""
    persons = dataset is not None and bool(catalog.identifier_fields(dataset))
    return {"epsilon": dp.epsilon, "delta": 0.0,
            "mechanism": "discrete_laplace (counts), laplace (sums)",
            **privacy_unit(dp, persons)}


def statistics_dp(job: JobFields, session: Session | None = None) -> dict[str, Any] | None:
    """The ``dp`` part of a statistics job's stored spec (its epsilon and bounds), with
    its privacy unit."""
    try:
        spec = json.loads(job.script)
    except ValueError:
        return None
    raw = spec.get("dp") if isinstance(spec, dict) else None
    if not raw:
        return None
    try:
        dp = DifferentialPrivacy.model_validate(raw)
    except ValueError:
        return None  # stored specs were validated at submission; nothing to describe
    # The job's own session (a list of jobs reads each dataset once: identity map).
    session = session or object_session(job)
    dataset = session.get(Dataset, job.dataset_ids[0]) if session and job.dataset_ids else None
    record = _dp_record(dp, dataset)
    if record["unit"] != PERSON:  # the limit is the spec's, unused without persons
        raw = {k: x for k, x in raw.items() if k != "max_records_per_person"}
    return {**raw, **record}


def released_output(ctx: Ctx, requester: Party, job_id: str, name: str) -> JobOutput:
    """The requester's released output ``name`` of its job, with its content."""
    job = get_visible(ctx, requester, job_id)
    if job.requester_id != requester.id or job.kind == "joint":
        # A joint part's output is one provider's encrypted figures: the requester holds
        # the key, so only the combined aggregate is ever served to it.
        raise NotFound("no such output")
    for o in job.outputs:
        if o.name == name and o.decision == OutputDecision.RELEASED and o.content is not None:
            return o
    raise NotFound("no such output")
