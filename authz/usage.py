"""The provider's usage report: who used its data, when, for what, and how much (可溯源原则).

Read with a few indexed queries whatever the number of jobs: the rows are one keyset page
(``ix_jobs_provider_submitted``: provider, submitted_at, id), read as plain columns (a job
row's sealed script and log are never loaded, so nothing is decrypted), and the charts'
series are read from a rollup of jobs per requester and day (``usage_days``, kept in the
job's own insert), not by counting every job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Select, bindparam, delete, func, insert, select, tuple_
from sqlalchemy.orm import Session

from authz.context import Ctx
from authz.models import (
    AccessRequest,
    Job,
    Party,
    Permit,
    UsageDay,
    UsageVersion,
    bump_usage_versions,
    utc_day,
)
from compute.errors import InvalidInput

#: Bars of each chart: the latest days that had a job, the requesters with the most jobs.
MAX_BARS = 30
#: The largest page the JSON API serves (``limit``); without ``limit`` it serves every job.
MAX_LIMIT = 1000


@dataclass(frozen=True)
class UsagePage:
    rows: list[dict[str, Any]]  # oldest first, like the full report
    next_before: str | None  # the oldest row's job id when older jobs exist, else None


@dataclass(frozen=True)
class Series:
    per_day: list[tuple[str, int]]  # (YYYY-MM-DD in UTC, jobs), oldest day first
    per_requester: list[tuple[str, str, int]]  # (requester id, name, jobs), most jobs first
    total: int  # every job on the provider's data


def _rows_query(provider_id: str) -> Select[Any]:
    return (select(Job.id, Job.requester_id, Party.name, AccessRequest.purpose,
                   AccessRequest.business_system, Job.dataset_ids, Job.state,
                   Job.submitted_at, Job.started_at, Job.rows_read, Job.bytes_read,
                   Job.script_sha256, Job.ledger_index)
            .join(Permit, Permit.id == Job.permit_id)
            .join(AccessRequest, AccessRequest.id == Permit.request_id)
            .outerjoin(Party, Party.id == Job.requester_id)
            .where(Job.provider_id == provider_id))


def _row_json(r: Any) -> dict[str, Any]:
    return {
        "job_id": r.id, "requester_id": r.requester_id, "requester_name": r.name,
        "purpose": r.purpose, "business_system": r.business_system,
        "dataset_ids": r.dataset_ids, "state": r.state,
        "submitted_at": r.submitted_at.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "rows_read": r.rows_read, "bytes_read": r.bytes_read,
        "script_sha256": r.script_sha256, "ledger_index": r.ledger_index,
    }


def rows(ctx: Ctx, provider: Party, limit: int | None = None,
         before: str | None = None) -> UsagePage:
    """The provider's jobs, oldest first: every one (``limit`` None), or the latest
    ``limit`` submitted before the job ``before`` (a job of this report, else 400)."""
    if provider.role != "provider":
        return UsagePage([], None)
    q = _rows_query(provider.id)
    if before is not None:
        cursor = ctx.session.execute(select(Job.submitted_at, Job.id).where(
            Job.id == before, Job.provider_id == provider.id)).one_or_none()
        if cursor is None:
            # The same answer whether the job does not exist or is another provider's.
            raise InvalidInput("before", "must be the id of a job in this usage report")
        # Keyset paging: (submitted_at, id) orders the report, ties included.
        q = q.where(tuple_(Job.submitted_at, Job.id) < (cursor.submitted_at, cursor.id))
    if limit is None:
        found = ctx.session.execute(q.order_by(Job.submitted_at, Job.id)).all()
        return UsagePage([_row_json(r) for r in found], None)
    newest = ctx.session.execute(
        q.order_by(Job.submitted_at.desc(), Job.id.desc()).limit(limit + 1)).all()
    more = len(newest) > limit
    page = [_row_json(r) for r in reversed(newest[:limit])]
    return UsagePage(page, page[0]["job_id"] if more and page else None)


def parse_limit(raw: str | None) -> int | None:
    """A page size from a query string: None when absent, else 1..MAX_LIMIT (else 400)."""
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not (
            1 <= int(raw) <= MAX_LIMIT):
        raise InvalidInput("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


_DAYS = UsageDay.__table__
_PARTIES = Party.__table__
_PROVIDER: BindParameter[str] = bindparam("provider_id")
_PER_DAY = (select(_DAYS.c.day, func.sum(_DAYS.c.jobs)).where(_DAYS.c.provider_id == _PROVIDER)
            .group_by(_DAYS.c.day).order_by(_DAYS.c.day.desc()).limit(MAX_BARS))
_PER_REQUESTER = (select(_DAYS.c.requester_id, func.sum(_DAYS.c.jobs))
                  .where(_DAYS.c.provider_id == _PROVIDER).group_by(_DAYS.c.requester_id))
_VERSIONS = UsageVersion.__table__
_VERSION = select(_VERSIONS.c.version).where(_VERSIONS.c.provider_id == _PROVIDER)
_NAMES = select(_PARTIES.c.id, _PARTIES.c.name).where(
    _PARTIES.c.id.in_(bindparam("ids", expanding=True)))


def series(ctx: Ctx, provider: Party) -> Series:
    """The dashboard's charts: jobs per day (the latest MAX_BARS days that had any) and
    per requester (the MAX_BARS with the most), and the number of jobs, read from the
    rollup of jobs per requester and day (``usage_days``), not from the jobs; as plain
    columns through the session's connection (no ORM row is made)."""
    if provider.role != "provider":
        return Series([], [], 0)
    conn = ctx.session.connection()
    mine = {"provider_id": provider.id}
    latest = conn.execute(_PER_DAY, mine).all()
    per_day = [(str(d), int(n)) for d, n in reversed(latest)]
    by_requester = conn.execute(_PER_REQUESTER, mine).all()
    total = sum(int(n) for _, n in by_requester)
    top = sorted(((str(r), int(n)) for r, n in by_requester), key=lambda x: (-x[1], x[0]))
    top = top[:MAX_BARS]
    names = ({str(i): str(n) for i, n in conn.execute(_NAMES, {"ids": [r for r, _ in top]})}
             if top else {})
    return Series(per_day, [(r, names.get(r, r), n) for r, n in top], total)


def rollup_version(ctx: Ctx, provider_id: str) -> int:
    """How many times the provider's rollup changed (0: never): what was read from it
    for one version holds until the next (authz.models.UsageVersion)."""
    found = ctx.session.connection().execute(_VERSION, {"provider_id": provider_id}).scalar()
    return int(found or 0)


def rebuild_rollup(session: Session) -> None:
    """Count ``usage_days`` again from the jobs: for jobs written without the ORM (bulk
    loads). The ORM keeps the rollup itself (authz.models_usage._count_in_usage)."""
    before = set(session.scalars(select(UsageDay.provider_id).distinct()))
    session.execute(delete(UsageDay))
    counts: dict[tuple[str, str, str], int] = {}
    for provider_id, requester_id, at in session.execute(
            select(Job.provider_id, Job.requester_id, Job.submitted_at)):
        key = (provider_id, utc_day(at), requester_id)
        counts[key] = counts.get(key, 0) + 1
    if counts:
        session.execute(insert(UsageDay), [
            {"provider_id": p, "day": d, "requester_id": r, "jobs": n}
            for (p, d, r), n in counts.items()])
    # Every provider whose counts may have changed: what was kept for them is stale.
    bump_usage_versions(session.connection(), before | {p for p, _, _ in counts})
