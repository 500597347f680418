"""The usage rollup: jobs per provider, requester and day, kept in the transaction that
adds each job, and a version per provider for what the dashboard read of it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Integer, String, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from authz.models_base import AuthzBase
from authz.models_jobs import Job


class UsageDay(AuthzBase):
    """Jobs per provider, requester and day (UTC): the usage dashboard's charts read these
    few rows instead of counting every job. Kept by :func:`_count_in_usage` in the
    transaction that inserts the job, so it never disagrees with ``jobs``."""

    __tablename__ = "usage_days"

    # No foreign keys: a count derived from the jobs (whose own keys hold), which
    # authz.usage.rebuild_rollup can count again from them at any time.
    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    requester_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer)


class UsageVersion(AuthzBase):
    """How many times a provider's rollup (``usage_days``) changed: what the dashboard
    read from it is kept per (provider, version) and read again only after a change."""

    __tablename__ = "usage_versions"

    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


def bump_usage_versions(connection: Connection, provider_ids: Iterable[str]) -> None:
    """One more version of each provider's rollup (in its transaction; key order)."""
    ins = (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(
        UsageVersion)
    for provider_id in sorted(set(provider_ids)):
        connection.execute(ins.values(provider_id=provider_id, version=1).on_conflict_do_update(
            index_elements=["provider_id"], set_={"version": UsageVersion.version + 1}))


def utc_day(ts: datetime) -> str:
    return ts.astimezone(UTC).date().isoformat()


@event.listens_for(Session, "after_flush")
def _count_in_usage(session: Session, _flush: Any) -> None:
    # Every way a job is made (a script or statistics job, a joint or PSI part) adds a Job
    # through the ORM; counting the flush's new jobs here keeps the rollup in the same
    # transaction without each service having to remember it. The rows are upserted in
    # key order, so two transactions adding jobs under the same keys (a requester's two
    # joint jobs naming the providers in different orders) lock them in the same order
    # and never deadlock.
    added = Counter((job.provider_id, utc_day(job.submitted_at), job.requester_id)
                    for job in session.new if isinstance(job, Job))
    if not added:
        return
    connection = session.connection()
    ins = (pg_insert if connection.dialect.name == "postgresql" else sqlite_insert)(UsageDay)
    for (provider_id, day, requester_id), n in sorted(added.items()):
        connection.execute(ins.values(
            provider_id=provider_id, day=day, requester_id=requester_id, jobs=n,
        ).on_conflict_do_update(index_elements=["provider_id", "day", "requester_id"],
                                set_={"jobs": UsageDay.jobs + n}))
    # After the counts, in key order as well: the same lock order in every transaction.
    bump_usage_versions(connection, (provider_id for provider_id, _, _ in added))
