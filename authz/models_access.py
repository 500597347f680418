"""What may be used: the catalog's datasets, access requests and their items, permits,
and the scripts a permit's providers approved."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authz.models_base import AuthzBase, StateText, UTCDateTime, utcnow
from authz.states import DatasetStatus, Decision, PermitStatus, ScriptRelease


class Dataset(AuthzBase):
    __tablename__ = "datasets"
    # A code is registered again (a rejected file fixed, a new edition) as its next version.
    __table_args__ = (UniqueConstraint("code", "version", name="uq_datasets_code_version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(10))  # csv | parquet
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    openness: Mapped[str] = mapped_column(String(20))  # unconditional | conditional | not_open
    sharing: Mapped[str] = mapped_column(String(20))  # unconditional | conditional | none
    update_cycle: Mapped[str] = mapped_column(String(20))
    publish_date: Mapped[str] = mapped_column(String(10))
    related_codes: Mapped[list[Any]] = mapped_column(default=list)
    fields: Mapped[list[Any]] = mapped_column()  # [{name, type, sensitivity, description}]
    location: Mapped[str] = mapped_column(Text)  # resolved only by the provider's agent
    status: Mapped[DatasetStatus] = mapped_column(StateText(DatasetStatus),
                                                  default=DatasetStatus.CHECKING, index=True)
    status_reason: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    rows: Mapped[int | None] = mapped_column(Integer, default=None)
    registered_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    check_leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class AccessRequest(AuthzBase):
    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    purpose: Mapped[str] = mapped_column(Text)
    use_kind: Mapped[str] = mapped_column(String(30))
    business_system: Mapped[str] = mapped_column(String(200))
    # The requester's people who may use the permit (the person who asked, and any named).
    people: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[Decision] = mapped_column(StateText(Decision), default=Decision.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    items: Mapped[list[RequestItem]] = relationship(
        cascade="all, delete-orphan", order_by="RequestItem.position"
    )


class RequestItem(AuthzBase):
    """One dataset of a request, decided by that dataset's provider alone."""

    __tablename__ = "request_items"
    __table_args__ = (UniqueConstraint("request_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"))
    position: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    columns: Mapped[list[Any]] = mapped_column()
    decision: Mapped[Decision] = mapped_column(StateText(Decision), default=Decision.PENDING)
    decided_by: Mapped[str | None] = mapped_column(String(40), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    conditions: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class Permit(AuthzBase):
    """Issued once every provider approved; conditions are the strictest of all approvals."""

    __tablename__ = "permits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("access_requests.id"), unique=True)
    requester_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    # {dataset_id: [columns]} — requested ∩ allowed, per dataset.
    columns: Mapped[dict[str, Any]] = mapped_column()
    # The people who may use it: none named, only the requester's service account (a
    # permit asked for by a person always names them).
    people: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    max_runs: Mapped[int] = mapped_column(Integer)
    runs_used: Mapped[int] = mapped_column(Integer, default=0)
    min_cell_count: Mapped[int] = mapped_column(Integer)
    classification: Mapped[str] = mapped_column(String(20))
    # Differential privacy for joint statistics: the smallest budget any provider granted.
    epsilon_budget: Mapped[float | None] = mapped_column(Float, default=None)
    epsilon_spent: Mapped[float] = mapped_column(Float, default=0.0)
    # Statistical disclosure settings beyond the minimum cell count (compute.sdc.SDCPolicy
    # fields: dominance, p%, zeros, class disclosure, model dof), strictest of all approvals;
    # None: the defaults.
    disclosure: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Automatic only if every provider accepted automatic release of script outputs.
    script_release: Mapped[ScriptRelease] = mapped_column(
        StateText(ScriptRelease), default=ScriptRelease.REVIEW, server_default="review")
    # How many different output checkers of each provider must approve a held output
    # (2: the two-person rule), the largest any provider asked for.
    review_quorum: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Each new script must be approved by an approver of every provider before it runs
    # (a script hash approved once runs again without asking).
    approve_scripts: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default="0")
    # Runs given back because the script failed on mock data (authz/runs.py): capped, so
    # failing scripts cannot use the provider's agent without end at no cost.
    mock_returns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[PermitStatus] = mapped_column(StateText(PermitStatus),
                                                 default=PermitStatus.ACTIVE)
    revoked_by: Mapped[str | None] = mapped_column(String(40), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScriptApproval(AuthzBase):
    """A provider's approval of one exact script (by hash) under one permit."""

    __tablename__ = "script_approvals"
    __table_args__ = (UniqueConstraint("permit_id", "script_sha256", "provider_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    permit_id: Mapped[str] = mapped_column(ForeignKey("permits.id"), index=True)
    script_sha256: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    approved_by: Mapped[str] = mapped_column(String(40))  # a person, or the service account
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
